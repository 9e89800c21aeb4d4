"""Judge any audio offline (what ``qwen-tts-ext score`` runs): per-clip scores and a summary.

1. :func:`preflight` checks everything before a judge loads: ``--audio`` and where each clip's transcript
   comes from (:mod:`qwen_tts_ext.evaluation.score_inputs`), ``--ref-audio`` (readable),
   ``--judges`` (known names, with a did-you-mean), ``--asr`` (a model folder), ``--speaker-encoder`` (a
   Base checkpoint), ``--language`` and the report folder (the output policy of
   :mod:`qwen_tts_ext.outputs`). A clip that cannot be decoded is not fatal: it is reported in its row
   (``status``/``message``, as data prep's rejects), like a reference clip of a manifest row that cannot.
2. :func:`score_specs` decodes the clips a few at a time (memory stays flat on large folders) and runs
   every judge on each chunk (two side by side on 2+ cores), timing each judge.
3. :func:`run` writes (:mod:`qwen_tts_ext.evaluation.score_report`) ``scores.csv`` (one row per clip, one
   column per metric), ``scores.json`` (rows, summary, the judges that ran and those skipped with their
   install line, timing, settings) and ``scores.md`` (summary table with each metric's direction, then the
   per-clip table) into a temp folder that becomes ``--out-dir`` when complete; the summary table and the
   ``wrote ...`` line go to stdout.

Metric names and directions come from the judge registry (:func:`qwen_tts_ext.evaluation.judges.metric_info`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import difflib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from qwen_tts_ext.command import emit
from qwen_tts_ext.config import config_to_dict
from qwen_tts_ext.errors import UserError
from qwen_tts_ext.evaluation.score_config import ScoreConfig
from qwen_tts_ext.evaluation.score_inputs import (ClipSpec, discover, language_name, load_clip_audio,
                                                supported_languages)
from qwen_tts_ext.evaluation.score_report import summarize, summary_table, write_reports

COMMAND = "score"
CHUNK = 8  # clips decoded and judged together


# --------------------------------------------------------------------------- what to score


@dataclass
class Ready:
    """What :func:`preflight` found."""

    specs: list[ClipSpec]
    kind: str  # "folder", "file", "manifest"
    text_source: str
    judge_names: list[str] | None  # None: every installed judge
    options: dict[str, Any]  # passed to the registry's load_judges (checkpoint=, asr=)
    ref: Any  # (audio, sr) of --ref-audio, or None
    language: str | None  # --language (None: auto)
    out: Path


def default_out_dir() -> Path:
    return Path("outputs") / f"score-{_dt.datetime.now():%Y%m%d-%H%M%S}"


def _judge_names(cfg: ScoreConfig) -> list[str] | None:
    from qwen_tts_ext.evaluation.judges import JUDGES

    names = list(cfg.judges)
    problems = []
    for n in names:
        if n not in JUDGES:
            close = difflib.get_close_matches(n, list(JUDGES), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"unknown judge {n!r}{hint}; choose from {', '.join(JUDGES)}")
    UserError.collect(problems)
    if "speaker_ecapa" in names and not cfg.speaker_encoder:
        raise UserError("judge speaker_ecapa needs --speaker-encoder BASE_CKPT (the Qwen3-TTS Base checkpoint whose "
                        "speaker encoder it uses)")
    if not names:
        return None
    if cfg.speaker_encoder and "speaker_ecapa" not in names:
        names.append("speaker_ecapa")  # the flag asks for it
    if cfg.asr and "asr" not in names:
        names.append("asr")
    return names


def preflight(cfg: ScoreConfig) -> Ready:
    """Every check that needs no judge loaded; one UserError listing the problems found."""
    from qwen_tts_ext.outputs import check_output_dir
    from qwen_tts_ext.prep.audio import Rejected

    cfg.check()
    problems: list[str | UserError] = []

    def attempt(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except UserError as exc:
            problems.append(exc)
            return None

    found = attempt(lambda: discover(cfg))
    language = None
    try:
        language = language_name(cfg.language)
    except Rejected:
        problems.append(f"--language {cfg.language!r} is not one of auto, {', '.join(sorted(supported_languages()))}")
    ref = None
    if cfg.ref_audio:
        path = Path(cfg.ref_audio).expanduser()
        if not path.exists():
            problems.append(f"--ref-audio {path} does not exist; give a clip of the intended speaker")
        else:
            try:
                ref = load_clip_audio(str(path))
            except Rejected as exc:
                problems.append(f"--ref-audio {path} cannot be used: {exc.message}")
    options: dict[str, Any] = {}
    if cfg.asr:
        from qwen_tts_ext.evaluation.pipeline import check_asr_dir

        options["asr"] = attempt(lambda: str(check_asr_dir(cfg.asr)))
    if cfg.speaker_encoder:
        from qwen_tts_ext.checkpoint_io import require_tts_checkpoint

        options["checkpoint"] = attempt(lambda: str(require_tts_checkpoint(
            cfg.speaker_encoder, what="--speaker-encoder", types=("base",), llm_flag=None)))
    if cfg.device.strip().lower() != "cpu":
        from qwen_tts_ext.devices import resolve_device

        options["device"] = attempt(lambda: resolve_device(cfg.device)[0])
    if cfg.threads:
        options["threads"] = cfg.threads
    names = attempt(lambda: _judge_names(cfg))
    out = attempt(lambda: check_output_dir(cfg.out_dir or default_out_dir(), command=COMMAND,
                                           overwrite=cfg.overwrite, flag="--out-dir"))
    UserError.collect(problems)
    specs, kind, text_source = found
    return Ready(specs, kind, text_source, names, options, ref, language, out)


# --------------------------------------------------------------------------- scoring


@dataclass
class Timing:
    load_seconds: float = 0.0
    score_seconds: float = 0.0  # decoding + every judge, wall clock
    decode_seconds: float = 0.0
    per_judge: dict[str, float] = field(default_factory=dict)
    audio_seconds: float = 0.0  # total duration of the clips scored
    clips: int = 0
    jobs: int = 1  # judges side by side

    def as_dict(self) -> dict[str, Any]:
        rate = self.clips / self.score_seconds if self.score_seconds > 0 else None
        rtf = self.audio_seconds / self.score_seconds if self.score_seconds > 0 else None
        return {"load_seconds": round(self.load_seconds, 3), "score_seconds": round(self.score_seconds, 3),
                "decode_seconds": round(self.decode_seconds, 3),
                "per_judge_seconds": {k: round(v, 3) for k, v in self.per_judge.items()},
                "jobs": self.jobs,
                "audio_seconds": round(self.audio_seconds, 3), "clips": self.clips,
                "clips_per_second": None if rate is None else round(rate, 3),
                "audio_seconds_per_second": None if rtf is None else round(rtf, 3)}


def _ref_loader(default_ref: Any) -> Callable[[ClipSpec], tuple[Any, str | None]]:
    """clip -> ((audio, sr) or None, problem); each reference file is decoded once."""
    from qwen_tts_ext.prep.audio import Rejected

    cache: dict[Any, tuple[Any, str | None]] = {}

    def get(spec: ClipSpec) -> tuple[Any, str | None]:
        if spec.ref is None:
            return default_ref, None
        key = spec.ref if isinstance(spec.ref, str) else id(spec.ref)
        if key not in cache:
            try:
                cache[key] = (load_clip_audio(spec.ref), None)
            except Rejected as exc:
                cache[key] = (None, f"ref_audio {exc.code}: {exc.message} (speaker similarity not measured)")
        return cache[key]

    return get


def _run_judge(judge, clips: list) -> tuple[list[dict], list[str | None], float]:
    """``judge.score(clips)`` -> (rows, a failure message per clip, seconds); a failing judge is retried clip by
    clip, and a clip it still fails on gets None for its metrics and a message, never a stopped run."""
    names = [m.name for m in judge.metrics]
    t0 = time.perf_counter()
    messages: list[str | None] = [None] * len(clips)
    try:
        results = judge.score(clips)
    except Exception:  # one clip may break a judge; find it and keep the rest
        results = []
        for k, clip in enumerate(clips):
            try:
                results.extend(judge.score([clip]))
            except Exception as exc:  # noqa: BLE001 - reported in the row, the run goes on
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                messages[k] = f"judge {judge.name} failed: {reason[:200]}"
                results.append({n: None for n in names})
    return [{n: r.get(n) for n in names} for r in results], messages, time.perf_counter() - t0


def default_jobs() -> int:
    """Judges side by side: 2 where there are 2+ cores (each judge runs one thread by default)."""
    import os

    return max(1, min(2, os.cpu_count() or 1))


def _add_message(row: dict, message: str) -> None:
    row["message"] = f"{row['message']}; {message}" if row.get("message") else message


def score_specs(specs: Sequence[ClipSpec], judges: Sequence[Any], *, ref: Any = None, language: str | None = None,
                progress: bool = True, chunk: int = CHUNK, timing: Timing | None = None,
                jobs: int = 1) -> list[dict[str, Any]]:
    """Decode and judge every clip; one row per clip (``BASE_COLUMNS`` then every judge's metrics).

    A clip that cannot be decoded gets ``status`` = its reject code and no metrics; a manifest row's
    reference that cannot be decoded leaves that clip's speaker similarity empty with a ``message``.
    ``jobs`` > 1 runs that many judges side by side on each chunk (threads: the models release the GIL),
    the slowest so far first; the values are the same as one at a time.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    from qwen_tts_ext.evaluation.judges.base import Clip
    from qwen_tts_ext.prep.audio import Rejected

    timing = timing or Timing()
    timing.jobs = jobs if jobs > 1 and len(judges) > 1 else 1
    timing.per_judge.update({j.name: 0.0 for j in judges if j.name not in timing.per_judge})
    get_ref = _ref_loader(ref)
    metric_names = [m.name for j in judges for m in j.metrics]
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(specs), desc="score", unit="clip", file=sys.stderr, disable=not progress, leave=False)
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="judge") if jobs > 1 and len(judges) > 1 else None
    t_all = time.perf_counter()
    try:
        for start in range(0, len(specs), chunk):
            part = specs[start:start + chunk]
            clips, where = [], []
            t0 = time.perf_counter()
            for spec in part:
                lang, lang_problem = language, None
                if lang is None and spec.language not in (None, ""):
                    try:
                        lang = language_name(spec.language)
                    except Rejected as exc:
                        lang_problem = f"{exc.message} (language left unknown)"
                row: dict[str, Any] = {"id": spec.id, "path": spec.path, "seconds": None, "language": lang,
                                       "speaker": spec.speaker, "text": spec.text, "status": "ok", "message": None}
                row.update({n: None for n in metric_names})
                rows.append(row)
                if lang_problem:
                    _add_message(row, lang_problem)
                if spec.problem:
                    row["status"], _, row["message"] = spec.problem.partition(": ")
                    continue
                try:
                    audio, sr = load_clip_audio(spec.source)
                except Rejected as exc:
                    row["status"], row["message"] = exc.code, exc.message
                    continue
                row["seconds"] = round(len(audio) / sr, 3)
                timing.audio_seconds += len(audio) / sr
                timing.clips += 1
                ref_audio, ref_problem = get_ref(spec)
                if ref_problem:
                    _add_message(row, ref_problem)
                clips.append(Clip(audio=audio, sample_rate=sr, id=spec.id, text=spec.text, language=lang,
                                  ref=None if ref_audio is None else ref_audio[0],
                                  ref_sample_rate=None if ref_audio is None else ref_audio[1], meta=dict(spec.meta)))
                where.append(len(rows) - 1)
            timing.decode_seconds += time.perf_counter() - t0
            if clips:
                order = sorted(judges, key=lambda j: -timing.per_judge.get(j.name, 0.0))  # slowest first
                if pool is None:
                    done = [_run_judge(j, clips) for j in order]
                else:
                    done = [f.result() for f in [pool.submit(_run_judge, j, clips) for j in order]]
                for judge, (results, messages, seconds) in zip(order, done):
                    timing.per_judge[judge.name] = timing.per_judge.get(judge.name, 0.0) + seconds
                    for i, res, message in zip(where, results, messages):
                        rows[i].update(res)
                        if message:
                            _add_message(rows[i], message)
            bar.update(len(part))
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    timing.score_seconds += time.perf_counter() - t_all
    return rows


def _skipped(notes: list[str], loaded: list[str]) -> list[dict[str, str]]:
    """The registry's one line per skipped judge, with the judge's name where the line names one."""
    from qwen_tts_ext.evaluation.judges import JUDGES

    out = []
    for note in notes:
        head = (note.split() or [""])[0].rstrip(":")
        name = head if head in JUDGES else next((n for n in JUDGES if n not in loaded and n in note), "")
        out.append({"name": name, "note": note})
    return out


def _quiet() -> None:
    import logging
    import warnings

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")


@contextlib.contextmanager
def _one_torch_thread(active: bool, n: int) -> Iterator[None]:
    """Judges side by side: torch's (process-wide) thread count set once to the judges' count for the whole
    run, so that one judge's "set, then restore" never changes it under another judge's feet."""
    if not active or "torch" not in sys.modules:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def score(cfg: ScoreConfig, ready: Ready | None = None) -> dict[str, Any]:
    """Load the judges and score every clip; the report as a dict (nothing written)."""
    from qwen_tts_ext.evaluation.judges import load_judges, metric_info

    ready = ready or preflight(cfg)
    timing = Timing()
    t0 = time.perf_counter()
    judges, notes = load_judges(ready.judge_names, **ready.options)
    timing.load_seconds = time.perf_counter() - t0
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    jobs = cfg.jobs or default_jobs()
    with _one_torch_thread(jobs > 1 and len(judges) > 1, cfg.threads or 1):
        rows = score_specs(ready.specs, judges, ref=ready.ref, language=ready.language, progress=cfg.progress,
                           timing=timing, jobs=jobs)
    info = metric_info()
    metrics = [m.name for j in judges for m in j.metrics]
    loaded = [j.name for j in judges]
    report = {
        "settings": {
            "audio": str(cfg.audio), "kind": ready.kind, "clips": len(ready.specs), "text_source": ready.text_source,
            "reference": (f"--ref-audio {cfg.ref_audio}" if cfg.ref_audio else "none") + (
                "; the manifest's ref_audio column where a row has one" if any(s.ref is not None for s in ready.specs)
                else ""),
            "language": ready.language or "auto", "judges_requested": ready.judge_names or "all installed",
            "config": config_to_dict(cfg),
        },
        "judges": {
            "ran": [{"name": j.name, "package": getattr(j, "package", ""), "metrics": [m.name for m in j.metrics]}
                    for j in judges],
            "skipped": _skipped(notes, loaded),
        },
        "metrics": {m: {"direction": info[m].direction, "description": info[m].description,
                        "typical": info[m].typical} for m in metrics if m in info},
        "summary": summarize(rows, metrics),
        "timing": timing.as_dict(),
        "rows": rows,
    }
    report["_info"] = info  # for the writers; removed before writing
    return report


def run(cfg: ScoreConfig) -> int:
    """``qwen-tts-ext score``: check, load the judges, score every clip, write the report, print the summary."""
    ready = preflight(cfg)
    _quiet()
    from qwen_tts_ext.outputs import output_dir

    report = score(cfg, ready)
    info = report.pop("_info")
    bad = [r for r in report["rows"] if r["status"] != "ok"]
    if bad:
        print(f"warning: {len(bad)} of {len(report['rows'])} clip(s) could not be scored (first: {bad[0]['id']}: "
              f"{bad[0]['status']}: {bad[0]['message']}); see the status column", file=sys.stderr)
    with output_dir(ready.out, command=COMMAND, overwrite=cfg.overwrite, flag="--out-dir",
                    marker={"clips": len(report["rows"])}) as tmp:
        write_reports(report, tmp, info)
    emit(summary_table(report["summary"], info))
    emit(f"wrote {ready.out / 'scores.md'}, scores.json, scores.csv")
    return 0
