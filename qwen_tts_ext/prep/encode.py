"""12 Hz speech-tokenizer encoding in length-bucketed batches.

The official ``prepare_data.py`` encodes fixed batches of 32 clips in file order, so every batch is
padded to its longest clip: with clips of 1-20 s most of the compute is spent on zeros. Here clips
are sorted by length and packed so that ``batch size x longest clip`` stays under a budget of
*padded* audio seconds (``batch_seconds``), which keeps padding small and memory bounded.

Every clip is zero-padded to a whole number of frames first (see
:func:`~qwen_tts_ext.prep.audio.pad_to_frames`), so its codes are exactly those of encoding it alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from qwen_tts_ext.constants import NUM_CODE_GROUPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from qwen_tts_ext.errors import UserError


def plan_batches(lengths: list[int], batch_seconds: float, max_batch: int,
                 sample_rate: int = SAMPLE_RATE) -> list[list[int]]:
    """Group indices of ``lengths`` (samples) into batches, longest first.

    A batch grows while ``len(batch) * longest <= batch_seconds * sample_rate`` and
    ``len(batch) <= max_batch``; a clip longer than the budget gets a batch of its own.
    """
    budget = max(1.0, float(batch_seconds)) * sample_rate
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    longest = 0
    for i in order:
        if cur and ((len(cur) + 1) * longest > budget or len(cur) >= max_batch):
            batches.append(cur)
            cur = []
        if not cur:
            longest = lengths[i]
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def padding_ratio(lengths: list[int], batches: list[list[int]]) -> float:
    """Fraction of encoded samples that are padding (0 = none)."""
    total = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1.0 - (sum(lengths) / total) if total else 0.0


def load_tokenizer(path: str | Path, device: str = "cpu", dtype: str = "float32"):
    """Load a ``Qwen3TTSTokenizer`` (12 Hz) and check it is the 24 kHz / 1920-samples-per-frame kind."""
    import torch
    from qwen_tts import Qwen3TTSTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise UserError(f"speech tokenizer {path} has no config.json; pass --tokenizer DIR (default: MODEL/speech_tokenizer)")
    cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
    if cfg.get("model_type") != "qwen3_tts_tokenizer_12hz":
        raise UserError(f"speech tokenizer {path} is {cfg.get('model_type')!r}; this suite needs the 12 Hz tokenizer "
                        "(qwen3_tts_tokenizer_12hz)")
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    try:
        tok = Qwen3TTSTokenizer.from_pretrained(str(path), device_map=device, dtype=torch_dtype)
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot load speech tokenizer {path}: {msg}") from None
    sr = tok.get_input_sample_rate()
    hop = tok.get_encode_downsample_rate()
    if sr != SAMPLE_RATE or hop != SAMPLES_PER_FRAME:
        raise UserError(f"speech tokenizer {path} runs at {sr} Hz / {hop} samples per frame; expected "
                        f"{SAMPLE_RATE} / {SAMPLES_PER_FRAME}")
    return tok


def encode_batch(tokenizer, wavs: list[np.ndarray]) -> list[np.ndarray]:
    """Encode 24 kHz mono clips in one batch; return int16 ``[frames, 16]`` arrays."""
    enc = tokenizer.encode([np.ascontiguousarray(w, dtype=np.float32) for w in wavs], sr=SAMPLE_RATE)
    out = []
    for code in enc.audio_codes:
        arr = code.detach().cpu().numpy()
        if arr.ndim != 2 or arr.shape[1] != NUM_CODE_GROUPS:
            raise RuntimeError(f"speech tokenizer returned codes of shape {arr.shape}, expected [frames, {NUM_CODE_GROUPS}]")
        out.append(arr.astype(np.int16))
    return out


def encode_clips(tokenizer, wavs: list[np.ndarray], batch_seconds: float, max_batch: int) -> list[np.ndarray]:
    """Encode many clips with length-bucketed batches; results are in input order."""
    lengths = [len(w) for w in wavs]
    out: list[np.ndarray | None] = [None] * len(wavs)
    for batch in plan_batches(lengths, batch_seconds, max_batch):
        for i, codes in zip(batch, encode_batch(tokenizer, [wavs[i] for i in batch])):
            out[i] = codes
    return out  # type: ignore[return-value]
