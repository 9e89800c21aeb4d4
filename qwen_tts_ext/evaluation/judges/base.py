"""The one interface every judge implements, and the clip it scores.

A judge measures one aspect of speech with a model that ships inside an installed package (no
hub downloads at run time), independent of the TTS model being judged:

    judge = load_judge("distillmos")             # None when its package is missing (load_judges says why)
    rows = judge.score(clips)                    # one dict per clip: metric name -> float | None

Each judge declares its metrics (name, direction, typical range) so that reports, composites,
checkpoint selection, the genome search and GRPO rewards read the direction from one place and
never guess whether higher is better. A metric a judge cannot compute for a clip (no transcript,
no reference, too short) is ``None``, never a made-up number.
"""

from __future__ import annotations

import importlib.util
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, Literal, Sequence

import numpy as np

Direction = Literal["higher", "lower", "target"]


@dataclass(frozen=True)
class Metric:
    name: str  # column name in reports, e.g. "spk_sim_resemblyzer"
    direction: Direction  # which way is better ("target": closer to a reference value, e.g. speaking rate)
    description: str
    typical: str = ""  # what real speech scores, e.g. "same voice 0.80-0.95, other voice 0.55-0.80"


@dataclass
class Clip:
    """One utterance to judge (mono float32 in [-1, 1])."""

    audio: np.ndarray
    sample_rate: int
    id: str = ""
    text: str | None = None  # what it should say (for WER/CER and speaking-rate ranges)
    language: str | None = None  # "english", "chinese", ... or None (auto)
    ref: np.ndarray | None = None  # reference audio of the intended speaker (speaker similarity)
    ref_sample_rate: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # generated audio: stopped_by_eos, frames, frame_cap

    @property
    def seconds(self) -> float:
        return len(self.audio) / float(self.sample_rate)


class Judge:
    """Base class: subclasses set ``name``, ``metrics``, ``package`` and implement ``_score``."""

    name: ClassVar[str] = ""
    metrics: ClassVar[tuple[Metric, ...]] = ()
    package: ClassVar[str] = ""  # the pip name its weights ship in ("" = nothing beyond the suite)
    needs: ClassVar[tuple[str, ...]] = ()  # "text", "ref": clips without them get None for this judge
    requires: ClassVar[tuple[str, ...]] = ()  # modules that must import (checked without importing them)
    install: ClassVar[str] = ""  # the one line that installs what ``requires`` names
    skips: ClassVar[str] = ""  # what is lost without it, for the note ("MOS", "WER/CER")

    @classmethod
    def unavailable(cls, **options) -> str | None:
        """One line saying why this judge cannot run with ``options`` (None: it can)."""
        for module in cls.requires:
            if not importable(module):
                return f"{cls.name} not installed: {cls.install} ({cls.skips or cls.name} skipped)"
        return None

    def load(self) -> None:
        """Load the model (once per process: implementations cache it); called by ``load_judge``."""

    def score(self, clips: Sequence[Clip]) -> list[dict[str, float | None]]:
        """One row per clip with every declared metric (None where it cannot be computed)."""
        out = []
        for clip in clips:
            if any(getattr(clip, need) is None for need in self.needs):
                out.append({m.name: None for m in self.metrics})
                continue
            row = self._score(clip)
            out.append({m.name: _as_float(row.get(m.name)) for m in self.metrics})
        return out

    def _score(self, clip: Clip) -> dict[str, float | None]:  # pragma: no cover - abstract
        raise NotImplementedError


def _as_float(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None


def resample(audio: np.ndarray, sample_rate: int, target: int) -> np.ndarray:
    """Mono float32 at ``target`` Hz (soxr, as data prep uses)."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim > 1:
        audio = audio.mean(axis=-1 if audio.shape[-1] <= 8 else 0)
    if sample_rate == target:
        return audio
    import soxr

    return soxr.resample(audio, sample_rate, target).astype(np.float32)


def importable(module: str) -> bool:
    """Whether ``import module`` can find it, without importing it (``sys.modules[module] = None`` counts as missing)."""
    import sys

    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads, then put the previous count back (``None``: leave it).

    One thread is the judges' default: their per-clip work is small, and on a busy machine OpenMP's
    spinning threads cost more than they save (resemblyzer measured 10x slower with 2 threads on 2
    cores shared with another process).
    """
    import torch

    before = torch.get_num_threads()
    if n and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
