"""Pick the Darwin alpha: the largest one that keeps the stop signal and the voice of alpha 0.

An alpha is *within tolerance* when, compared with alpha 0,

- its stop rate (share of utterances ending with EOS before the cap) dropped by at most
  ``stop_tolerance`` (absolute, e.g. 0.05 = five percentage points),
- its mean speaker similarity dropped by at most ``similarity_tolerance`` (when measured): the
  independent judge's ``spk_sim`` (resemblyzer, to the reference clip) when the sweep has it at alpha 0,
  else the model's own ECAPA ``similarity`` (circular: the encoder the voice was cloned with),
- its character error rate rose by at most ``cer_tolerance`` (when an ASR model was given).

The recommendation is the largest alpha such that it *and every smaller swept alpha* are within
tolerance: a lucky pass at 0.10 after a failure at 0.05 is noise, not a safe setting. Every alpha
must also stop by EOS in at least ``min_stop_rate`` of utterances; if alpha 0 itself does not, no
blend is recommended (``status="baseline-unstable"``, alpha 0): fix the checkpoint first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from qwen_tts_ext.errors import UserError


@dataclass
class Tolerances:
    """How far an alpha may fall behind alpha 0 (the ``tolerances`` group of ``qwen-tts-ext evaluate``)."""

    stop: float = 0.05  # allowed drop of the stop rate (absolute)
    similarity: float = 0.05  # allowed drop of the mean speaker similarity (spk_sim, else ECAPA)
    cer: float = 0.05  # allowed rise of the character error rate (with an ASR model)
    min_stop_rate: float = 0.8  # every alpha, 0 included, must stop by EOS at least this often

    def validate(self) -> None:
        problems = [f"tolerances.{name} must be >= 0, got {getattr(self, name):g}"
                    for name in ("stop", "similarity", "cer") if getattr(self, name) < 0]
        if not 0.0 <= self.min_stop_rate <= 1.0:
            problems.append(f"tolerances.min_stop_rate must be in [0, 1], got {self.min_stop_rate:g}")
        UserError.collect(problems)


@dataclass
class Recommendation:
    alpha: float
    status: str  # "ok" | "baseline-unstable"
    verdicts: dict[float, list[str]]  # alpha -> reasons it failed ([] = within tolerance)
    notes: list[str] = field(default_factory=list)

    def ok(self, alpha: float) -> bool:
        return not self.verdicts[alpha]

    def as_dict(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "status": self.status,
            "within_tolerance": {str(a): not r for a, r in self.verdicts.items()},
            "failures": {str(a): r for a, r in self.verdicts.items() if r},
            "notes": list(self.notes),
        }


def _get(row: Mapping[str, Any], key: str) -> float | None:
    v = row.get(key)
    return None if v is None else float(v)


def recommend_alpha(rows: Sequence[Mapping[str, Any]], tol: Tolerances | None = None) -> Recommendation:
    """``rows``: one mapping per alpha with ``alpha``, ``stop_rate`` and optionally ``similarity``, ``spk_sim``, ``cer``."""
    tol = tol or Tolerances()
    if not rows:
        raise UserError("no sweep results to recommend from")
    ordered = sorted(rows, key=lambda r: float(r["alpha"]))
    base = ordered[0]
    if float(base["alpha"]) != 0.0:
        raise UserError("the sweep needs alpha 0 as its baseline")
    b_stop, b_cer = _get(base, "stop_rate"), _get(base, "cer")
    notes = []
    sim_key, sim_name = "similarity", "similarity"
    if _get(base, "spk_sim") is not None:
        sim_key, sim_name = "spk_sim", "spk_sim"
        if _get(base, "similarity") is not None:
            notes.append("speaker similarity judged by the independent spk_sim (resemblyzer, to the reference clip), "
                         "not the model's own ECAPA similarity (shown, not used: the encoder the voice was cloned with)")
    b_sim = _get(base, sim_key)
    unstable = b_stop is not None and b_stop < tol.min_stop_rate - 1e-12
    if unstable:
        notes.append(
            f"alpha 0 itself stops by EOS in only {b_stop:.0%} of utterances (< {tol.min_stop_rate:.0%}): the "
            "checkpoint's stop signal is broken before any blending, so no blend is recommended; check the "
            "checkpoint (SFT learning rate, EOS labels) first"
        )
    if b_sim is None:
        notes.append("speaker similarity was not measured (no speaker encoder): judged on the stop rate only")

    verdicts: dict[float, list[str]] = {}
    for row in ordered:
        a = float(row["alpha"])
        reasons = []
        stop, sim, err = _get(row, "stop_rate"), _get(row, sim_key), _get(row, "cer")
        if stop is not None and b_stop is not None and stop < b_stop - tol.stop - 1e-12:
            reasons.append(f"stop rate {stop:.2f} < {b_stop:.2f} - {tol.stop:.2f}")
        elif stop is not None and stop < tol.min_stop_rate - 1e-12:
            reasons.append(f"stop rate {stop:.2f} < minimum {tol.min_stop_rate:.2f}")
        if sim is not None and b_sim is not None and sim < b_sim - tol.similarity - 1e-12:
            reasons.append(f"{sim_name} {sim:.3f} < {b_sim:.3f} - {tol.similarity:.3f}")
        if err is not None and b_cer is not None and err > b_cer + tol.cer + 1e-12:
            reasons.append(f"CER {err:.3f} > {b_cer:.3f} + {tol.cer:.3f}")
        verdicts[a] = reasons

    if unstable:
        return Recommendation(alpha=0.0, status="baseline-unstable", verdicts=verdicts, notes=notes)
    best = 0.0
    for row in ordered:
        a = float(row["alpha"])
        if verdicts[a]:
            later_ok = [float(r["alpha"]) for r in ordered if float(r["alpha"]) > a and not verdicts[float(r["alpha"])]]
            if later_ok:
                notes.append(
                    f"alpha {a:g} fails but larger alpha(s) {', '.join(f'{x:g}' for x in later_ok)} pass: "
                    "treated as noise, not recommended (add test sentences to firm this up)"
                )
            break
        best = a
    return Recommendation(alpha=best, status="ok", verdicts=verdicts, notes=notes)
