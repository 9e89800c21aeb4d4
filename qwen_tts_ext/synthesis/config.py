"""Option groups shared by every command that speaks (synthesize, evaluate, studio, and later ones).

One definition each, nested into the commands' configs instead of restating fields:

- ``SynthesisOptions``: language, seed, sampling, frame-cap bounds and joining of one synthesis;
- ``VoiceRef``: which voice (a speaker of a custom_voice checkpoint, a reference clip, or a name in
  a ``speakers.safetensors`` from data prep);
- ``RuntimeRef``: the model folder and where it runs (device, dtype).

No torch import here: commands parse and check their configs before any model loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qwen_tts_ext.config import Share
from qwen_tts_ext.errors import UserError

# The tts_model_type values the synthesis engine speaks with (voice_design checkpoints have no fixed voice).
SPEAKING_TYPES = ("custom_voice", "base")

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



def _group_aliases(**groups: type) -> dict[str, str]:
    """Short override keys for nested groups: ``seed`` -> ``synthesis.seed`` (what ``seed=3`` meant before)."""
    from dataclasses import fields

    return {f.name: f"{prefix}.{f.name}" for prefix, cls in groups.items() for f in fields(cls)}


@dataclass
class SynthesizeConfig:
    """Settings of ``qwen-tts-ext synthesize`` (YAML keys = these names; CLI flags map onto them).

    Keys of the nested groups may also be given short (``seed=3``, ``speaker: alice`` in a file) for
    ``synthesis.seed``, ``voice.speaker``; see ``SYNTHESIZE_ALIASES``.
    """

    runtime: RuntimeRef = field(default_factory=RuntimeRef)
    voice: VoiceRef = field(default_factory=VoiceRef)
    synthesis: SynthesisOptions = field(default_factory=SynthesisOptions)
    text: str = ""  # the tagged script
    script_file: str = ""  # or read it from this UTF-8 file
    alpha: Share = 0.0  # runtime Darwin blend weight of the LLM's FFNs (0 = off)
    llm: str = ""  # Qwen3 LLM checkpoint for alpha > 0
    emotions: str = ""  # tag -> instruction YAML (default configs/emotions.yaml)
    out: str = ""  # output WAV (default: a timestamped file in out_dir)
    out_dir: str = "outputs"
    strict: bool = False  # warnings (unknown tags, ignored instructions) are errors
    allow_cap_hits: bool = False  # exit 0 even if a segment hit its frame cap
    overwrite: bool = False  # replace an existing `out` that this suite wrote

    def validate(self) -> None:
        problems = []
        if self.text and self.script_file:
            problems.append("give the script either as text or with --script-file, not both")
        if not 0.0 <= self.alpha <= 1.0:
            problems.append(f"alpha must be in [0, 1], got {self.alpha}")
        elif self.alpha > 0 and not self.llm:
            problems.append(f"alpha {self.alpha} needs --llm: the Qwen3 LLM checkpoint to blend in")
        if self.script_file and not Path(self.script_file).expanduser().is_file():
            problems.append(f"script file {self.script_file} does not exist")
        if self.emotions and not Path(self.emotions).expanduser().is_file():
            problems.append(f"emotions file {self.emotions} does not exist")
        UserError.collect(problems)

    def check(self) -> None:
        """The required settings are present (after file, flags and overrides merged; a nested group that
        failed to parse would otherwise read as missing)."""
        if not self.runtime.model:
            raise UserError("no model: pass --model CHECKPOINT_DIR (or model=... in the config)")

    def script(self) -> str:
        """The script text (read from ``script_file`` when given)."""
        if not self.script_file:
            return self.text
        path = Path(self.script_file).expanduser()
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UserError(f"script file {path} is not UTF-8 text") from None
        except IsADirectoryError:
            raise UserError(f"script file {path} is a folder; give a UTF-8 text file") from None


SYNTHESIZE_ALIASES = _group_aliases(runtime=RuntimeRef, voice=VoiceRef, synthesis=SynthesisOptions)


@dataclass
class StudioConfig:
    """Settings of ``qwen-tts-ext studio`` (YAML keys = these names; CLI flags map onto them).

    ``synthesis`` holds the defaults of every generation (bounds, joining, sampling; seed, temperature
    and greedy are the UI's starting values); ``runtime.model``, if set, is offered first.
    """

    runtime: RuntimeRef = field(default_factory=RuntimeRef)
    synthesis: SynthesisOptions = field(default_factory=SynthesisOptions)
    models: list[str] = field(default_factory=list)  # checkpoint folders to offer
    models_dir: str = ""  # also offer every Qwen3-TTS checkpoint folder under this folder
    llm: str = ""  # default Qwen3 LLM for the Darwin alpha slider
    output_dir: str = "outputs/studio"  # WAVs + sidecars, timestamped
    port: int = 7860  # on 127.0.0.1

    def validate(self) -> None:
        problems = []
        if not 0 < self.port < 65536:
            problems.append(f"port must be 1-65535, got {self.port}")
        UserError.collect(problems)


# runtime.model keeps its full key here: `model` would read as the `models` list
STUDIO_ALIASES = {k: v for k, v in _group_aliases(runtime=RuntimeRef, synthesis=SynthesisOptions).items() if k != "model"}
