"""Offline judges: independent metrics for any speech clip, weights from installed packages only.

    from qwen_tts_ext.evaluation.judges import Clip, load_judges, score_clips, metric_info

    judges, notes = load_judges()                        # every judge whose package imports
    judges, notes = load_judges(["speaker", "timing"], checkpoint="Qwen3-TTS-12Hz-1.7B-Base")
    rows = score_clips([Clip(audio, 24000, id="a", text="Hello.", ref=ref, ref_sample_rate=24000)], judges)
    # rows[0] == {"id": "a", "spk_sim": 0.83, "speech_seconds": 0.61, ...}; None where not computable

==============  ====================================================  ===========================================
name            metrics                                               model (package)
==============  ====================================================  ===========================================
speaker         spk_sim                                               resemblyzer d-vector (resemblyzer)
speaker_ecapa   spk_sim_ecapa                                         the TTS model's own ECAPA (``checkpoint=``)
distillmos      mos_distill                                           DistillMOS v7 (distillmos)
dnsmos          dnsmos_ovrl, dnsmos_sig, dnsmos_bak                   DNSMOS P.835 ONNX (speechmos)
asr             wer, cer                                              pocketsphinx en-us, or ``asr=DIR`` (any language)
timing          speech_seconds, speaking_rate, lead_silence,          silero-vad (a core dependency)
                trail_silence, truncated, duration_ratio,
                stopped_by_eos
==============  ====================================================  ===========================================

Each module's docstring says what its metrics measure, the range they take on real speech (espeak-ng,
measured), which way is better and how noisy they are. Options shared by ``load_judge(s)``:
``threads`` (torch/ONNX CPU threads while a judge scores, default 1; restored afterwards),
``checkpoint`` (speaker_ecapa), ``asr`` (a local transformers ASR folder), ``device`` (speaker_ecapa, asr).
Models load on ``load_judge`` and are cached for the life of the process.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any

from qwen_tts_ext.evaluation.judges.base import Clip, Judge, Metric, resample

log = logging.getLogger(__name__)

__all__ = ["JUDGES", "Clip", "Judge", "Metric", "judge_class", "load_judge", "load_judges", "metric_info", "resample",
           "score_clips"]

_PKG = "qwen_tts_ext.evaluation.judges"

JUDGES: dict[str, str] = {
    "speaker": f"{_PKG}.speaker:Resemblyzer",
    "speaker_ecapa": f"{_PKG}.speaker:Ecapa",
    "distillmos": f"{_PKG}.naturalness:DistillMos",
    "dnsmos": f"{_PKG}.naturalness:Dnsmos",
    "asr": f"{_PKG}.asr:Asr",
    "timing": f"{_PKG}.timing:Timing",
}

CHUNK = 8  # clips per judge call in score_clips (the progress callback fires after each chunk)


def judge_class(name: str) -> type[Judge]:
    """The class behind ``name`` (imports only its module: numpy-level, no model, no torch)."""
    if name not in JUDGES:
        raise KeyError(f"unknown judge {name!r}; choose from {', '.join(JUDGES)}")
    module, _, cls = JUDGES[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def _accepted(cls: type[Judge], options: dict[str, Any]) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in options.items() if k in params}


def _check_options(names: Sequence[str], options: dict[str, Any]) -> None:
    known = {p for n in JUDGES for p in inspect.signature(judge_class(n).__init__).parameters} - {"self"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"unknown judge option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")


def _unavailable(name: str, options: dict[str, Any]) -> str | None:
    return judge_class(name).unavailable(**options)


def load_judge(name: str, **options) -> Judge | None:
    """The judge ``name`` with its model loaded (cached per process), or ``None`` when its package is missing
    or a required option is not given (``load_judges`` turns that into a one-line note).

    A judge that is installed but fails to load raises (``load_judges`` notes it and carries on).
    """
    _check_options([name], options)
    if _unavailable(name, options):
        return None
    cls = judge_class(name)
    judge = cls(**_accepted(cls, options))
    judge.load()
    return judge


def load_judges(names: Sequence[str] | None = None, **options) -> tuple[list[Judge], list[str]]:
    """``(judges, notes)``: the judges ``names`` (default: every judge that can run with ``options``) and one
    line per judge skipped, saying how to install it or what it needs, e.g.
    ``"distillmos not installed: pip install distillmos==0.9.1 (MOS skipped)"``."""
    wanted = list(JUDGES) if names is None else list(dict.fromkeys(names))
    for n in wanted:
        judge_class(n)  # unknown names raise KeyError before anything loads
    _check_options(wanted, options)
    judges: list[Judge] = []
    notes: list[str] = []
    for n in wanted:
        why = _unavailable(n, options)
        if why:
            notes.append(why)
            continue
        try:
            judge = load_judge(n, **options)
        except Exception as exc:  # an installed judge that cannot load must not stop the others
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            notes.append(f"{n} could not be loaded ({type(exc).__name__}: {reason}) "
                         f"({judge_class(n).skips or n} skipped)")
            continue
        if judge is not None:
            judges.append(judge)
    return judges, notes


def metric_info() -> dict[str, Metric]:
    """Every judge's metrics by name (direction, description, typical range), whether installed or not."""
    out: dict[str, Metric] = {}
    for n in JUDGES:
        for m in judge_class(n).metrics:
            out[m.name] = m
    return out


def score_clips(clips: Sequence[Clip], judges: Sequence[Judge],
                progress: Callable[[int], Any] | None = None) -> list[dict[str, Any]]:
    """One row per clip: ``id`` first, then every judge's metrics (floats or None).

    Clips go to the judges in chunks of ``CHUNK``; ``progress(n)`` (e.g. a tqdm bar's ``update``) is called
    with the number of clips finished after each chunk. A judge that raises on a chunk is retried clip by
    clip; a clip it still fails on gets None for that judge's metrics (logged), never a stopped run.
    """
    rows: list[dict[str, Any]] = [{"id": c.id} for c in clips]
    for start in range(0, len(clips), CHUNK):
        part = list(clips[start:start + CHUNK])
        for judge in judges:
            for row, got in zip(rows[start:start + len(part)], _score_safely(judge, part)):
                row.update(got)
        if progress is not None:
            progress(len(part))
    return rows


def _score_safely(judge: Judge, clips: list[Clip]) -> list[dict[str, float | None]]:
    try:
        return judge.score(clips)
    except Exception as exc:
        if len(clips) == 1:
            log.warning("judge %s failed on clip %s (%s: %s); its metrics are empty for this clip", judge.name,
                        clips[0].id or "?", type(exc).__name__, str(exc).strip().splitlines()[0] if str(exc).strip() else "")
            return [{m.name: None for m in judge.metrics}]
        out = []
        for clip in clips:
            out.extend(_score_safely(judge, [clip]))
        return out
