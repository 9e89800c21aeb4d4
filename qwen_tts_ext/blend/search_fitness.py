"""The Darwin search's fitness: one number per candidate, higher is better, every term relative to alpha 0.

A candidate speaks the same sentences with the same seeds as the unblended model (alpha 0, the
baseline), plus one sentence rendered once per emotion tag. Its measurements (``metrics``) are

- ``cap_hits`` / ``segments``: segments that reached the text-derived frame cap without EOS;
- ``seconds``: mean length of the plain sentences;
- ``contrast``: how differently the emotion tags render the same sentence (:func:`contrast`);
- the offline judges' means over the plain sentences (``evaluation.judges``), e.g. ``spk_sim`` (resemblyzer
  similarity to the alpha-0 rendering of the same sentence and seed), ``mos_distill``, ``dnsmos_ovrl``,
  ``wer``/``cer`` (when an ASR judge runs).

**Fail hard**: a candidate with any segment at the frame cap (the 10% runaway) gets
``FAIL - cap_hits / segments`` (``FAIL`` = -100), below every candidate that stops, and the fewer runaways
the better among failures. Every candidate that is scored therefore has a stop rate of 1, so the stop rate is
this rule rather than a weighted term.

Otherwise ``fitness = sum(weight[m] * score[m])`` over the weighted metrics measured at alpha 0, with

================  =========================================================  ================================
metric            score (b = alpha 0's value, x = the candidate's)             direction
================  =========================================================  ================================
``duration``      ``-|ln(seconds / b_seconds)|`` (0 at the baseline length)  target: alpha 0's length
``contrast``      ``(x - b) / max(b, 1e-6)``                                  higher (what the blend is for)
higher (judges)   ``(x - b) / max(|b|, floor)``                               from ``metric_info()``
lower (judges)    ``(b - x) / max(|b|, floor)``                               from ``metric_info()``
target (judges)   ``-|x - b| / max(|b|, floor)``                              from ``metric_info()``
================  =========================================================  ================================

each clipped to ``[-2, 2]`` so no single metric decides alone (``floor`` = 0.05: a WER of 0 at alpha 0 does
not make every later error infinite). The baseline scores 0 by construction. A metric measured at alpha 0
but not for the candidate (e.g. speech too short to embed) scores -2. Directions are never guessed: they come
from ``evaluation.judges.metric_info()``.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

FAIL = -100.0
CLIP = 2.0
FLOOR = 0.05
OWN = {"contrast": "higher", "duration": "target"}


def directions() -> dict[str, str]:
    """Metric -> "higher" | "lower" | "target" for every metric a weight may name."""
    from qwen_tts_ext.evaluation.judges import metric_info

    out = {name: m.direction for name, m in metric_info().items()}
    out.update(OWN)
    return out


def check_weights(weights: Mapping[str, Any]) -> list[str]:
    """Problems with ``fitness.weights`` (unknown metric with a did-you-mean, non-numbers)."""
    import difflib

    known = directions()
    problems = []
    for k, v in weights.items():
        if k not in known:
            close = difflib.get_close_matches(str(k), list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"fitness.weights: unknown metric {k!r}{hint}; choose from {', '.join(sorted(known))}")
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            problems.append(f"fitness.weights.{k}: expected a number >= 0, got {v!r}")
    return problems


def _clip(v: float) -> float:
    return max(-CLIP, min(CLIP, v))


def term(metric: str, x: float | None, b: float, direction: str) -> float:
    """One metric's score against alpha 0 (see the table in the module docstring)."""
    if x is None or not math.isfinite(x):
        return -CLIP
    if metric == "duration":
        return _clip(-abs(math.log(max(x, 1e-6) / max(b, 1e-6))))
    if metric == "contrast":
        return _clip((x - b) / max(b, 1e-6))
    scale = max(abs(b), FLOOR)
    if direction == "higher":
        return _clip((x - b) / scale)
    if direction == "lower":
        return _clip((b - x) / scale)
    return _clip(-abs(x - b) / scale)


def active_weights(weights: Mapping[str, float], baseline: Mapping[str, Any]) -> dict[str, float]:
    """The weighted metrics the baseline measured (the rest cannot be normalised, and are noted)."""
    return {m: float(w) for m, w in weights.items() if w > 0 and _value(baseline, m) is not None}


def _value(metrics: Mapping[str, Any], metric: str) -> float | None:
    v = metrics.get("seconds" if metric == "duration" else metric)
    return float(v) if v is not None and math.isfinite(float(v)) else None


def fitness(metrics: Mapping[str, Any], baseline: Mapping[str, Any], weights: Mapping[str, float]) -> tuple[float, dict]:
    """``(fitness, {metric: score})`` of a candidate's ``metrics`` against the ``baseline`` (alpha 0)."""
    segments = max(1, int(metrics.get("segments", 1)))
    hits = int(metrics.get("cap_hits", 0))
    if hits:
        return FAIL - hits / segments, {"cap_hits": hits}
    dirs = directions()
    scores = {}
    for m, w in active_weights(weights, baseline).items():
        scores[m] = term(m, _value(metrics, m), _value(baseline, m), dirs[m])
    total = sum(float(weights[m]) * s for m, s in scores.items())
    return float(total), scores


# ----------------------------------------------------------------------------- emotion contrast

def prosody(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Utterance-level prosody of one rendering: log duration, energy level and spread (dB/10), spectral
    centroid level and spread (kHz), over 25 ms frames with a 10 ms hop (numpy only, no model)."""
    x = np.asarray(audio, dtype=np.float64)
    n, hop = int(0.025 * sample_rate), int(0.010 * sample_rate)
    if len(x) < n:
        x = np.pad(x, (0, n - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, n)[::hop] * np.hanning(n)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    energy_db = 10 * np.log10(power.sum(axis=1) + 1e-10)
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    centroid = (power * freqs).sum(axis=1) / (power.sum(axis=1) + 1e-10) / 1000.0
    loud = energy_db > energy_db.max() - 40  # frames within 40 dB of the loudest: the speech
    e, c = energy_db[loud], centroid[loud]
    return np.array([math.log(max(len(audio) / sample_rate, 1e-3)), e.mean() / 10, e.std() / 10, c.mean(), c.std()])


def contrast(renderings: Sequence[tuple[np.ndarray, int]]) -> float | None:
    """Mean pairwise Euclidean distance of the renderings' :func:`prosody` vectors: 0 when every emotion tag
    sounds alike, larger the more the tags change duration, loudness and brightness. A proxy, not an emotion
    classifier (none ships offline): it rewards difference, and the other terms keep the voice and the length."""
    vecs = [prosody(a, sr) for a, sr in renderings if len(a)]
    if len(vecs) < 2:
        return None
    d = [float(np.linalg.norm(vecs[i] - vecs[j])) for i in range(len(vecs)) for j in range(i + 1, len(vecs))]
    return float(np.mean(d))
