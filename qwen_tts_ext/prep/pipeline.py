"""``prepare(cfg)``: manifest -> validated 24 kHz audio -> 12 Hz codes + speaker x-vectors -> output folder.

Stages:

1. **Read** the manifest and check each row without touching audio (transcript, language,
   duplicate paths; :mod:`~qwen_tts_ext.prep.rows`). Top-level problems are ``UserError``; row
   problems become rejects.
2. **Process** rows in resumable shards (:mod:`~qwen_tts_ext.prep.shards`): worker threads decode,
   downmix, resample to 24 kHz, trim and validate the next shard while the main thread encodes the
   current one with the speech tokenizer (length-bucketed batches) and computes x-vectors.
3. **Assemble** the finished shards into a temporary folder next to the output (content-duplicate
   check, per-speaker float32 means, ``datasets`` dataset, JSONL, stats) and rename it into place
   (:mod:`~qwen_tts_ext.prep.assemble`, :mod:`~qwen_tts_ext.prep.report`).

Everything that can be checked without reading audio is checked before any work: the settings, the
output folder (:mod:`qwen_tts_ext.outputs`: a file in the way, a folder that is not a previous
``prepare`` output, an output that holds the inputs), what ``--model``/``--tokenizer``/
``--speaker-encoder`` are (from ``config.json`` and the safetensors headers), ``--device``, and the
manifest's columns (those checks live in :mod:`~qwen_tts_ext.prep.preflight`).

A rerun with the same inputs returns the existing output; a rerun after a kill resumes at the first
unfinished shard.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qwen_tts_ext.command import emit
from qwen_tts_ext.config import config_to_dict
from qwen_tts_ext.constants import SAMPLE_RATE, SAMPLES_PER_FRAME
from qwen_tts_ext.prep import audio as A
from qwen_tts_ext.outputs import check_output_dir, output_dir
from qwen_tts_ext.prep.assemble import COMMAND, LEGACY, assemble
from qwen_tts_ext.prep.config import NON_IDENTITY_FIELDS, PrepareConfig
from qwen_tts_ext.prep.manifest import manifest_fingerprint, read_manifest
from qwen_tts_ext.prep.preflight import (
    check_audio_overlap,
    check_existing_output,
    check_manifest_overlap,
    checkpoint_identity,
    manifest_columns,
    resolve_models,
    supported_languages,
)
from qwen_tts_ext.prep.report import Timing, log, summary, write_jsonl
from qwen_tts_ext.prep.report import stats as report_stats
from qwen_tts_ext.prep.rows import RowPlan, RowResult, plan_rows, process_row, reject_entry
from qwen_tts_ext.prep.shards import ShardData, WorkDir, work_dir_for
from qwen_tts_ext.prepared import FORMAT_VERSION, write_meta

# Test hook: seconds to sleep after each shard is written (lets a test kill a run mid-way).
SHARD_DELAY_ENV = "QWEN_TTS_EXT_PREP_SHARD_DELAY"


# --------------------------------------------------------------------------- main entry


@dataclass
class _Models:
    tokenizer: object = None
    speaker_encoder: object = None


def run(cfg: PrepareConfig) -> int:
    """``qwen-tts-ext prepare``: prepare (or ``--merge``); the output folder on stdout, logs on stderr."""
    from qwen_tts_ext.prep.distributed import is_distributed, prepare_distributed, world

    if is_distributed():  # under `accelerate launch` / torchrun: one slice per process, merged by the main one
        out = prepare_distributed(cfg)
        if world()[0] != 0:
            return 0
    elif cfg.merge:
        from qwen_tts_ext.prep.merge import merge_prepared

        out = merge_prepared(cfg.merge, cfg.output, overwrite=cfg.overwrite, progress=cfg.progress)
    else:
        out = prepare(cfg)
    emit(str(out))
    return 0


def prepare(cfg: PrepareConfig) -> Path:
    """Run data preparation; return the output folder. Raises ``UserError`` for top-level mistakes."""
    cfg.validate()
    cfg.require_paths()
    shard_i, shard_n = cfg.shard_index()
    # --- every check that needs no audio, before any work
    out = Path(os.path.expanduser(cfg.output)).resolve()
    model_dir, tok_dir, spk_dir = resolve_models(cfg)
    check_manifest_overlap(out, cfg.manifest)
    rows = read_manifest(cfg.manifest, manifest_columns(cfg), cfg.split)
    check_audio_overlap(out, rows)
    inputs = {flag: d for flag, d in (("--model", model_dir), ("--tokenizer", tok_dir), ("--speaker-encoder", spk_dir))
              if d is not None}
    # A file in the way, a path under a file, an unwritable parent, a folder holding a model, and a
    # non-empty folder that is not a previous `prepare` output are refused here (even with --overwrite);
    # which previous outputs may be replaced is decided below, once the job's fingerprint is known.
    check_output_dir(out, command=COMMAND, overwrite=True, legacy=LEGACY, inputs=inputs)
    device = cfg.device
    if not cfg.dry_run:  # a dry run loads no model
        from qwen_tts_ext.devices import resolve_device

        device, _ = resolve_device(cfg.device, cfg.dtype)
    manifest_path = Path(os.path.expanduser(cfg.manifest))
    languages = supported_languages(model_dir)
    total_rows = len(rows)
    lo, hi = shard_i * total_rows // shard_n, (shard_i + 1) * total_rows // shard_n
    rows = rows[lo:hi]

    identity = {
        "format_version": FORMAT_VERSION,
        "config": {k: v for k, v in config_to_dict(cfg).items() if k not in NON_IDENTITY_FIELDS},
        "manifest": {"path": str(manifest_path.resolve()) if manifest_path.exists() else cfg.manifest,
                     "sha256": manifest_fingerprint(cfg.manifest), "rows": total_rows, "slice": [lo, hi]},
        "model": checkpoint_identity(model_dir),
        "tokenizer": checkpoint_identity(tok_dir),
        "speaker_encoder": checkpoint_identity(spk_dir),
    }
    fingerprint = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
    if check_existing_output(out, fingerprint, cfg):
        log(cfg, f"{out} already holds this prepared dataset (same manifest, model and settings); nothing to do")
        return out
    replace = out.is_dir() and any(out.iterdir())  # a previous output that check_existing_output let go

    plans = plan_rows(rows, cfg, languages)
    if cfg.dry_run:
        return _dry_run(cfg, out, plans, identity, fingerprint, replace)

    models = _Models()
    from qwen_tts_ext.prep.encode import load_tokenizer
    from qwen_tts_ext.prep.speakers import SpeakerEncoder

    import torch

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[cfg.dtype]
    models.speaker_encoder = SpeakerEncoder.from_checkpoint(spk_dir, device=device, dtype=dtype,
                                                            num_threads=cfg.embed_threads or None)
    models.tokenizer = load_tokenizer(tok_dir, device=device, dtype=cfg.dtype)

    num_shards = max(1, math.ceil(len(plans) / cfg.shard_size))
    work = WorkDir(work_dir_for(out), fingerprint, num_shards).open()
    try:
        timing = _process_shards(cfg, plans, work, models)
        assemble(cfg, out, work, identity, fingerprint, timing, total_rows, overwrite=replace)
    finally:
        work.close()
    if not cfg.keep_work:
        work.remove()
    return out


# --------------------------------------------------------------------------- stage 2: shards


def _process_shards(cfg: PrepareConfig, plans: list[RowPlan], work: WorkDir, models: _Models) -> Timing:
    from tqdm.auto import tqdm

    from qwen_tts_ext.prep.encode import LENGTH_QUANTUM, encode_batch, plan_batches, round_up

    checks = A.AudioChecks(min_seconds=cfg.min_seconds, max_seconds=cfg.max_seconds, silence_db=cfg.silence_db,
                           clip_level=cfg.clip_level, clip_fraction=cfg.clip_fraction)
    want_ref = cfg.ref_mode == "ref"
    delay = float(os.environ.get(SHARD_DELAY_ENV, "0") or 0)
    timing = Timing()
    shard_rows = [plans[k * cfg.shard_size:(k + 1) * cfg.shard_size] for k in range(work.num_shards)]
    todo = [k for k in range(work.num_shards) if not work.is_done(k)]
    done_rows = sum(len(shard_rows[k]) for k in range(work.num_shards) if work.is_done(k))
    if done_rows and todo:
        log(cfg, f"resuming: {work.num_shards - len(todo)}/{work.num_shards} shards already done")
    bar = tqdm(total=len(plans), initial=done_rows, unit="clip", desc="prepare", dynamic_ncols=True,
               disable=not cfg.progress, smoothing=0.1)
    pool = ThreadPoolExecutor(max_workers=cfg.num_workers) if cfg.num_workers > 0 else None

    def submit(k: int) -> list:
        args = (checks, cfg.trim, cfg.trim_margin, want_ref)
        if pool is None:
            return [_Done(process_row(p, *args)) for p in shard_rows[k]]
        return [pool.submit(process_row, p, *args) for p in shard_rows[k]]

    kept_total = 0
    rejected_total = 0
    encoded_s = 0.0  # audio seconds encoded by this run (progress bar)
    try:
        pending = {todo[0]: submit(todo[0])} if todo else {}
        for pos, k in enumerate(todo):
            futures = pending.pop(k)
            if pos + 1 < len(todo):  # decode the next shard while this one encodes
                pending[todo[pos + 1]] = submit(todo[pos + 1])
            results: list[RowResult] = [f.result() for f in futures]
            data = ShardData()
            good = [r for r in results if r.reject is None]
            bad = [r for r in results if r.reject is not None]
            bar.update(len(bad))
            rejected_total += len(bad)
            for r in bad:
                data.rejects.append(reject_entry(r.plan, r.reject))
            # encode, longest first, in padded-seconds-bounded batches
            padded = [A.pad_to_frames(r.wav) for r in good]
            codes: list[np.ndarray | None] = [None] * len(good)
            lengths = [len(w) for w in padded]
            for batch in plan_batches(lengths, cfg.batch_seconds, cfg.max_batch, quantum=LENGTH_QUANTUM):
                pad_to = round_up(max(lengths[i] for i in batch), LENGTH_QUANTUM)
                try:
                    batch_codes = encode_batch(models.tokenizer, [padded[i] for i in batch], pad_to)
                except (RuntimeError, ValueError) as exc:  # one odd clip must not stop the run: retry alone
                    if len(batch) == 1:
                        batch_codes = [A.Rejected("encode_failed", f"speech tokenizer failed: {exc}")]
                    else:
                        batch_codes = []
                        for i in batch:
                            try:
                                batch_codes += encode_batch(models.tokenizer, [padded[i]])
                            except (RuntimeError, ValueError) as exc1:
                                batch_codes.append(A.Rejected("encode_failed", f"speech tokenizer failed: {exc1}"))
                for i, c in zip(batch, batch_codes):
                    codes[i] = c
                bar.update(len(batch))
                encoded_s += sum(lengths[i] for i in batch) / SAMPLE_RATE
                bar.set_postfix(kept=kept_total + len(batch), rejected=rejected_total,
                                audio_h=f"{encoded_s / 3600:.2f}", refresh=False)
                kept_total += len(batch)
            audio_files = {}
            for r, c in zip(good, codes):
                row = r.plan.row
                try:
                    if isinstance(c, A.Rejected):
                        raise c
                    try:
                        xvec = models.speaker_encoder.embed(r.wav)
                    except (RuntimeError, ValueError) as exc:
                        raise A.Rejected("embed_failed", f"speaker encoder failed: {exc}") from None
                except A.Rejected as rej:
                    data.rejects.append(reject_entry(r.plan, rej))
                    kept_total -= 1
                    rejected_total += 1
                    continue
                audio_path = row.audio_path
                if not isinstance(row.audio, str):  # embedded bytes: keep the prepared 24 kHz audio
                    name = f"row{row.row:07d}.flac"
                    audio_files[name] = (r.wav, SAMPLE_RATE)
                    audio_path = f"audio/{name}"
                data.records.append({
                    "row": row.row, "text": r.plan.text, "speaker": r.plan.speaker, "language": r.plan.language,
                    "instruct": r.plan.instruct, "duration": len(r.wav) / SAMPLE_RATE,
                    "num_frames": int(c.shape[0]), "audio_path": audio_path, "ref_audio": row.ref_path,
                    "hash": r.content_hash, "warnings": r.report.warnings if r.report else [],
                    "peak": r.report.peak if r.report else 0.0,
                    "source": row.audio_path, "line": row.line,
                })
                data.codes.append(c)
                data.xvectors.append(xvec)
                timing.processed_seconds += len(r.wav) / SAMPLE_RATE
                if r.ref_reject is not None:
                    data.ref_rejects.append(reject_entry(r.plan, r.ref_reject, kind="ref_audio", path=row.ref_path))
                elif r.ref_wav is not None and row.ref_path not in data.refs:
                    try:
                        data.refs[row.ref_path] = models.speaker_encoder.embed(r.ref_wav)
                    except (RuntimeError, ValueError) as exc:
                        data.ref_rejects.append(reject_entry(
                            r.plan, A.Rejected("embed_failed", f"speaker encoder failed: {exc}"), kind="ref_audio",
                            path=row.ref_path))
            data.rejects.sort(key=lambda e: e["row"])
            timing.processed_rows += len(results)
            work.write_shard(k, data, audio_files)
            if delay:
                time.sleep(delay)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return timing


class _Done:
    """A finished "future" for the no-thread path."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


# --------------------------------------------------------------------------- dry run


def _dry_run(cfg: PrepareConfig, out: Path, plans: list[RowPlan], identity: dict, fingerprint: str,
             overwrite: bool = False) -> Path:
    """Decode and validate every row, write ``rejects.jsonl`` + ``stats.json`` (+ prepare_config.json) only."""
    from tqdm.auto import tqdm

    checks = A.AudioChecks(min_seconds=cfg.min_seconds, max_seconds=cfg.max_seconds, silence_db=cfg.silence_db,
                           clip_level=cfg.clip_level, clip_fraction=cfg.clip_fraction)
    timing = Timing()
    records, rejects, ref_rejects = [], [], []
    seen: dict[str, int] = {}
    args = (checks, cfg.trim, cfg.trim_margin, cfg.ref_mode == "ref")
    with ThreadPoolExecutor(max_workers=max(1, cfg.num_workers)) as pool:
        it = pool.map(lambda p: process_row(p, *args), plans)
        for res in tqdm(it, total=len(plans), unit="clip", desc="dry run", disable=not cfg.progress):
            timing.processed_rows += 1
            if res.reject is not None:
                rejects.append(reject_entry(res.plan, res.reject))
                continue
            if res.content_hash in seen:
                rejects.append(reject_entry(res.plan, A.Rejected("duplicate", f"same audio content as row {seen[res.content_hash]}")))
                continue
            seen[res.content_hash] = res.plan.row.row
            if res.ref_reject is not None:
                ref_rejects.append(reject_entry(res.plan, res.ref_reject, kind="ref_audio", path=res.plan.row.ref_path))
            n = len(res.wav)
            records.append({"row": res.plan.row.row, "speaker": res.plan.speaker, "language": res.plan.language,
                            "duration": n / SAMPLE_RATE, "num_frames": -(-n // SAMPLES_PER_FRAME),
                            "warnings": res.report.warnings, "source": res.plan.row.audio_path})
            timing.processed_seconds += n / SAMPLE_RATE
    rejects.sort(key=lambda e: e["row"])
    stats = report_stats(cfg, records, rejects, ref_rejects, int(identity["manifest"]["rows"]), timing)
    stats["dry_run"] = True
    with output_dir(out, command=COMMAND, overwrite=overwrite, legacy=LEGACY, marker={"dry_run": True}) as tmp:
        write_jsonl(tmp / "rejects.jsonl", rejects + ref_rejects)
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False), encoding="utf-8")
        write_meta(tmp, {"fingerprint": fingerprint, "dry_run": True, "created_unix": time.time(),
                         "config": config_to_dict(cfg), "identity": identity})
    log(cfg, "dry run: " + summary(out, stats).replace("prepared", "validated", 1) + "\n  (nothing encoded)")
    return out

