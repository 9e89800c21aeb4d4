"""Join segments with an equal-power crossfade, so the result has no clicks at the joins.

Each join overlaps the last ``k`` samples of the previous audio with the first ``k`` samples of the
next one (``k`` = the crossfade, shortened when a segment is too short), so

    len(out) == sum(len(s) for s in segments) - sum(k_i for every join i).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from qwen_tts_ext.constants import SAMPLE_RATE


def crossfade_samples(crossfade_ms: float, sample_rate: int = SAMPLE_RATE) -> int:
    if crossfade_ms < 0:
        raise ValueError("crossfade must be >= 0 ms")
    return int(round(crossfade_ms * sample_rate / 1000.0))


def join_overlaps(lengths: Sequence[int], crossfade: int) -> list[int]:
    """The overlap used at each join: ``crossfade`` clipped to half of the shorter neighbour."""
    overlaps = []
    for prev, nxt in zip(lengths[:-1], lengths[1:]):
        overlaps.append(max(0, min(crossfade, prev // 2, nxt // 2)))
    return overlaps


def joined_length(lengths: Sequence[int], crossfade: int) -> int:
    """Length of ``crossfade_join`` output for segments of these lengths."""
    return int(sum(lengths) - sum(join_overlaps(list(lengths), crossfade)))


class Joiner:
    """Incremental ``crossfade_join``: ``add`` segments one at a time (e.g. as they are generated).

    ``audio`` is always the join of everything added so far, so a UI can play a growing result.
    """

    def __init__(self, crossfade: int):
        if crossfade < 0:
            raise ValueError("crossfade must be >= 0 samples")
        self.crossfade = int(crossfade)
        self._parts: list[np.ndarray] = []
        self._tail = np.zeros(0, dtype=np.float32)  # the end of the audio that may still be crossfaded
        self._lengths: list[int] = []

    def add(self, segment: np.ndarray) -> None:
        seg = np.asarray(segment, dtype=np.float32).reshape(-1)
        if not self._lengths:
            self._tail = seg
        else:
            k = join_overlaps([self._lengths[-1], len(seg)], self.crossfade)[0]
            # _tail is the previous segment minus its own leading overlap; both overlaps are <= half of it
            if k > 0:
                t = (np.arange(k, dtype=np.float64) + 0.5) / k
                fade_out, fade_in = np.cos(t * np.pi / 2), np.sin(t * np.pi / 2)
                mixed = (self._tail[-k:] * fade_out + seg[:k] * fade_in).astype(np.float32)
                self._parts.append(self._tail[:-k])
                self._parts.append(mixed)
                self._tail = seg[k:]
            else:
                self._parts.append(self._tail)
                self._tail = seg
        self._lengths.append(len(seg))

    @property
    def audio(self) -> np.ndarray:
        if not self._lengths:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(self._parts + [self._tail]).astype(np.float32, copy=False)

    def __len__(self) -> int:
        return sum(len(p) for p in self._parts) + len(self._tail)


def crossfade_join(segments: Sequence[np.ndarray], crossfade: int) -> np.ndarray:
    """Join 1-D float arrays with an equal-power (sin/cos) crossfade of ``crossfade`` samples."""
    joiner = Joiner(crossfade)
    for seg in segments:
        joiner.add(seg)
    return joiner.audio
