"""``DesignConfig``: every setting of ``qwen-tts-ext design-voice`` (YAML keys = these names; flags map onto them).

Groups: ``render`` (what the VoiceDesign model speaks, how many takes), ``filter`` (which takes agree with
the voice: the identity centroid and the quality gates), ``report`` (the consistency report before and
after locking); ``prepare`` and ``sft`` are ``key=value`` overrides handed to the existing data-prep and
SFT commands (their own keys, checked by their own configs). No torch import here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qwen_tts_ext.errors import UserError

# The suite's shipped sentence lists: data/design_sentences/<language>.txt
SENTENCES_DIR = Path(__file__).resolve().parents[2] / "data" / "design_sentences"
DEFAULT_SFT_RECIPE = Path(__file__).resolve().parents[2] / "configs" / "sft_1.7b.yaml"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")


@dataclass
class RenderConfig:
    """What the designer speaks: sentences x seeds takes, each bounded by a frame cap from its text."""

    language: str = "english"  # the takes' language (also picks the shipped sentence list)
    sentences: str = ""  # a text file, one sentence a line ('#' comments); default: the shipped list of `language`
    num_sentences: int = 30  # first N sentences of the list (0: all)
    takes: int = 3  # seeds per sentence
    seed: int = 0  # take k of sentence i uses seed + 1000 * i + k
    extra_takes: str = ""  # JSONL (audio, text): recordings judged beside the rendered takes (same filter)
    temperature: float | None = None  # sampling (None: the designer's generation_config.json)
    top_k: int | None = None
    top_p: float | None = None
    cap_margin: float = 2.0  # frame cap = 12.5 x (margin x slow-speech seconds + slack), as synthesis
    cap_slack_seconds: float = 3.0
    max_segment_seconds: float = 30.0

    def validate(self) -> None:
        problems = []
        if self.num_sentences < 0:
            problems.append(f"render.num_sentences must be >= 0 (0: all), got {self.num_sentences}")
        if self.takes < 1:
            problems.append(f"render.takes must be >= 1, got {self.takes}")
        if self.cap_margin <= 0 or self.cap_slack_seconds < 0 or self.max_segment_seconds <= 0:
            problems.append("render.cap_margin and render.max_segment_seconds must be > 0, cap_slack_seconds >= 0")
        UserError.collect(problems)


@dataclass
class FilterConfig:
    """Which takes are kept: the identity filter first (resemblyzer d-vectors), then the quality gates."""

    # Quality judges besides the identity one (resemblyzer always runs): distillmos (MOS), asr (CER/WER),
    # timing (truncation, stop by EOS). A gate whose judge is not listed or not installed is skipped (noted).
    judges: list[str] = field(default_factory=lambda: ["distillmos", "asr", "timing"])
    max_distance: float = 0.12  # a take whose cosine to the identity centroid is below 1 - this is off_voice
    mad_k: float = 3.0  # also off_voice: similarity more than k robust SDs (1.4826 x MAD) below the median; 0: off
    centroid_rounds: int = 2  # the centroid is re-estimated from the takes kept by the previous round
    max_cer: float | None = 0.35  # unintelligible above this CER (None: off)
    min_mos: float | None = None  # low_mos below this DistillMOS (None: off)
    drop_truncated: bool = True  # silero-vad says the speech runs into the end of the clip
    require_eos: bool = True  # the take hit its frame cap instead of stopping by itself
    min_kept: int = 10  # fewer kept takes: stop before training (a voice from a handful of clips is not locked)

    def validate(self) -> None:
        problems = []
        self.judges = list(dict.fromkeys(n.strip().lower() for item in self.judges for n in str(item).split(",")
                                         if n.strip()))
        if "speaker" in self.judges or "speaker_ecapa" in self.judges:
            problems.append("filter.judges: the identity filter always uses the speaker judge (resemblyzer); list "
                            "only quality judges (distillmos, dnsmos, asr, timing)")
        if not 0 < self.max_distance <= 2:
            problems.append(f"filter.max_distance must be in (0, 2] (1 - cosine), got {self.max_distance}")
        if self.mad_k < 0:
            problems.append(f"filter.mad_k must be >= 0 (0: off), got {self.mad_k}")
        if self.centroid_rounds < 1:
            problems.append(f"filter.centroid_rounds must be >= 1, got {self.centroid_rounds}")
        if self.max_cer is not None and self.max_cer < 0:
            problems.append(f"filter.max_cer must be >= 0 or null (off), got {self.max_cer}")
        if self.min_kept < 1:
            problems.append(f"filter.min_kept must be >= 1, got {self.min_kept}")
        UserError.collect(problems)


@dataclass
class ReportConfig:
    """The consistency report: the same sentences and tags through (a) the designer, (b) the locked speaker."""

    sentences: int = 6  # report sentences, taken from the END of the sentence list (not used for training when
    #                     the list is long enough)
    emotion_tags: list[str] = field(default_factory=lambda: ["Whispering", "Angry", "Excited"])
    seed: int = 7

    def validate(self) -> None:
        problems = []
        self.emotion_tags = [str(t).strip().strip("[]").strip() for t in self.emotion_tags if str(t).strip()]
        if self.sentences < 0:
            problems.append(f"report.sentences must be >= 0 (0: no consistency report), got {self.sentences}")
        if self.sentences == 1:
            problems.append("report.sentences=1 has no spread across sentences: use 0 (no report) or >= 2")
        UserError.collect(problems)


@dataclass
class DesignConfig:
    """Describe a voice in words, render and judge a corpus with it, lock it into a speaker slot by SFT."""

    designer: str = ""  # a Qwen3-TTS VoiceDesign checkpoint (local folder or hub id)
    model: str = ""  # the checkpoint to fine-tune the voice into (Base or CustomVoice)
    speaker_encoder: str = ""  # a Base checkpoint for data prep's x-vectors when --model is CustomVoice
    description: str = ""  # the voice in words ("A deep, raspy voice of a tired cowboy.")
    name: str = ""  # the new speaker's name (lower-case; the slot next to any built-in speakers)
    output: str = ""  # the output folder (new or empty; --overwrite replaces this command's previous output)
    overwrite: bool = False
    device: str = "cpu"  # cpu, cuda, cuda:N, mps or auto: rendering, data prep and the report's synthesis
    dtype: str = "float32"  # auto (bfloat16 on CUDA, else float32) | float32 | bfloat16 | float16: rendering, report
    sft_recipe: str = str(DEFAULT_SFT_RECIPE)  # the SFT recipe YAML (configs/sft_*.yaml)
    # Settings handed to the SFT recipe and to data prep, in their own keys: sft.train.max_steps=600 on the
    # command line, `sft: {train: {max_steps: 600}}` in YAML (checked by their own configs before rendering).
    sft: dict[str, Any] = field(default_factory=dict)
    prepare: dict[str, Any] = field(default_factory=dict)
    render: RenderConfig = field(default_factory=RenderConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    progress: bool = True

    def validate(self) -> None:
        problems = []
        self.name = self.name.strip().lower()
        if self.name and not _NAME.match(self.name):
            problems.append(f"--name {self.name!r}: use letters, digits, '_' or '-' (up to 64), starting with a "
                            "letter or digit")
        if self.description and not self.description.strip():
            problems.append("--description is blank: describe the voice in words")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            problems.append(f"dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")
        UserError.collect(problems)

    def check(self) -> None:
        """The required settings, once file, flags and overrides are merged."""
        missing = [flag for key, flag in (("designer", "--designer VOICEDESIGN_CKPT"), ("model", "--model BASE_CKPT"),
                                          ("description", '--description "..."'), ("name", "--name NAME"),
                                          ("output", "--output DIR")) if not str(getattr(self, key)).strip()]
        if missing:
            raise UserError(*(f"missing {m}" for m in missing))

    def overrides(self, group: str) -> list[str]:
        """``sft`` / ``prepare`` as the ``key=value`` overrides their own configs read (nested keys dotted)."""
        out: list[str] = []

        def walk(d: dict, prefix: str) -> None:
            for k, v in d.items():
                key = f"{prefix}{k}"
                if isinstance(v, dict):
                    walk(v, key + ".")
                else:
                    out.append(f"{key}={v if isinstance(v, str) else json.dumps(v)}")

        walk(getattr(self, group), "")
        return out

    def sentences_file(self) -> Path:
        if self.render.sentences:
            return Path(self.render.sentences).expanduser()
        return SENTENCES_DIR / f"{self.render.language.strip().lower()}.txt"
