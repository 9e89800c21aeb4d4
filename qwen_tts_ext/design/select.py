"""Keep a consistent voice: the identity filter (a resemblyzer centroid) and the quality gates.

Identity: every take's d-vector comes from the ``speaker`` judge (resemblyzer, independent of the TTS
model). The first centroid is the most typical take (the highest mean cosine to all others, so a
minority of off-voice takes cannot pull it), then ``centroid_rounds`` times: centroid = the normalised
mean of the takes kept so far, and a take is ``off_voice`` when its cosine to the centroid is below
``1 - max_distance`` or more than ``mad_k`` robust SDs (1.4826 x MAD, at least 0.02) below the median.

Then the quality gates on the judges' numbers, in this order, one reason per dropped take:
``no_identity`` (too little voiced audio to embed), ``off_voice``, ``unintelligible`` (cer > max_cer),
``low_mos`` (mos_distill < min_mos), ``truncated`` (silero-vad: speech runs into the end), ``no_eos``
(the take filled its frame cap). A gate whose metric is None for a take (judge not installed, not
computable) lets the take through; ``notes`` counts those. Dropped takes are written in data prep's
``rejects.jsonl`` format: ``{"row", "path", "reason", "message"}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ROBUST_SD_FLOOR = 0.02


@dataclass
class Identity:
    centroid: np.ndarray | None  # unit-norm d-vector of the kept voice (None: nothing could be embedded)
    similarity: list[float | None]  # each take's cosine to the final centroid
    off_voice: list[bool]
    threshold: float  # the similarity below which a take was off_voice in the last round
    rounds: list[dict] = field(default_factory=list)  # per round: kept, median, threshold


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def identity_filter(embeddings: list[np.ndarray | None], max_distance: float, mad_k: float,
                    rounds: int) -> Identity:
    """The centroid of the agreeing takes and which takes are off-voice (see the module docstring)."""
    idx = [i for i, e in enumerate(embeddings) if e is not None]
    n = len(embeddings)
    if not idx:
        return Identity(None, [None] * n, [False] * n, 1.0 - max_distance)
    E = np.stack([_unit(np.asarray(embeddings[i], dtype=np.float64)) for i in idx])
    gram = E @ E.T
    centroid = E[int(np.argmax(gram.mean(axis=1)))]
    keep = np.ones(len(idx), dtype=bool)
    history = []
    threshold = 1.0 - max_distance
    for _ in range(rounds):
        sims = E @ centroid
        median = float(np.median(sims[keep]))
        threshold = 1.0 - max_distance
        if mad_k > 0:
            sd = max(1.4826 * float(np.median(np.abs(sims[keep] - median))), ROBUST_SD_FLOOR)
            threshold = max(threshold, median - mad_k * sd)
        keep = sims >= threshold
        if not keep.any():  # nothing agrees: keep the most typical take so the report still has a centroid
            keep[int(np.argmax(sims))] = True
        history.append({"kept": int(keep.sum()), "median": round(median, 4), "threshold": round(threshold, 4)})
        centroid = _unit(E[keep].mean(axis=0))
    sims = E @ centroid
    similarity: list[float | None] = [None] * n
    off = [False] * n
    for j, i in enumerate(idx):
        similarity[i] = float(sims[j])
        off[i] = bool(sims[j] < threshold)
    return Identity(centroid.astype(np.float32), similarity, off, threshold, history)


def gate_reason(row: dict, filt) -> tuple[str, str] | None:
    """The first quality gate ``row`` (the judges' metrics of one take) fails: ``(reason, message)``."""
    cer = row.get("cer")
    if filt.max_cer is not None and cer is not None and cer > filt.max_cer:
        return "unintelligible", f"CER {cer:.2f} > filter.max_cer {filt.max_cer}"
    mos = row.get("mos_distill")
    if filt.min_mos is not None and mos is not None and mos < filt.min_mos:
        return "low_mos", f"DistillMOS {mos:.2f} < filter.min_mos {filt.min_mos}"
    if filt.drop_truncated and row.get("truncated") is not None and row["truncated"] >= 0.5:
        return "truncated", "speech runs into the end of the clip (silero-vad)"
    if filt.require_eos and row.get("stopped_by_eos") is not None and row["stopped_by_eos"] < 0.5:
        return "no_eos", "the take filled its frame cap without stopping by EOS"
    return None


def select(records: list[dict], rows: list[dict], identity: Identity, filt) -> tuple[list[dict], list[dict], list[str]]:
    """``(kept records, rejects, notes)``: every take gets the first reason that drops it, or is kept."""
    kept, rejects = [], []
    unjudged = {"cer": 0, "mos_distill": 0, "truncated": 0, "stopped_by_eos": 0}
    for i, (rec, row) in enumerate(zip(records, rows)):
        sim = identity.similarity[i]
        rec["spk_sim_centroid"] = None if sim is None else round(sim, 4)
        why: tuple[str, str] | None
        if sim is None:
            why = ("no_identity", "too little voiced audio for a speaker embedding (resemblyzer)")
        elif identity.off_voice[i]:
            why = ("off_voice", f"cosine to the identity centroid {sim:.3f} < {identity.threshold:.3f}")
        else:
            why = gate_reason(row, filt)
        for key in unjudged:
            unjudged[key] += row.get(key) is None
        if why is None:
            kept.append(rec)
        else:
            rejects.append({"row": i, "path": rec["audio"], "reason": why[0], "message": why[1], "id": rec["id"],
                            "source": rec["source"]})
    gates = {"cer": filt.max_cer is not None, "mos_distill": filt.min_mos is not None,
             "truncated": filt.drop_truncated, "stopped_by_eos": filt.require_eos}
    notes = [f"{n} of {len(records)} takes have no {key} (judge not run or not computable): that gate let them through"
             for key, n in unjudged.items() if gates[key] and n]
    return kept, rejects, notes
