"""Per-row work of data prep: the no-I/O checks of a manifest row (``plan_rows``) and the decode,
resample, trim and validation of its audio (``process_row``, run in worker threads). A bad clip
never raises: it comes back with a ``Rejected`` reason that ends up in ``rejects.jsonl``."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qwen_tts_ext.constants import SAMPLE_RATE
from qwen_tts_ext.prep import audio as A
from qwen_tts_ext.prep.config import PrepareConfig
from qwen_tts_ext.prep.manifest import (
    ManifestRow,
    apply_text_tags,
    normalize_instruct,
    normalize_language,
    normalize_speaker,
    normalize_text,
)


@dataclass
class RowPlan:
    """A manifest row after the no-I/O checks."""

    row: ManifestRow
    text: str = ""
    speaker: str = ""
    language: str = ""
    instruct: str = ""
    reject: A.Rejected | None = None


@dataclass
class RowResult:
    plan: RowPlan
    wav: np.ndarray | None = None  # trimmed 24 kHz mono (not frame-padded)
    report: A.AudioReport | None = None
    content_hash: str = ""
    reject: A.Rejected | None = None
    ref_wav: np.ndarray | None = None
    ref_reject: A.Rejected | None = None


def reject_entry(plan_or_row, reject: A.Rejected, kind: str = "clip", path: str | None = None) -> dict:
    row = plan_or_row.row if isinstance(plan_or_row, RowPlan) else plan_or_row
    entry = {"row": row.row, "path": path if path is not None else row.audio_path, "reason": reject.code,
             "message": reject.message, "kind": kind}
    if row.line is not None:
        entry["line"] = row.line
    return entry


def plan_rows(rows: list[ManifestRow], cfg: PrepareConfig, languages: set[str]) -> list[RowPlan]:
    """No-I/O validation: transcript (incl. tag markup, ``cfg.text_tags``), language, missing audio value,
    duplicate audio paths."""
    plans = []
    first_of: dict[str, int] = {}
    for r in rows:
        p = RowPlan(row=r)
        try:
            if r.error is not None:
                raise r.error
            if r.audio is None:
                raise A.Rejected("missing_audio", f"the row has no {cfg.audio_column!r} value")
            p.text = apply_text_tags(normalize_text(r.text), cfg.text_tags)
            p.speaker = normalize_speaker(r.speaker, cfg.default_speaker)
            p.language = normalize_language(r.language, cfg.default_language, languages)
            p.instruct = normalize_instruct(r.instruct)
            key = r.audio if isinstance(r.audio, str) else hashlib.sha1(r.audio).hexdigest()
            if key in first_of:
                raise A.Rejected("duplicate", f"same audio as row {first_of[key]}")
            first_of[key] = r.row
        except A.Rejected as rej:
            p.reject = rej
        plans.append(p)
    return plans


def process_row(plan: RowPlan, checks: A.AudioChecks, trim: str, trim_margin: float, want_ref: bool) -> RowResult:
    """Decode + validate one row (runs in a worker thread). Never raises for a bad clip."""
    res = RowResult(plan=plan)
    if plan.reject is not None:
        res.reject = plan.reject
        return res
    try:
        dec = A.decode(plan.row.audio, SAMPLE_RATE, checks.clip_level)
        wav = dec.wav
        res.content_hash = hashlib.sha1(wav.tobytes()).hexdigest()
        # Checks on the untrimmed clip, in this order:
        # 1. too_short: trimming only ever shortens, so a clip already under min_seconds is too_short
        #    whatever its level (a 50 ms blip is not reported as "silent").
        # 2. silent: decided *before* trimming, because trimming would disguise it: energy trimming is
        #    relative to the clip's loudest window, so a silent clip with one faint noise burst is cut
        #    down to the burst and would then read as too_short; vad trimming would raise no_speech.
        #    (max_seconds waits for the trimmed length: trimming may bring a long clip into range.)
        # 3. after trimming: the full check (too_short / too_long on the trimmed length, then silence).
        A.check_audio(wav, dataclasses.replace(checks, max_seconds=math.inf))
        wav = A.trim(wav, trim, SAMPLE_RATE, trim_margin)
        res.report = A.check_audio(wav, checks, source_clipped_fraction=dec.clipped_fraction)
        res.wav = wav
    except A.Rejected as rej:
        res.reject = rej
        return res
    except Exception as exc:  # a decoder bug on one odd file must not stop a 100-hour run
        res.reject = A.Rejected("unreadable", f"{type(exc).__name__}: {exc}")
        return res
    if want_ref and plan.row.ref_audio is not None:
        try:
            ref = A.load_audio(plan.row.ref_audio, SAMPLE_RATE)
            A.check_audio(ref, dataclasses.replace(checks, min_seconds=0.0, max_seconds=math.inf))
            res.ref_wav = ref
        except A.Rejected as rej:
            res.ref_reject = rej
        except Exception as exc:
            res.ref_reject = A.Rejected("unreadable", f"{type(exc).__name__}: {exc}")
    return res


def clip_stem(path: str) -> str:
    stem = Path(path).stem if path else "clip"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)[:60] or "clip"
