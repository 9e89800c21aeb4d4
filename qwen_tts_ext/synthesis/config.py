"""Option groups shared by every command that speaks (synthesize, evaluate, studio, and later ones).

One definition each, nested into the commands' configs instead of restating fields:

- ``SynthesisOptions``: language, seed, sampling, frame-cap bounds and joining of one synthesis;
- ``VoiceRef``: which voice (a speaker of a custom_voice checkpoint, a reference clip, or a name in
  a ``speakers.safetensors`` from data prep);
- ``RuntimeRef``: the model folder and where it runs (device, dtype).

No torch import here: commands parse and check their configs before any model loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qwen_tts_ext.errors import UserError

# Fallbacks when a checkpoint has no generation_config.json entry (same as qwen_tts).
_HARD_DEFAULTS = dict(
    do_sample=True,
    top_k=50,
    top_p=1.0,
    temperature=0.9,
    repetition_penalty=1.05,
    subtalker_dosample=True,
    subtalker_top_k=50,
    subtalker_top_p=1.0,
    subtalker_temperature=0.9,
)


@dataclass
class SynthesisOptions:
    """Everything that shapes one synthesis besides the model, the voice and the script."""

    language: str = "auto"
    seed: int = 0
    # sampling (None = the checkpoint's generation_config.json)
    do_sample: bool | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    subtalker_temperature: float | None = None
    subtalker_top_k: int | None = None
    subtalker_top_p: float | None = None
    # bounds and joining
    cap_margin: float = 2.0
    cap_slack_seconds: float = 3.0
    max_segment_seconds: float = 120.0
    crossfade_ms: float = 40.0

    def sampling(self, defaults: dict[str, Any]) -> dict[str, Any]:
        """Sampling kwargs for ``generate``: explicit values win, then the checkpoint's defaults."""
        out = {}
        for key, hard in _HARD_DEFAULTS.items():
            value = getattr(self, key, None)
            out[key] = value if value is not None else defaults.get(key, hard)
        if self.do_sample is not None:  # greedy talker means greedy sub-talker too
            out["subtalker_dosample"] = self.do_sample
        return out

    def validate(self) -> None:
        problems = []
        if self.cap_margin <= 0:
            problems.append(f"cap_margin must be > 0, got {self.cap_margin}")
        if self.cap_slack_seconds < 0:
            problems.append(f"cap_slack_seconds must be >= 0, got {self.cap_slack_seconds}")
        if self.max_segment_seconds <= 0:
            problems.append(f"max_segment_seconds must be > 0, got {self.max_segment_seconds}")
        if self.crossfade_ms < 0:
            problems.append(f"crossfade_ms must be >= 0, got {self.crossfade_ms}")
        for name in ("temperature", "subtalker_temperature"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                problems.append(f"{name} must be > 0, got {v}")
        for name in ("top_p", "subtalker_top_p"):
            v = getattr(self, name)
            if v is not None and not 0 < v <= 1:
                problems.append(f"{name} must be in (0, 1], got {v}")
        for name in ("top_k", "subtalker_top_k"):
            v = getattr(self, name)
            if v is not None and v < 0:
                problems.append(f"{name} must be >= 0, got {v}")
        UserError.collect(problems)


@dataclass
class VoiceRef:
    """The one voice: a speaker (custom_voice row, or a name in ``speakers_file``) or a reference clip."""

    speaker: str = ""  # speaker of a custom_voice checkpoint, or a name in speakers_file (base)
    ref_audio: str = ""  # base checkpoint: a reference clip whose x-vector is the voice
    speakers_file: str = ""  # base checkpoint: speakers.safetensors from data prep (name -> x-vector)

    def validate(self) -> None:
        problems = []
        for name, what in (("ref_audio", "reference audio"), ("speakers_file", "speakers file")):
            value = getattr(self, name)
            if value and not Path(value).expanduser().is_file():
                problems.append(f"{what} {value} does not exist")
        UserError.collect(problems)


@dataclass
class RuntimeRef:
    """A Qwen3-TTS checkpoint and where it runs."""

    model: str = ""  # Qwen3-TTS checkpoint folder (custom_voice or base)
    device: str = "cpu"  # cpu, cuda, cuda:N, mps or auto
    dtype: str = "auto"  # float32, bfloat16, float16 or auto (bfloat16 on CUDA, float32 elsewhere)

    def validate(self) -> None:
        from qwen_tts_ext.devices import DTYPES

        if self.dtype not in ("auto", *DTYPES):
            raise UserError(f"dtype {self.dtype!r} is not one of auto, {', '.join(DTYPES)}")

