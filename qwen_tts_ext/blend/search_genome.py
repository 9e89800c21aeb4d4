"""The genome of the Darwin search: which numbers CMA-ES moves and how they become a blend schedule.

One gene per talker layer (``per_projection``: per layer and projection gate/up/down), each a ratio in
``[0, alpha_max]``; frozen layers have no gene and are pinned at 0. With an MRI prior, one more gene, the
trust ``t`` in ``[0, 1]``, mixes the genome with the prior:

    ratio[layer] = t * mri[layer] + (1 - t) * gene[layer]        (frozen layers: 0)

CMA-ES works in a unit box ``[0, 1]^d`` (gene = x * alpha_max, trust = x), so one initial step ``sigma0``
fits every gene. Genes are rounded to ``precision`` before anything is evaluated, and the fitness cache
is keyed by a hash of the rounded genes, so a candidate that rounds like an earlier one is never spoken
twice (and a resumed search finds what it already measured).

The MRI prior (:func:`mri_prior`) is the "equal displacement" schedule: a blend moves tensor W by
``alpha * ||W_llm - W_tts||``, so each layer gets the ratio that moves it as far, relative to its own norm,
as the flat start ratio moves the average layer: ``mri[l] = start * mean(rel) / rel[l]``, clipped to
``[0, alpha_max]``. Layers where the parents differ most get the smallest ratio.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Sequence

PROJECTIONS = ("gate", "up", "down")


@dataclass(frozen=True)
class Layout:
    """Where each gene goes: ``slots`` are (layer, projection or None) per gene; ``trust`` adds one gene."""

    num_layers: int
    alpha_max: float
    frozen: tuple[int, ...]
    projections: tuple[str, ...]
    per_projection: bool
    slots: tuple[tuple[int, str | None], ...]
    mri: tuple[tuple[float, ...], ...] | None = None  # prior ratio per layer (per projection column) or None
    precision: float = 1e-4

    @classmethod
    def build(cls, num_layers: int, *, alpha_max: float = 0.08, frozen: Sequence[int] = (),
              projections: Sequence[str] = PROJECTIONS, per_projection: bool = False,
              mri: Sequence[Sequence[float]] | None = None, precision: float = 1e-4) -> "Layout":
        frozen_t = tuple(sorted(set(int(f) for f in frozen)))
        free = [layer for layer in range(num_layers) if layer not in frozen_t]
        slots = tuple((layer, p) for layer in free for p in projections) if per_projection else \
            tuple((layer, None) for layer in free)
        prior = tuple(tuple(float(v) for v in row) for row in mri) if mri is not None else None
        if prior is not None and len(prior) != num_layers:
            raise ValueError(f"MRI prior has {len(prior)} layers, the talker {num_layers}")
        return cls(num_layers, float(alpha_max), frozen_t, tuple(projections), per_projection, slots, prior,
                   float(precision))

    @property
    def has_trust(self) -> bool:
        return self.mri is not None

    @property
    def dim(self) -> int:
        return len(self.slots) + (1 if self.has_trust else 0)

    # ------------------------------------------------------------------ unit box <-> genes

    def start_point(self, start: float, trust: float = 0.5) -> list[float]:
        x = [start / self.alpha_max] * len(self.slots)
        return x + ([trust] if self.has_trust else [])

    def genes(self, x: Sequence[float]) -> dict[str, Any]:
        """A unit-box point -> rounded genes ``{"genes": [...], "trust": t | None}`` (clipped to the bounds)."""
        if len(x) != self.dim:
            raise ValueError(f"expected {self.dim} values, got {len(x)}")
        q = self.precision
        genes = [_round(min(max(float(v), 0.0), 1.0) * self.alpha_max, q) for v in x[:len(self.slots)]]
        genes = [min(g, self.alpha_max) for g in genes]
        trust = _round(min(max(float(x[-1]), 0.0), 1.0), q) if self.has_trust else None
        return {"genes": genes, "trust": trust}

    def unit(self, genome: dict[str, Any]) -> list[float]:
        """Rounded genes -> the unit-box point (what CMA-ES is told for a cached candidate)."""
        x = [g / self.alpha_max for g in genome["genes"]]
        return x + ([float(genome["trust"])] if self.has_trust else [])

    def flat(self, alpha: float) -> dict[str, Any]:
        """The flat schedule (every gene ``alpha``, trust 0: the prior ignored)."""
        return {"genes": [_round(alpha, self.precision)] * len(self.slots), "trust": 0.0 if self.has_trust else None}

    # ------------------------------------------------------------------ genes -> ratios

    def ratios(self, genome: dict[str, Any]) -> dict[str, list[float]]:
        """Final ratio per projection and layer: ``{"gate": [...num_layers], ...}``; frozen layers are 0."""
        genes = genome["genes"]
        trust = float(genome.get("trust") or 0.0)
        out = {p: [0.0] * self.num_layers for p in self.projections}
        for (layer, proj), g in zip(self.slots, genes):
            for p in ([proj] if proj else self.projections):
                value = g
                if self.mri is not None:
                    col = self.mri[layer]
                    prior = col[self.projections.index(p)] if len(col) > 1 else col[0]
                    value = trust * prior + (1.0 - trust) * g
                out[p][layer] = value
        for layer in self.frozen:
            for p in self.projections:
                out[p][layer] = 0.0
        return out

    def schedule(self, genome: dict[str, Any]) -> Any:
        """``alpha_per_layer`` for the blend: one list (same ratio for every projection) or a per-projection mapping."""
        r = self.ratios(genome)
        lists = [r[p] for p in self.projections]
        if all(v == lists[0] for v in lists[1:]):
            return list(lists[0])
        return {p: list(r[p]) for p in self.projections}

    def blend_settings(self, genome: dict[str, Any]) -> dict[str, Any]:
        """``apply_blend_to_model`` / ``BlendConfig`` keyword arguments of this genome."""
        return {"alpha_per_layer": self.schedule(genome), "freeze_layers": list(self.frozen),
                "tensors": list(self.projections)}


def _round(v: float, q: float) -> float:
    """Round to the grid of step ``q``, written with as few digits as the grid needs (0.0312, not 0.03120000001)."""
    digits = max(0, -int(math.floor(math.log10(q)))) + 2
    return round(round(v / q) * q, digits)


def genome_key(genome: dict[str, Any]) -> str:
    """The cache key: sha256 of the rounded genes (and trust) as canonical JSON."""
    text = json.dumps({"genes": list(genome["genes"]), "trust": genome.get("trust")}, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def mri_prior(rel_distance: Sequence[Sequence[float]], start: float, alpha_max: float,
              frozen: Sequence[int] = ()) -> list[list[float]]:
    """Equal-displacement prior from the MRI's ``rel_distance`` grid [layer][projection] (see the module doc)."""
    free = [v for layer, row in enumerate(rel_distance) if layer not in set(frozen) for v in row
            if math.isfinite(v) and v > 0]
    mean = sum(free) / len(free) if free else 0.0
    out = []
    for row in rel_distance:
        out.append([min(alpha_max, start * mean / v) if math.isfinite(v) and v > 0 else 0.0 for v in row])
    return out
