"""The CMA-ES loop of the Darwin search, independent of any model: ask, evaluate (or recall), tell.

    result = optimize(layout, evaluate, OptimizerConfig(budget=96), journal, start=0.03)

``evaluate(genome) -> (fitness, extra)`` scores one rounded genome (higher is better); its record is
journaled before the next candidate starts. A genome already in the journal is not evaluated again:
its recorded fitness is told to CMA-ES instead. Because CMA-ES draws its samples from its own seeded
random state (kept apart from numpy's global one, which synthesis or judges may use) and every fitness
it is told is either measured or recalled, a search killed at any point and run again with the same
settings replays the same generations and ends with the same best genome as one that was never
interrupted.

Why pycma (``cma`` 4.5): the reference CMA-ES implementation by its author, ask/tell with box bounds,
seeded and dependency-free (numpy only); optuna's ``CmaEsSampler`` would add a storage and a study
model the journal already covers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qwen_tts_ext.blend.search_genome import Layout, genome_key


@dataclass
class SearchResult:
    best: dict[str, Any]  # the record of the best evaluation (genes, trust, fitness, ...)
    evaluations: list[dict[str, Any]] = field(default_factory=list)  # every candidate in order (recalled ones too)
    measured: int = 0  # evaluations run in this process
    recalled: int = 0  # candidates answered from the journal (a resume, or a repeat)
    generations: int = 0
    stop: dict[str, Any] = field(default_factory=dict)  # CMA-ES's own stop conditions, if any fired


class _IsolatedRandom:
    """Run code with numpy's global random state swapped for a private one (pycma samples from the global one)."""

    def __init__(self, seed: int):
        saved = np.random.get_state()
        np.random.seed(seed)
        self.state = np.random.get_state()
        np.random.set_state(saved)

    def __enter__(self):
        self._outside = np.random.get_state()
        np.random.set_state(self.state)

    def __exit__(self, *exc):
        self.state = np.random.get_state()
        np.random.set_state(self._outside)
        return False


def optimize(
    layout: Layout,
    evaluate: Callable[[dict[str, Any]], tuple[float, dict[str, Any]]],
    opt: Any,
    journal: Any,
    *,
    start: float,
    trust_start: float = 0.5,
    seed_records: list[dict[str, Any]] | None = None,
    on_eval: Callable[[dict[str, Any], bool], None] | None = None,
) -> SearchResult:
    """Run CMA-ES for ``opt.budget // opt.population`` generations; return the best candidate.

    ``opt``: an ``OptimizerConfig`` (population, sigma0, budget, seed). ``journal``: a ``Journal`` (or anything
    with ``cached(key)`` and ``append(record)``). ``seed_records``: evaluations made before the search (the
    flat start) that count as candidates for the best. ``on_eval(record, recalled)`` after each candidate.
    """
    import cma

    if layout.dim < 2:
        raise ValueError("CMA-ES needs at least two genes (freeze fewer layers)")
    rng = _IsolatedRandom(int(opt.seed))
    options = {"popsize": int(opt.population), "bounds": [0.0, 1.0], "seed": int(opt.seed), "verbose": -9,
               "verb_log": 0, "verb_disp": 0, "tolfun": 0, "tolflatfitness": 10**9}
    with rng:
        es = cma.CMAEvolutionStrategy(layout.start_point(start, trust_start), float(opt.sigma0), options)
    generations = max(1, int(opt.budget) // int(opt.population))
    result = SearchResult(best={})
    pool: list[dict[str, Any]] = list(seed_records or [])
    n = 0
    for gen in range(generations):
        with rng:
            xs = es.ask()
        losses = []
        for x in xs:
            genome = layout.genes(x)
            key = genome_key(genome)
            record = journal.cached(key)
            recalled = record is not None
            if record is None:
                t0 = time.perf_counter()
                fitness, extra = evaluate(genome)
                record = {"kind": "eval", "key": key, "n": n + 1, "generation": gen, **genome, "fitness": float(fitness),
                          "seconds": time.perf_counter() - t0, **extra}
                journal.append(record)
                result.measured += 1
            else:
                result.recalled += 1
            n += 1
            result.evaluations.append(record)
            pool.append(record)
            losses.append(-float(record["fitness"]))  # CMA-ES minimises
            if on_eval is not None:
                on_eval(record, recalled)
        with rng:
            es.tell(xs, losses)
        result.generations = gen + 1
    result.stop = {k: (v if isinstance(v, (int, float, str)) else str(v)) for k, v in dict(es.stop()).items()}
    result.best = best_of(pool)
    return result


def best_of(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The highest fitness; the earliest one on a tie (so every run of the same search picks the same)."""
    best = None
    for r in records:
        if best is None or float(r["fitness"]) > float(best["fitness"]):
            best = r
    return best or {}
