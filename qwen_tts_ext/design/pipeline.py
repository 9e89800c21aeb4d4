"""``design-voice``: describe a voice in words, render a judged corpus with VoiceDesign, lock it by SFT.

    checks (nothing loads) -> render takes (designer + description, sentences x seeds)
    -> judge (resemblyzer identity centroid; distillmos / asr / timing gates) -> kept.jsonl + rejects.jsonl
    -> data prep (qwen_tts_ext.prep.prepare) -> SFT (qwen_tts_ext.train.loop.train): a custom_voice export
       with the new speaker next to any built-in ones, plus a card (description, designer, thresholds)
    -> consistency report: (a) designer re-described per line vs (b) the locked speaker with emotion tags.

Output folder (built beside ``--output`` and renamed into place when complete): ``takes/`` (WAVs +
takes.jsonl), ``selection/`` (scores.jsonl, kept.jsonl, rejects.jsonl, selection.json), ``prepared/``,
``run/`` (the SFT run; ``run/export`` is the checkpoint), ``report/`` (consistency.md/json and its clips),
``design.json`` (settings, versions, counts). Takes are rendered in ``.OUTPUT.design-work/`` beside the
output (keyed by the settings that shape a take) and moved in at the end, so a failed or interrupted run
resumes rendering where it stopped. Paths recorded inside ``prepared/`` and ``run/`` name the folders they
were written in (the work and build folders).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from qwen_tts_ext.command import emit
from qwen_tts_ext.design.config import DesignConfig
from qwen_tts_ext.design.render import read_extra_takes, read_sentences, split_sentences
from qwen_tts_ext.errors import UserError

COMMAND = "design-voice"


@dataclass
class Ready:
    designer: Path
    model: Path
    model_type: str
    speaker_encoder: str
    train_sentences: list[str]
    report_sentences: list[str]
    extra: list[dict]
    output: Path
    notes: list[str]


def _attempt(problems: list, fn, default=None):
    try:
        return fn()
    except UserError as exc:
        problems.append(exc)
        return default


def _sub_config(cls, path, overrides: list[str], group: str):
    """Build a prep/SFT config from its own keys so a bad override is refused before anything renders."""
    from qwen_tts_ext.config import load_config

    try:
        return load_config(cls, path, overrides)
    except UserError as exc:
        raise UserError(*(f"{group}: {p}" for p in exc.problems)) from None


def check(cfg: DesignConfig) -> Ready:
    """Every check that needs no model; all problems at once (one UserError)."""
    from qwen_tts_ext.checkpoint_io import read_config, require_tts_checkpoint
    from qwen_tts_ext.devices import resolve_device
    from qwen_tts_ext.evaluation.judges import judge_class
    from qwen_tts_ext.outputs import check_output_dir
    from qwen_tts_ext.prep import PrepareConfig
    from qwen_tts_ext.synthesis.emotions import load_emotions
    from qwen_tts_ext.train.config import SFTConfig

    cfg.check()
    problems: list = []
    notes: list[str] = []
    designer = _attempt(problems, lambda: require_tts_checkpoint(cfg.designer, what="--designer",
                                                                 types=("voice_design",), llm_flag=None))
    model = _attempt(problems, lambda: require_tts_checkpoint(cfg.model, what="--model", types=("base", "custom_voice"),
                                                              llm_flag=None))
    model_type = ""
    if model is not None:
        mcfg = read_config(model)
        model_type = str(mcfg.get("tts_model_type", "base"))
        builtin = {str(s).lower() for s in (mcfg.get("talker_config", {}).get("spk_id") or {})}
        if cfg.name in builtin:
            problems.append(f"--name {cfg.name!r} is a built-in speaker of {model}; choose another name "
                            f"(built-in: {', '.join(sorted(builtin))})")
        if model_type == "custom_voice" and not cfg.speaker_encoder:
            problems.append(f"--model {model} is a CustomVoice checkpoint (no speaker encoder): pass "
                            "--speaker-encoder BASE_CKPT of the same size for data prep's x-vectors")
    if cfg.speaker_encoder:
        _attempt(problems, lambda: require_tts_checkpoint(cfg.speaker_encoder, what="--speaker-encoder",
                                                          types=("base",), llm_flag=None))
    resolved = _attempt(problems, lambda: resolve_device(cfg.device, cfg.dtype))
    if resolved is not None:
        cfg.device, cfg.dtype = resolved  # what "auto" means on this machine, from here on
    sentences = _attempt(problems, lambda: _sentences(cfg), [])
    train_s, report_s, overlap = split_sentences(sentences, cfg.render.num_sentences, cfg.report.sentences)
    if sentences and overlap and cfg.report.sentences:
        notes.append(f"the sentence list ({len(sentences)}) is too short to hold out {cfg.report.sentences} report "
                     "sentences: the report reuses training sentences")
    extra = _attempt(problems, lambda: read_extra_takes(cfg.render.extra_takes), []) if cfg.render.extra_takes else []
    for name in cfg.filter.judges:
        try:
            judge_class(name)
        except KeyError as exc:
            problems.append(f"filter.judges: {exc.args[0]}")
    emotions = load_emotions()
    unknown = [t for t in cfg.report.emotion_tags if not emotions.resolve(t).known]
    if unknown:
        notes.append("report tag(s) not in configs/emotions.yaml, used as free-text instructions: "
                     + ", ".join(unknown))
    if not Path(cfg.sft_recipe).expanduser().is_file():
        problems.append(f"sft_recipe {cfg.sft_recipe} does not exist (a configs/sft_*.yaml recipe)")
    else:
        _attempt(problems, lambda: _sub_config(SFTConfig, cfg.sft_recipe, [
            *cfg.overrides("sft"), "model=x", "data.path=x", "output_dir=x"], "sft"))
    _attempt(problems, lambda: _sub_config(PrepareConfig, None, [
        *cfg.overrides("prepare"), "manifest=x", "model=x", "output=x"], "prepare"))
    out = _attempt(problems, lambda: check_output_dir(cfg.output, command=COMMAND, overwrite=cfg.overwrite, inputs={
        "--designer": cfg.designer, "--model": cfg.model, "--speaker-encoder": cfg.speaker_encoder}))
    if out is not None and work_dir(out).exists() and not (work_dir(out) / "fingerprint.json").is_file():
        problems.append(f"{work_dir(out)} is in the way (not a design-voice work folder: no fingerprint.json); "
                        "move it away")
    UserError.collect(problems)
    return Ready(designer, model, model_type, cfg.speaker_encoder, train_s, report_s, extra, out, notes)


def work_dir(output: Path) -> Path:
    """Where takes are rendered until the run completes (beside ``--output``): a rerun resumes from it."""
    return output.parent / f".{output.name}.design-work"


def render_fingerprint(cfg: DesignConfig, designer: Path) -> dict:
    """Everything besides a take's text and seed that shapes its audio (a change starts the takes over)."""
    r = cfg.render
    return {"designer": str(designer), "description": cfg.description, "language": r.language, "dtype": cfg.dtype,
            "sampling": [r.temperature, r.top_k, r.top_p], "cap": [r.cap_margin, r.cap_slack_seconds,
                                                                 r.max_segment_seconds]}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _sentences(cfg: DesignConfig) -> list[str]:
    from qwen_tts_ext.design.config import SENTENCES_DIR

    path = cfg.sentences_file()
    if not cfg.render.sentences and not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in SENTENCES_DIR.glob("*.txt"))) or "(none found)"
        raise UserError(f"no shipped sentence list for --language {cfg.render.language!r} (shipped: {shipped}); "
                        "pass --sentences FILE with one sentence a line")
    return read_sentences(path)


def _bar(total: int, desc: str, cfg: DesignConfig):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, disable=not cfg.progress, leave=False)


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    import qwen_tts_ext

    out: dict[str, str | None] = {"qwen_tts_ext": qwen_tts_ext.__version__}
    for dist in ("torch", "qwen-tts", "transformers", "resemblyzer", "distillmos", "numpy"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def _read_24k(path: Path):
    """Any soundfile-readable clip as mono float32 at 24 kHz (a very short take is judged, not refused)."""
    import soundfile as sf

    from qwen_tts_ext.evaluation.judges import resample

    audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return resample(audio.mean(axis=1), sr, 24000)


def judge_takes(records: list[dict], cfg: DesignConfig, tmp: Path, root: Path) -> tuple[list[dict], list[dict], Any,
                                                                                    list[str]]:
    """Score every take (``root / audio``), run the identity filter and the gates; write ``tmp/selection/``.
    Returns ``(kept, rejects, identity, notes)``."""
    from qwen_tts_ext.design.select import identity_filter, select
    from qwen_tts_ext.evaluation.judges import Clip, load_judge, load_judges, score_clips

    speaker = load_judge("speaker")
    if speaker is None:
        raise UserError("the identity filter needs the speaker judge: pip install webrtcvad-wheels==2.0.14.post1 && "
                        "pip install --no-deps resemblyzer==0.1.4")
    judges, notes = load_judges(cfg.filter.judges)
    clips, embeddings = [], []
    bar = _bar(len(records), "embed takes", cfg)
    for rec in records:
        audio = _read_24k(root / rec["audio"])  # a relative take path, or an extra take's absolute one
        meta = {} if rec["stopped_by_eos"] is None else {k: rec[k] for k in ("stopped_by_eos", "frames", "frame_cap")}
        clips.append(Clip(audio, 24000, id=rec["id"], text=rec["text"], language=rec["language"], meta=meta))
        embeddings.append(speaker.embed(audio, 24000))
        bar.update(1)
    bar.close()
    bar = _bar(len(clips), "judge takes", cfg)
    rows = score_clips(clips, judges, progress=bar.update)
    bar.close()
    f = cfg.filter
    identity = identity_filter(embeddings, f.max_distance, f.mad_k, f.centroid_rounds)
    kept, rejects, gate_notes = select(records, rows, identity, f)
    sel = tmp / "selection"
    sel.mkdir()
    from qwen_tts_ext.prep.report import write_jsonl

    write_jsonl(sel / "scores.jsonl", [{**rec, **row} for rec, row in zip(records, rows)])
    write_jsonl(sel / "kept.jsonl", kept)
    write_jsonl(sel / "rejects.jsonl", rejects)
    from collections import Counter

    summary = {"takes": len(records), "kept": len(kept), "rejected": len(rejects),
               "rejected_by_reason": dict(sorted(Counter(r["reason"] for r in rejects).items())),
               "identity_rounds": identity.rounds, "identity_threshold": round(identity.threshold, 4),
               "judges": [j.name for j in judges], "notes": notes + gate_notes, "filter": asdict(f)}
    (sel / "selection.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    if identity.centroid is not None:
        import numpy as np

        np.save(sel / "identity_centroid.npy", identity.centroid)
    return kept, rejects, identity, notes + gate_notes


def run(cfg: DesignConfig) -> int:
    ready = check(cfg)
    for note in ready.notes:
        print(f"note: {note}", file=sys.stderr)
    from qwen_tts_ext.outputs import output_dir

    t0 = time.perf_counter()
    with output_dir(ready.output, command=COMMAND, overwrite=cfg.overwrite, marker={"name": cfg.name}) as tmp:
        result = build(cfg, ready, tmp)
        result["seconds"] = round(time.perf_counter() - t0, 1)
        (tmp / "design.json").write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str),
                                         encoding="utf-8")
    out = ready.output
    emit(f"export: {out / 'run' / 'export'}")
    emit(f"speaker: {cfg.name} ({result['selection']['kept']} of {result['selection']['takes']} takes kept)")
    if result.get("consistency"):
        emit(f"report: {out / 'report' / 'consistency.md'}")
    return 0


def build(cfg: DesignConfig, ready: Ready, tmp: Path) -> dict:
    """Everything after the checks, inside the build folder ``tmp``; returns design.json's content."""
    from qwen_tts_ext.design import lock, render

    work = work_dir(ready.output)
    fingerprint = render_fingerprint(cfg, ready.designer)
    if work.is_dir() and _read_json(work / "fingerprint.json") != fingerprint:
        shutil.rmtree(work)  # ours (check() saw its fingerprint), rendered with other settings
    (work / "takes").mkdir(parents=True, exist_ok=True)
    (work / "fingerprint.json").write_text(json.dumps(fingerprint, indent=2, ensure_ascii=False), encoding="utf-8")
    done = len(list((work / "takes").glob("*.json")))
    if done:
        print(f"resuming: {done} take(s) already rendered in {work}", file=sys.stderr)
    tts = render.load_designer(ready.designer, cfg.device, cfg.dtype)
    bar = _bar(len(ready.train_sentences) * cfg.render.takes, "render takes", cfg)
    records = render.render_takes(tts, ready.train_sentences, cfg.description, cfg.render, work / "takes",
                                  tick=lambda: bar.update(1))
    bar.close()
    records += render.extra_take_records(ready.extra, cfg.render.language)
    from qwen_tts_ext.prep.report import write_jsonl

    kept, rejects, identity, notes = judge_takes(records, cfg, tmp, work)
    from collections import Counter

    why = ", ".join(f"{n} {reason}" for reason, n in sorted(Counter(r["reason"] for r in rejects).items()))
    print(f"kept {len(kept)} of {len(records)} takes" + (f"; dropped: {why}" if why else ""), file=sys.stderr)
    if len(kept) < cfg.filter.min_kept:
        raise UserError(f"only {len(kept)} take(s) passed the filter (filter.min_kept={cfg.filter.min_kept}); see "
                        "the reasons above. Render more (render.num_sentences, render.takes) or loosen the filter "
                        f"(filter.max_distance, filter.max_cer, ...); no output was written, and the rendered takes "
                        f"stay in {work} for a rerun with the same designer, description and sampling")
    export = lock.prepare_and_train(cfg, ready, kept, tmp, work)
    selection = json.loads((tmp / "selection" / "selection.json").read_text())
    consistency = None
    if ready.report_sentences:
        consistency = lock.consistency_report(cfg, ready, tts, export, identity.centroid, tmp)
    del tts
    design = {
        "command": COMMAND, "description": cfg.description, "name": cfg.name, "designer": str(ready.designer),
        "model": str(ready.model), "speaker_encoder": ready.speaker_encoder, "config": asdict(cfg),
        "versions": _versions(), "selection": {k: selection[k] for k in ("takes", "kept", "rejected",
                                                                          "rejected_by_reason", "identity_threshold")},
        "train_sentences": len(ready.train_sentences), "report_sentences": ready.report_sentences,
        "notes": ready.notes + notes,
        "consistency": None if consistency is None else {k: consistency[k] for k in (
            "designer_redescribed", "locked_speaker", "locked_tighter")},
    }
    lock.write_card(export, design)
    (export / "design.json").write_text(json.dumps(design, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    os.replace(work / "takes", tmp / "takes")  # the work folder's takes become the output's (same parent folder)
    write_jsonl(tmp / "takes" / "takes.jsonl", records)
    shutil.rmtree(work)
    return design
