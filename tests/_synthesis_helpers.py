"""Test helpers for synthesis/evaluation/studio: spies and a forced-EOS hook on tiny models."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np


def _patch_generate(model, fn):
    """Set ``model.generate`` (instance attribute) and return a function restoring the previous one."""
    had = "generate" in vars(model)
    prev = vars(model).get("generate")
    model.generate = fn

    def restore():
        if had:
            model.generate = prev
        else:
            del model.generate

    return restore


class GenerateSpy:
    """Wrap ``model.generate`` (a Qwen3TTSForConditionalGeneration) and record every call's kwargs."""

    def __init__(self, model):
        self.model = model
        self.calls: list[dict] = []

    def __enter__(self):
        self._orig = self.model.generate

        def spy(*args, **kwargs):
            self.calls.append(kwargs)
            return self._orig(*args, **kwargs)

        self._restore = _patch_generate(self.model, spy)
        return self

    def __exit__(self, *exc):
        self._restore()
        return False


@contextlib.contextmanager
def force_eos_after(model, frames: int):
    """Make the talker emit codec EOS as its ``frames``-th new token (so ``frames`` frames are returned).

    A forward hook on the codec head adds a large logit to EOS from the (frames+1)-th head call on
    (call 1 is the prefill, which predicts token 0).
    """
    eos = model.config.talker_config.codec_eos_token_id
    calls = {"n": 0}

    def hook(module, inputs, output):
        calls["n"] += 1
        if calls["n"] > frames:
            output = output.clone()
            output[..., eos] += 1e4
        return output

    def reset(*_):
        calls["n"] = 0

    handle = model.talker.codec_head.register_forward_hook(hook)
    orig = model.generate

    def generate(*args, **kwargs):
        reset()
        return orig(*args, **kwargs)

    restore = _patch_generate(model, generate)
    try:
        yield
    finally:
        handle.remove()
        restore()


def write_reference_wav(path: Path, seconds: float = 2.0, f0: float = 120.0, sr: int = 22050) -> Path:
    """A speech-like reference clip (voiced pulses through formants) at 22.05 kHz."""
    import soundfile as sf

    from qwen_tts_ext.testing.speech import synthetic_voice

    text = "x" * int(seconds / 0.07)
    sf.write(str(path), synthetic_voice(text, sample_rate=sr, f0=f0), sr)
    return path


def max_jump(x: np.ndarray) -> float:
    return float(np.max(np.abs(np.diff(x)))) if len(x) > 1 else 0.0


@contextlib.contextmanager
def single_thread():
    """Run torch on one thread: tiny models are dominated by thread sync, ~10x slower on a busy 2-core box."""
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(prev)
