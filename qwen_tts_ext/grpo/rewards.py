"""Rewards: a weighted sum of measured terms per rollout, each term logged on its own.

Terms (``reward.weights`` keys):

- any judge metric (``evaluation/judges``: ``spk_sim``, ``mos_distill``, ``wer``, ``cer``, ``truncated``...),
  signed by its direction from ``metric_info`` (a "lower is better" metric enters as ``-value``); a clip the
  judge could not score (None) contributes 0 and is counted in ``reward/<metric>_missing``. "target"
  metrics (speaking rate, duration ratio) have no sign and are refused: use ``duration`` instead;
- ``duration``: ``-|seconds - target|``, target ``reward.duration_target`` seconds, or the text's slow-speech
  estimate (``synthesis/bounds.expected_seconds``) when it is 0: a reward with a known optimum;
- ``stop_in_time``: 1 when the rollout ended with EOS within ``reward.stop_margin x expected_seconds(text)
  + reward.stop_slack_s``, else 0 (the stop-signal repair's reward);
- ``stopped_by_eos``: 1 when EOS came before the frame cap.

A rollout that hit the frame cap also gets ``-reward.cap_penalty`` (term ``cap``), whatever the weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from qwen_tts_ext.constants import FRAME_RATE
from qwen_tts_ext.synthesis.bounds import expected_seconds

BUILTIN_TERMS = ("duration", "stop_in_time", "stopped_by_eos")


@dataclass
class RewardSpec:
    weights: dict = field(default_factory=dict)  # term -> weight
    cap_penalty: float = 1.0
    duration_target: float = 0.0  # seconds; 0 = expected_seconds(text)
    stop_margin: float = 1.5
    stop_slack_s: float = 1.0


def judge_metrics(weights: dict) -> list[str]:
    """The weighted metrics that need a judge (non-zero weight, not a built-in term)."""
    return [k for k, w in weights.items() if k not in BUILTIN_TERMS and float(w) != 0.0]


def check_weights(weights: dict) -> list[str]:
    """Problems with ``reward.weights``: unknown metrics, "target" metrics, non-numbers."""
    from qwen_tts_ext.evaluation.judges import metric_info

    info, out = metric_info(), []
    for k, w in weights.items():
        if not isinstance(w, (int, float)) or isinstance(w, bool) or not math.isfinite(float(w)):
            out.append(f"reward.weights.{k}: {w!r} is not a number")
        elif k in BUILTIN_TERMS:
            continue
        elif k not in info:
            out.append(f"reward.weights.{k}: no such term; built-in: {', '.join(BUILTIN_TERMS)}; or a judge metric "
                       f"({', '.join(sorted(info))})")
        elif info[k].direction == "target":
            out.append(f"reward.weights.{k}: {k} has no better direction (it is 'closer to a target'); use "
                       "'duration' with reward.duration_target")
    return out


def judges_for(metrics: list[str]) -> list[str]:
    """The judge names that measure ``metrics``."""
    from qwen_tts_ext.evaluation.judges import JUDGES, judge_class

    names = []
    for name in JUDGES:
        if any(m.name in metrics for m in judge_class(name).metrics):
            names.append(name)
    return names


def builtin_terms(text: str, frames: int, stopped: bool, spec: RewardSpec) -> dict[str, float]:
    """The terms that need no judge, for one rollout of ``frames`` frames speaking ``text``."""
    seconds = frames / FRAME_RATE
    expected = expected_seconds(text)
    target = spec.duration_target or expected
    in_time = stopped and seconds <= spec.stop_margin * expected + spec.stop_slack_s
    return {"duration": -abs(seconds - target), "stop_in_time": float(in_time), "stopped_by_eos": float(stopped)}


def combine(terms: list[dict], judged: list[dict], stopped: list[bool], spec: RewardSpec) -> tuple[list[float], list[dict]]:
    """Per rollout: (reward, its signed terms). ``terms``: :func:`builtin_terms` rows; ``judged``: the judges'
    rows (or empty dicts)."""
    from qwen_tts_ext.evaluation.judges import metric_info

    info = metric_info()
    rewards, rows = [], []
    for t, j, ok in zip(terms, judged, stopped):
        row: dict[str, float] = {}
        total = 0.0
        for k, w in spec.weights.items():
            w = float(w)
            if k in BUILTIN_TERMS:
                value = t[k]
            else:
                raw = j.get(k)
                if raw is None or not math.isfinite(float(raw)):
                    row[f"{k}_missing"] = 1.0
                    value = 0.0
                else:
                    value = float(raw) if info[k].direction == "higher" else -float(raw)
            row[k] = value
            total += w * value
        row["cap"] = 0.0 if ok else -spec.cap_penalty
        total += row["cap"]
        rewards.append(total)
        rows.append(row)
    return rewards, rows
