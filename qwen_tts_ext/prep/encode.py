"""12 Hz speech-tokenizer encoding in length-bucketed batches.

The official ``prepare_data.py`` encodes fixed batches of 32 clips in file order, so every batch is
padded to its longest clip: with clips of 1-20 s most of the compute is spent on zeros. Here clips
are sorted by length and cut into batches that minimise padding plus per-call cost
(:func:`plan_batches`), with ``batch size x longest clip`` capped by ``batch_seconds`` of padded
audio so memory stays bounded.

Every clip is zero-padded to a whole number of frames first (see
:func:`~qwen_tts_ext.prep.audio.pad_to_frames`), so its codes are exactly those of encoding it alone,
whatever else shares its batch. That also allows padding a batch a little *further*, to a length
on a coarse grid (``LENGTH_QUANTUM`` samples): on CPU, oneDNN builds new convolution kernels for
every new input shape, which costs more than the extra zeros, so repeating shapes pay off.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from qwen_tts_ext.constants import NUM_CODE_GROUPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from qwen_tts_ext.errors import UserError


# Batches are padded to a multiple of this many samples (10 frames = 0.8 s) so shapes repeat.
LENGTH_QUANTUM = 10 * SAMPLES_PER_FRAME


def round_up(n: int, quantum: int = LENGTH_QUANTUM) -> int:
    return -(-n // quantum) * quantum


# Fixed cost of one tokenizer call, in audio seconds of compute: the call itself (~0.3 s on CPU at
# ~35 audio-s/s) plus, on CPU, oneDNN's kernel set-up for a new input shape (~0.5 s). Batching
# trades this against padding; see plan_batches.
BATCH_OVERHEAD_SECONDS = 30.0


def plan_batches(lengths: list[int], batch_seconds: float, max_batch: int,
                 sample_rate: int = SAMPLE_RATE, quantum: int = 1,
                 overhead_seconds: float = BATCH_OVERHEAD_SECONDS) -> list[list[int]]:
    """Group indices of ``lengths`` (samples) into batches of similar length, longest first.

    Clips are sorted by length and cut into contiguous groups minimising the encoder's work,
    ``sum(len(batch) * round_up(longest, quantum)) + overhead_seconds * num_batches`` (padding
    against per-call cost), by dynamic programming. Hard limits: ``len(batch) <= max_batch`` and
    ``len(batch) * round_up(longest) <= batch_seconds * sample_rate`` (memory); a clip longer than
    that budget gets a batch of its own.
    """
    budget = max(1.0, float(batch_seconds)) * sample_rate
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    n = len(order)
    padded = [round_up(lengths[i], quantum) for i in order]
    overhead = overhead_seconds * sample_rate
    best = [0.0] + [math.inf] * n  # best[j]: cost of encoding the j longest clips
    cut = [0] * (n + 1)
    for i in range(n):  # a batch starting at sorted position i (its longest clip)
        if best[i] == math.inf:
            continue
        for j in range(i + 1, min(n, i + max_batch) + 1):
            size = j - i
            if size > 1 and size * padded[i] > budget:
                break
            cost = best[i] + overhead + size * padded[i]
            if cost < best[j]:
                best[j], cut[j] = cost, i
    batches: list[list[int]] = []
    j = n
    while j > 0:
        i = cut[j]
        batches.append(order[i:j])
        j = i
    return batches[::-1]


def padding_ratio(lengths: list[int], batches: list[list[int]]) -> float:
    """Fraction of encoded samples that are padding (0 = none)."""
    total = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1.0 - (sum(lengths) / total) if total else 0.0


def check_tokenizer(path: str | Path) -> Path:
    """``path`` if it is a 12 Hz speech tokenizer folder, from its ``config.json`` alone (run it before any work)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise UserError(f"speech tokenizer {path} has no config.json; pass --tokenizer DIR (default: MODEL/speech_tokenizer)")
    try:
        cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except ValueError:
        raise UserError(f"{path / 'config.json'} is not valid JSON") from None
    if not isinstance(cfg, dict) or cfg.get("model_type") != "qwen3_tts_tokenizer_12hz":
        found = cfg.get("model_type") if isinstance(cfg, dict) else None
        raise UserError(f"speech tokenizer {path} is {found!r}; this suite needs the 12 Hz tokenizer "
                        "(qwen3_tts_tokenizer_12hz)")
    return path


def load_tokenizer(path: str | Path, device: str = "cpu", dtype: str = "float32"):
    """Load a ``Qwen3TTSTokenizer`` (12 Hz) and check it is the 24 kHz / 1920-samples-per-frame kind."""
    import torch
    from qwen_tts import Qwen3TTSTokenizer

    path = check_tokenizer(path)
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


def encode_batch(tokenizer, wavs: list[np.ndarray], pad_to: int = 0) -> list[np.ndarray]:
    """Encode 24 kHz mono clips in one batch; return int16 ``[frames, 16]`` arrays.

    The steps of ``Qwen3TTSTokenizer.encode`` (feature extractor, then ``model.encode`` with the
    padding mask), with the batch optionally zero-padded further to ``pad_to`` samples. Clips must
    be whole frames long for the result not to depend on the padding.
    """
    import torch

    fe = tokenizer.feature_extractor
    inputs = fe(raw_audio=[np.ascontiguousarray(w, dtype=np.float32) for w in wavs],
                sampling_rate=int(fe.sampling_rate), return_tensors="pt")
    values = inputs["input_values"].squeeze(1)
    mask = inputs["padding_mask"].squeeze(1)
    extra = pad_to - values.shape[-1]
    if extra > 0:
        values = torch.nn.functional.pad(values, (0, extra))
        mask = torch.nn.functional.pad(mask, (0, extra))
    values = values.to(tokenizer.device).to(tokenizer.model.dtype)
    mask = mask.to(tokenizer.device)
    with torch.inference_mode():
        enc = tokenizer.model.encode(values, mask, return_dict=True)
    out = []
    for code in enc.audio_codes:
        arr = code.detach().cpu().numpy()
        if arr.ndim != 2 or arr.shape[1] != NUM_CODE_GROUPS:
            raise RuntimeError(f"speech tokenizer returned codes of shape {arr.shape}, expected [frames, {NUM_CODE_GROUPS}]")
        out.append(arr.astype(np.int16))
    return out


def encode_clips(tokenizer, wavs: list[np.ndarray], batch_seconds: float, max_batch: int,
                 quantum: int = LENGTH_QUANTUM) -> list[np.ndarray]:
    """Encode many frame-aligned clips with length-bucketed batches; results are in input order."""
    lengths = [len(w) for w in wavs]
    out: list[np.ndarray | None] = [None] * len(wavs)
    for batch in plan_batches(lengths, batch_seconds, max_batch, quantum=quantum):
        pad_to = round_up(max(lengths[i] for i in batch), quantum)
        for i, codes in zip(batch, encode_batch(tokenizer, [wavs[i] for i in batch], pad_to)):
            out[i] = codes
    return out  # type: ignore[return-value]
