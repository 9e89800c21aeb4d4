"""``PrepareConfig``: every setting of ``qwen-tts-ext prepare`` (YAML keys = CLI ``key=value`` overrides)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from qwen_tts_ext.errors import UserError

# Fields that do not change the prepared data (excluded from the dataset fingerprint).
NON_IDENTITY_FIELDS = ("output", "num_workers", "batch_seconds", "max_batch", "dry_run", "overwrite", "keep_work",
                       "device", "shard_size", "progress", "embed_threads", "merge")


@dataclass
class PrepareConfig:
    """Recordings + transcripts -> validated 24 kHz audio -> 12 Hz codes + speaker x-vectors."""

    # --- inputs / outputs
    manifest: str = ""  # JSONL/CSV file, or a local HF dataset (save_to_disk dir, audiofolder, parquet), or hub id
    model: str = ""  # Qwen3-TTS Base checkpoint dir (or hub id)
    output: str = ""  # output folder (created atomically)
    tokenizer: str = ""  # speech tokenizer dir; default <model>/speech_tokenizer
    speaker_encoder: str = ""  # Base checkpoint to borrow the speaker encoder from; default: model
    split: str = ""  # split of a HF dataset ("train" when present)

    # --- columns
    audio_column: str = "audio"
    text_column: str = "text"
    speaker_column: str = "speaker"
    language_column: str = "language"
    instruct_column: str = "instruct"
    ref_audio_column: str = "ref_audio"

    # --- defaults for rows without a value
    default_speaker: str = "speaker"
    default_language: str = "auto"

    # --- validation
    min_seconds: float = 0.5
    max_seconds: float = 30.0
    silence_db: float = -60.0  # loudest 50 ms window below this (dBFS) -> rejected as silent
    clip_level: float = 0.99  # |sample| at or above this counts as clipped
    clip_fraction: float = 0.001  # more clipped samples than this -> warning in stats.json
    trim: Literal["none", "vad", "energy"] = "none"  # edge-silence trimming
    trim_margin: float = 0.1  # seconds kept around detected speech
    # Inline synthesis tags in a transcript ("[Whispering] Don't wake him.", "[Angry]"): trained on as
    # written, the model learns to read them aloud. "reject" the row (reason markup_in_text), "strip" the
    # tags (a transcript left empty is empty_text), or "keep" the text verbatim. Changes the prepared
    # text, so it is part of the dataset fingerprint (not in NON_IDENTITY_FIELDS).
    text_tags: Literal["reject", "strip", "keep"] = "reject"

    # --- speaker embeddings
    ref_mode: Literal["ref", "all"] = "ref"  # "ref": each speaker's ref_audio clips (all its clips if it has none)

    # --- compute
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # tokenizer/speaker-encoder compute dtype
    batch_seconds: float = 240.0  # padded audio seconds per encoder batch
    max_batch: int = 64
    num_workers: int = 2  # decoding/resampling threads
    embed_threads: int = 1  # torch CPU threads for per-clip x-vectors (0 = torch default)
    shard_size: int = 128  # rows per resumable work shard
    shard: str = "0/1"  # "i/n": prepare the i-th (0-based) of n contiguous slices of the manifest

    # --- behaviour
    dry_run: bool = False  # validate and report; no encoding
    overwrite: bool = False  # replace a previous `prepare` output of other inputs or settings
    keep_work: bool = False  # keep the shard work folder after success
    progress: bool = True
    # Instead of preparing: join the outputs of `shard=i/n` runs (one folder each) into `output`.
    merge: list[str] = field(default_factory=list)

    def validate(self) -> None:
        """Check values that are wrong regardless of the files (called by ``load_config`` and ``prepare``)."""
        if self.min_seconds < 0 or self.max_seconds <= 0 or self.min_seconds >= self.max_seconds:
            raise UserError(f"need 0 <= min_seconds < max_seconds, got {self.min_seconds} and {self.max_seconds}")
        if self.batch_seconds <= 0 or self.max_batch < 1:
            raise UserError("batch_seconds must be > 0 and max_batch >= 1")
        if self.embed_threads < 0:
            raise UserError("embed_threads must be >= 0 (0 = torch's default thread count)")
        if self.num_workers < 0:
            raise UserError("num_workers must be >= 0 (0 = decode in the main thread)")
        if self.shard_size < 1:
            raise UserError("shard_size must be >= 1")
        if not 0 <= self.clip_fraction <= 1 or not 0 < self.clip_level <= 1:
            raise UserError("clip_fraction must be in [0, 1] and clip_level in (0, 1]")
        if self.trim_margin < 0:
            raise UserError("trim_margin must be >= 0")
        if self.text_tags not in ("reject", "strip", "keep"):
            raise UserError(f"text_tags={self.text_tags!r} must be reject, strip or keep")
        self.shard_index()

    def shard_index(self) -> tuple[int, int]:
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(self.shard))
        if not m:
            raise UserError(f"shard={self.shard!r} must look like i/n, e.g. 0/4 (0-based: 0/4 .. 3/4)")
        i, n = int(m.group(1)), int(m.group(2))
        if n < 1 or i >= n:
            raise UserError(f"shard={self.shard!r}: need 0 <= i < n (slices are 0-based: 0/{max(n, 1)} .. {max(n, 1) - 1}/{max(n, 1)})")
        return i, n

    def require_paths(self) -> None:
        for name, flag in (("manifest", "--manifest"), ("output", "--output")):
            if not getattr(self, name):
                raise UserError(f"{name} is required: pass {flag} (or {name}=... / a --config YAML)")
        if not self.dry_run and not self.model:
            raise UserError("model is required: pass --model BASE_CHECKPOINT (its speech_tokenizer/ encodes the audio)")
