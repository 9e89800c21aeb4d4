"""One number from the judges' means: what ``checkpoint.select=best`` ranks checkpoints by.

    composite = sum over metrics m in the weights of  weight[m] * mean_m

with each mean taken over the judged clips (a clip where a judge could not compute a metric is left out
of that mean). The default weights (:data:`DEFAULT_WEIGHTS`) put speaker identity first, the rest as
penalties on the failures fine-tuning causes:

==================  ======  ================================================================================
metric              weight  why this size
==================  ======  ================================================================================
``spk_sim``         +1.0    resemblyzer cosine to the speaker's real recording; same voice 0.87-0.95, another
                            voice 0.54-0.76 on espeak-ng, so 0.1 of it is a large change
``mos_distill``     +0.1    one DistillMOS point (1-5 scale) weighs as 0.1 of speaker similarity: naturalness
                            counts, but cannot buy back a changed voice
``stopped_by_eos``  +0.5    the share of clips that ended by EOS; a clip that ran to the frame cap costs 0.5
``truncated``       -0.5    the share of clips whose speech runs into the end of the buffer (cut mid-word)
``cer``             -0.5    character error rate (only with the ``asr`` judge); 0.1 more CER costs 0.05
==================  ======  ================================================================================

A metric whose judge did not run is left out of the composite for the whole run (every eval of a run
uses the same judges, so composites within a run compare). If a judge that ran produced no value for a
weighted metric at some eval, that eval's composite is None and it cannot be selected. Weights are a
config value (``eval.composite`` in the SFT recipe): any metric a judge declares may be weighted, with the
sign saying which way is better; ``judges.metric_info()`` lists them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

DEFAULT_WEIGHTS: dict[str, float] = {"spk_sim": 1.0, "mos_distill": 0.1, "stopped_by_eos": 0.5, "truncated": -0.5,
                                     "cer": -0.5}


def check_weights(weights: Mapping[str, Any]) -> list[str]:
    """Problems with a weights mapping (unknown metric with a did-you-mean, non-numbers, a sign against the
    metric's direction); empty when it is fine."""
    import difflib

    from qwen_tts_ext.evaluation.judges import metric_info

    info = metric_info()
    problems = []
    for name, w in weights.items():
        if name not in info:
            near = difflib.get_close_matches(str(name), list(info), n=1)
            hint = f" (did you mean {near[0]}?)" if near else f"; choose from {', '.join(sorted(info))}"
            problems.append(f"composite weight for unknown metric {name!r}{hint}")
            continue
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(float(w)):
            problems.append(f"composite weight for {name} must be a number, got {w!r}")
            continue
        direction = info[name].direction
        if (direction == "higher" and w < 0) or (direction == "lower" and w > 0):
            problems.append(f"composite weight {name}={w:g} rewards the wrong direction: {direction} is better, "
                            f"so its weight must be {'>=' if direction == 'higher' else '<='} 0")
        elif direction == "target" and w:
            problems.append(f"{name} is a target metric (closer to a reference is better), not a higher/lower one: "
                            "it cannot be weighted in the composite")
    return problems


def means(rows: Sequence[Mapping[str, Any]], metrics: Iterable[str] | None = None) -> dict[str, float | None]:
    """Per metric, the mean over the rows that have a number for it (None when no row has one)."""
    names = list(metrics) if metrics is not None else sorted({k for r in rows for k in r if k != "id"})
    out: dict[str, float | None] = {}
    for name in names:
        vals = [float(r[name]) for r in rows if isinstance(r.get(name), (int, float)) and not isinstance(r.get(name), bool)
                and math.isfinite(float(r[name]))]
        out[name] = sum(vals) / len(vals) if vals else None
    return out


def composite(summary: Mapping[str, float | None], weights: Mapping[str, float], measured: Iterable[str]) -> float | None:
    """``sum(weight * summary[m])`` over the weighted metrics in ``measured`` (the metrics the run's judges
    declare); None when one of them has no value in ``summary``."""
    measured = set(measured)
    total = 0.0
    for name, w in weights.items():
        if name not in measured or not w:
            continue
        value = summary.get(name)
        if value is None:
            return None
        total += float(w) * float(value)
    return total


def terms(weights: Mapping[str, float], measured: Iterable[str]) -> dict[str, float]:
    """The weights that take part for a run whose judges declare ``measured`` (for logs and reports)."""
    measured = set(measured)
    return {k: float(w) for k, w in weights.items() if k in measured and w}
