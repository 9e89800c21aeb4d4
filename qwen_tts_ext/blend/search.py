"""The Darwin genome search end to end (what ``qwen-tts-ext search`` runs).

1. :func:`preflight`: everything checkable without a model (settings, what each folder is, that the LLM
   blends into the talker, the frozen layers against the talker's depth, the voice, the run folder and
   ``--blend``'s folder, the device, the judges);
2. :func:`run`: load the model once, measure alpha 0 (the baseline every term is normalised against) and
   the flat 3% start, then CMA-ES (:mod:`blend.search_optim`) over the genome (:mod:`blend.search_genome`),
   each candidate blended in memory and measured (:mod:`blend.search_eval`), scored
   (:mod:`blend.search_fitness`) and journaled (:mod:`blend.search_journal`) before the next starts;
3. the report (:mod:`blend.search_report`) and, with ``--blend OUT``, the best checkpoint written by the
   blend command with the search's settings in its ``darwin_blend.json``.

The run folder (``--output``) is marked as this command's when the search starts; it holds
``journal.jsonl`` and ``baseline_audio.npz`` while it runs, and ``best_genome.yaml``, ``search.json``,
``search.md`` and ``search.png`` (each written beside its name and renamed into place) when it ends.
``--resume`` continues a killed search without repeating any finished evaluation; ``--overwrite`` starts
over, removing only the files listed in ``OWN_FILES``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qwen_tts_ext.blend.search_config import FLAT_ALPHA, SearchConfig
from qwen_tts_ext.command import emit
from qwen_tts_ext.errors import UserError

COMMAND = "search"
JOURNAL = "journal.jsonl"
BASELINE_AUDIO = "baseline_audio.npz"
REPORT_FILES = ("best_genome.yaml", "search.json", "search.md", "search.png")
OWN_FILES = (JOURNAL, BASELINE_AUDIO, *REPORT_FILES)


@dataclass
class Ready:
    model_dir: Path
    llm_dir: Path
    out: Path
    blend_out: Path | None
    device: str
    dtype: str
    num_layers: int
    frozen: list[int]
    projections: tuple[str, ...]
    judges: list[str]


def preflight(cfg: SearchConfig) -> Ready:
    from qwen_tts_ext.blend.plan import parse_layers, parse_tensors
    from qwen_tts_ext.checkpoint_io import read_config, require_llm_checkpoint, require_tts_checkpoint
    from qwen_tts_ext.devices import resolve_device
    from qwen_tts_ext.evaluation.pipeline import check_blendable, check_voice
    from qwen_tts_ext.outputs import check_output_dir, owner

    cfg.check()
    model_dir = require_tts_checkpoint(cfg.runtime.model, what="--model", types=("base", "custom_voice"))
    llm_dir = require_llm_checkpoint(cfg.llm, what="--llm")
    model_config = read_config(model_dir)
    num_layers = int((model_config.get("talker_config") or {}).get("num_hidden_layers", 0))
    g = cfg.genome
    problems: list[Any] = []
    try:
        frozen = parse_layers(g.freeze_layers, num_layers, "genome.freeze_layers")
    except UserError as exc:
        problems.append(exc)
        frozen = []
    projections = parse_tensors(g.tensors)
    genes = (num_layers - len(frozen)) * (len(projections) if g.per_projection else 1) + (1 if g.mri_prior else 0)
    if not problems and genes < 2:
        problems.append(f"only {genes} gene(s) left to search (the talker has {num_layers} layers, "
                        f"{len(frozen)} frozen); CMA-ES needs at least 2")
    judges = check_judges(cfg.fitness.judges)
    if cfg.fitness.asr:
        from qwen_tts_ext.evaluation.pipeline import check_asr_dir

        try:
            check_asr_dir(cfg.fitness.asr)
        except UserError as exc:
            problems.append(exc)
    try:
        check_voice(cfg, model_dir, model_config)
    except UserError as exc:
        problems.append(exc)
    UserError.collect(problems)

    inputs = {"--model": model_dir, "--llm": llm_dir}
    out = check_output_dir(cfg.output, command=COMMAND, overwrite=True, inputs=inputs)
    if out.is_dir() and any(out.iterdir()) and owner(out) == COMMAND:
        if not (cfg.resume or cfg.overwrite):
            state = "a finished search" if (out / "search.json").is_file() else "an unfinished search"
            raise UserError(f"--output {out} holds {state}; pass --resume to continue it (nothing finished is "
                            "measured again) or --overwrite to start over")
    if cfg.resume and not (out / JOURNAL).is_file():
        raise UserError(f"--resume: {out} holds no search journal ({JOURNAL}); run without --resume to start one")
    blend_out = None
    if cfg.blend:
        blend_out = check_output_dir(cfg.blend, command="blend", overwrite=cfg.overwrite, flag="--blend",
                                     inputs={**inputs, "--output": out})
        if blend_out == out:
            raise UserError("--blend and --output are the same folder; give the checkpoint its own folder")
    device, dtype = resolve_device(cfg.runtime.device, cfg.runtime.dtype)
    check_blendable(model_dir, llm_dir, g.alpha_max)
    return Ready(model_dir, llm_dir, out, blend_out, device, dtype, num_layers, frozen, projections, judges)


def check_judges(names: list[str]) -> list[str]:
    import difflib

    from qwen_tts_ext.evaluation.judges import JUDGES

    problems = []
    for n in names:
        if n not in JUDGES:
            close = difflib.get_close_matches(n, list(JUDGES), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"fitness.judges: unknown judge {n!r}{hint}; choose from {', '.join(JUDGES)} ([] for none)")
    UserError.collect(problems)
    return list(names)


def _start_run_folder(cfg: SearchConfig, ready: Ready) -> None:
    from qwen_tts_ext.outputs import write_marker

    out = ready.out
    out.mkdir(parents=True, exist_ok=True)
    if cfg.overwrite:
        for name in OWN_FILES:
            (out / name).unlink(missing_ok=True)
    if not cfg.resume:
        write_marker(out, COMMAND)


def _mri_grid(ready: Ready) -> list[list[float]]:
    """rel_distance[layer][projection] of the two parents (the blend MRI, streamed from disk)."""
    from qwen_tts_ext.blend import mri
    from qwen_tts_ext.blend.config import BlendConfig
    from qwen_tts_ext.blend.pipeline import plan_for
    from qwen_tts_ext.blend.stream_io import StreamingCheckpoint

    with StreamingCheckpoint(ready.model_dir) as tts, StreamingCheckpoint(ready.llm_dir) as llm:
        plan = plan_for(tts, llm, BlendConfig(tts=str(ready.model_dir), llm=str(ready.llm_dir),
                                              tensors=list(ready.projections)))
        report = mri.build_report(plan, mri.measure(plan, tts, llm), {})
    return report["grid"]["rel_distance"]


def _save_npz(path: Path, audio: dict) -> None:
    import numpy as np

    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.npz")
    with open(tmp, "wb") as fh:
        np.savez(fh, **audio)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def run(cfg: SearchConfig) -> int:
    """``qwen-tts-ext search``: check, load, baseline, search, report (and blend the best)."""
    ready = preflight(cfg)
    import logging

    from qwen_tts_ext.synthesis.synthesize import quiet_transformers

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    logging.getLogger("qwen_tts_ext.synthesis").setLevel(logging.ERROR)  # per-segment tag warnings, once per utterance
    quiet_transformers()
    import numpy as np
    from tqdm.auto import tqdm

    from qwen_tts_ext.blend import search_report
    from qwen_tts_ext.blend.search_eval import Evaluator
    from qwen_tts_ext.blend.search_fitness import active_weights, directions, fitness
    from qwen_tts_ext.blend.search_genome import Layout, genome_key, mri_prior
    from qwen_tts_ext.blend.search_journal import Journal
    from qwen_tts_ext.blend.search_optim import best_of, optimize
    from qwen_tts_ext.blend.stream_io import StreamingCheckpoint
    from qwen_tts_ext.outputs import output_files
    from qwen_tts_ext.synthesis.engine import Synthesizer

    g, opt, fit = cfg.genome, cfg.optimizer, cfg.fitness
    notes: list[str] = []
    prior = None
    if g.mri_prior:
        prior = mri_prior(_mri_grid(ready), g.start, g.alpha_max, ready.frozen)
    layout = Layout.build(ready.num_layers, alpha_max=g.alpha_max, frozen=ready.frozen, projections=ready.projections,
                          per_projection=g.per_projection, mri=prior, precision=g.precision)
    synth = Synthesizer.load(ready.model_dir, device=ready.device, dtype=ready.dtype)
    v = cfg.voice
    voice = synth.voice(speaker=v.speaker or None, ref_audio=(v.ref_audio or None) if synth.model_type == "base" else None,
                        speakers_file=v.speakers_file or None)
    wanted = dict(fit.weights)  # the fitness weights this model can use
    if fit.emotions and synth.ignores_instructions:
        notes.append(f"this {synth.model_size} model ignores instructions, so every emotion tag renders the same: "
                     "the contrast term is left out (set fitness.emotions: [] to skip those renderings)")
        wanted.pop("contrast", None)
    elif fit.emotions and synth.model_type == "base":
        notes.append("a Base checkpoint was not trained with instructions: the emotion contrast may barely move "
                     "(search a custom_voice export from `qwen-tts-ext sft`)")
    judges = []
    if ready.judges:
        from qwen_tts_ext.evaluation.judges import load_judges

        options = {"checkpoint": str(ready.model_dir)} if "speaker_ecapa" in ready.judges and \
            synth.model_type == "base" else {}
        if fit.asr and "asr" in ready.judges:
            options["asr"] = str(Path(fit.asr).expanduser().resolve())
        judges, skipped = load_judges(ready.judges, **options)
        for note in skipped:
            notes.append(note)
            print(f"warning: {note}", file=sys.stderr)
    language = None if str(cfg.synthesis.language).lower() == "auto" else cfg.synthesis.language

    _start_run_folder(cfg, ready)
    settings = cfg.search_settings()
    journal = Journal.open(ready.out / JOURNAL, settings, resume=cfg.resume)
    llm_ck = StreamingCheckpoint(ready.llm_dir)
    ev = Evaluator(synth, voice, cfg.synthesis, fit, judges, llm_ck, language)
    t_start = time.perf_counter()
    try:
        # alpha 0: measured once, its audio kept for the speaker-similarity reference
        base = journal.of_kind("baseline")
        audio_file = ready.out / BASELINE_AUDIO
        if base and audio_file.is_file():
            baseline = base[0]
            with np.load(audio_file) as z:
                ev.baseline_audio = {k: z[k] for k in z.files}
        else:
            print("measuring alpha 0 (the baseline) ...", file=sys.stderr)
            metrics, audio = ev.measure(None)
            _save_npz(audio_file, audio)
            ev.baseline_audio = audio
            baseline = base[0] if base else {"kind": "baseline", "metrics": metrics, "fitness": 0.0}
            if not base:
                journal.append(baseline)
        bm = baseline["metrics"]
        if bm["cap_hits"]:
            raise UserError(f"alpha 0 already reaches the frame cap on {bm['cap_hits']} of {bm['segments']} "
                            "segment(s): the unblended model does not stop by itself, so no blend can be judged "
                            "against it; fix the checkpoint (or raise synthesis.cap_margin)")
        if opt.budget % opt.population:
            notes.append(f"budget {opt.budget} is not a multiple of the population {opt.population}: "
                         f"{opt.budget // opt.population} whole generations ran")
        weights = active_weights(wanted, bm)
        unmeasured = sorted(set(k for k, w in wanted.items() if w > 0) - set(weights))
        if unmeasured:
            notes.append(f"not in the fitness (not measured at alpha 0): {', '.join(unmeasured)}")

        def evaluate(genome: dict) -> tuple[float, dict]:
            metrics, _ = ev.measure(layout.blend_settings(genome))
            f, scores = fitness(metrics, bm, weights)
            return f, {"ratios": layout.ratios(genome), "schedule": layout.schedule(genome), "scores": scores,
                       "metrics": metrics}

        # the flat start (the card's 3%), measured for the comparison and as a candidate for the best
        flat_genome = layout.flat(FLAT_ALPHA)
        key = genome_key(flat_genome)
        flat = journal.cached(key)
        if flat is None:
            print(f"measuring the flat {FLAT_ALPHA:g} blend ...", file=sys.stderr)
            f, extra = evaluate(flat_genome)
            flat = {"kind": "flat", "key": key, "n": 0, **flat_genome, "fitness": f, **extra}
            journal.append(flat)

        generations = max(1, opt.budget // opt.population)
        bar = tqdm(total=generations * opt.population, desc="genome search", unit="eval", file=sys.stderr)
        best_f = [flat["fitness"]]

        def on_eval(record: dict, recalled: bool) -> None:
            best_f[0] = max(best_f[0], record["fitness"])
            bar.set_postfix(best=f"{best_f[0]:.4f}", s_per_eval=f"{record.get('seconds', 0):.1f}",
                            recalled="yes" if recalled else "no")
            bar.update(1)

        result = optimize(layout, evaluate, opt, journal, start=g.start, trust_start=g.trust_start,
                          seed_records=[flat], on_eval=on_eval)
        bar.close()
        seconds = time.perf_counter() - t_start
        best = best_of([flat, *result.evaluations])
    finally:
        ev.restore()
        llm_ck.close()
        journal.close()

    measured = [r for r in result.evaluations if "seconds" in r]
    report = {
        "settings": {"model": str(ready.model_dir), "llm": str(ready.llm_dir), "flat_alpha": FLAT_ALPHA,
                     "genes": layout.dim, "per_projection": g.per_projection, "mri_prior": g.mri_prior,
                     "alpha_max": g.alpha_max, "frozen_layers": list(ready.frozen),
                     "projections": list(ready.projections), "population": opt.population, "sigma0": opt.sigma0,
                     "seed": opt.seed, "budget": opt.budget, "weights": weights, "config": settings,
                     "versions": _versions()},
        "directions": directions(),
        "notes": notes,
        "mri_prior": prior,
        "baseline": baseline, "flat": flat, "best": best,
        "evaluations": result.evaluations, "evaluations_total": len(result.evaluations) + 2,
        "generations": result.generations, "measured": result.measured, "recalled": result.recalled,
        "cma_stop": result.stop, "seconds": seconds,
        "seconds_per_evaluation": (sum(r["seconds"] for r in measured) / len(measured)) if measured else None,
        "top_metrics": [k for k in weights if k != "duration"] + ["seconds"],
    }
    # unique keys in the top-k (a recalled repeat is the same candidate)
    seen, top = set(), []
    for r in sorted([flat, *result.evaluations], key=lambda r: -r["fitness"]):
        if r["key"] not in seen:
            seen.add(r["key"])
            top.append(r)
    report["top"] = top[:fit.top_rows]
    finals = [ready.out / name for name in REPORT_FILES]
    with output_files(*finals) as tmps:
        search_report.write(report, dict(zip(REPORT_FILES, tmps)))

    emit(f"best fitness {best['fitness']:.4f} (flat {FLAT_ALPHA:g}: {flat['fitness']:.4f}, alpha 0: 0) after "
         f"{len(result.evaluations)} candidates ({result.measured} measured, {result.recalled} recalled), "
         f"{seconds:.0f} s")
    emit(f"wrote {ready.out / 'best_genome.yaml'}, search.md, search.json, search.png")
    if ready.blend_out is not None:
        _blend_best(cfg, ready, layout, best, settings)
    return 0


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    import qwen_tts_ext

    out: dict[str, str | None] = {"qwen_tts_ext": qwen_tts_ext.__version__}
    for dist in ("cma", "torch", "qwen-tts", "transformers", "numpy"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def _blend_best(cfg: SearchConfig, ready: Ready, layout, best: dict, settings: dict) -> None:
    from qwen_tts_ext.blend.config import BlendConfig
    from qwen_tts_ext.blend.pipeline import blend_checkpoint

    bc = BlendConfig(tts=str(ready.model_dir), llm=str(ready.llm_dir), output=str(ready.blend_out),
                     overwrite=cfg.overwrite, **layout.blend_settings(best))
    search = {"search": {"run": str(ready.out), "fitness": best["fitness"], "genes": best["genes"],
                         "trust": best.get("trust"), "config": json.loads(json.dumps(settings, default=str))}}
    blend_checkpoint(bc, progress=None, result=emit, extra_provenance=search)
