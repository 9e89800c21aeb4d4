"""Metrics of the alpha sweep: speaker similarity, identity drift, character error rate."""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Sequence

import numpy as np


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity in float64 (0 for a zero vector)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"cosine of vectors with different shapes {a.shape} and {b.shape}")
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def identity_drift(embeddings: Sequence[np.ndarray]) -> float | None:
    """1 - mean pairwise cosine between the segments of one script (0 = the same voice throughout).

    ``None`` for fewer than two segments.
    """
    vecs = [np.asarray(e) for e in embeddings if e is not None]
    if len(vecs) < 2:
        return None
    sims = [cosine(a, b) for a, b in itertools.combinations(vecs, 2)]
    return float(1.0 - np.mean(sims))


def normalize_transcript(text: str) -> str:
    """Lower-case, drop punctuation and tags, collapse spaces (for CER)."""
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(ch if (ch.isalnum() or ch.isspace()) else " " for ch in text)
    return re.sub(r"\s+", " ", text).strip()


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance (insertions, deletions, substitutions all cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def cer(reference: str, hypothesis: str) -> float:
    """Character error rate of ``hypothesis`` against ``reference`` after normalisation."""
    ref, hyp = normalize_transcript(reference), normalize_transcript(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return edit_distance(ref, hyp) / len(ref)
