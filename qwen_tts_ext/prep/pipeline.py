"""``prepare(cfg)``: manifest -> validated 24 kHz audio -> 12 Hz codes + speaker x-vectors -> output folder.

Stages:

1. **Read** the manifest and check each row without touching audio (transcript, language,
   duplicate paths). Top-level problems are ``UserError``; row problems become rejects.
2. **Process** rows in resumable shards (:mod:`~qwen_tts_ext.prep.shards`): worker threads decode,
   downmix, resample to 24 kHz, trim and validate the next shard while the main thread encodes the
   current one with the speech tokenizer (length-bucketed batches) and computes x-vectors.
3. **Assemble** the finished shards into a temporary folder next to the output (content-duplicate
   check, per-speaker float32 means, ``datasets`` dataset, JSONL, stats) and rename it into place.

A rerun with the same inputs returns the existing output; a rerun after a kill resumes at the first
unfinished shard.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qwen_tts_ext.config import config_to_dict
from qwen_tts_ext.constants import CODEC_LANGUAGE_IDS, SAMPLE_RATE, SAMPLES_PER_FRAME
from qwen_tts_ext.errors import UserError
from qwen_tts_ext.prep import audio as A
from qwen_tts_ext.prep.config import NON_IDENTITY_FIELDS, PrepareConfig
from qwen_tts_ext.prep.manifest import (
    Columns,
    ManifestRow,
    manifest_fingerprint,
    normalize_instruct,
    normalize_language,
    normalize_speaker,
    normalize_text,
    read_manifest,
)
from qwen_tts_ext.prep.shards import ShardData, WorkDir, work_dir_for

FORMAT_VERSION = 1
# Test hook: seconds to sleep after each shard is written (lets a test kill a run mid-way).
SHARD_DELAY_ENV = "QWEN_TTS_EXT_PREP_SHARD_DELAY"


# --------------------------------------------------------------------------- identity


def _file_identity(path: Path) -> dict:
    """Cheap identity of a weights/config file: size + sha256 of its first and last MiB."""
    if not path.is_file():
        return {}
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        if st.st_size > (2 << 20):
            f.seek(-(1 << 20), os.SEEK_END)
            h.update(f.read(1 << 20))
    return {"file": path.name, "size": st.st_size, "sha256_head_tail": h.hexdigest()}


def _checkpoint_identity(path: Path | None) -> dict:
    if path is None:
        return {}
    ident = {"path": str(path), "config": _file_identity(path / "config.json")}
    for name in ("model.safetensors", "model.safetensors.index.json"):
        if (path / name).is_file():
            ident["weights"] = _file_identity(path / name)
    return ident


def _supported_languages(model_dir: Path | None) -> set[str]:
    if model_dir is not None and (model_dir / "config.json").is_file():
        try:
            cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
            langs = cfg.get("talker_config", {}).get("codec_language_id")
            if isinstance(langs, dict) and langs:
                return {str(k).lower() for k in langs}
        except ValueError:
            raise UserError(f"{model_dir / 'config.json'} is not valid JSON") from None
    return set(CODEC_LANGUAGE_IDS)


# --------------------------------------------------------------------------- per-row work


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


def _reject_entry(plan_or_row, reject: A.Rejected, kind: str = "clip", path: str | None = None) -> dict:
    row = plan_or_row.row if isinstance(plan_or_row, RowPlan) else plan_or_row
    entry = {"row": row.row, "path": path if path is not None else row.audio_path, "reason": reject.code,
             "message": reject.message, "kind": kind}
    if row.line is not None:
        entry["line"] = row.line
    return entry


def plan_rows(rows: list[ManifestRow], cfg: PrepareConfig, languages: set[str]) -> list[RowPlan]:
    """No-I/O validation: transcript, language, missing audio value, duplicate audio paths."""
    plans = []
    first_of: dict[str, int] = {}
    for r in rows:
        p = RowPlan(row=r)
        try:
            if r.error is not None:
                raise r.error
            if r.audio is None:
                raise A.Rejected("missing_audio", f"the row has no {cfg.audio_column!r} value")
            p.text = normalize_text(r.text)
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
        A.check_audio(wav, dataclasses.replace(checks, min_seconds=0.0, max_seconds=math.inf))  # silence first
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


def _stem(path: str) -> str:
    stem = Path(path).stem if path else "clip"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)[:60] or "clip"


# --------------------------------------------------------------------------- main entry


@dataclass
class _Models:
    tokenizer: object = None
    speaker_encoder: object = None


@dataclass
class _Timing:
    start: float = field(default_factory=time.perf_counter)
    processed_rows: int = 0
    processed_seconds: float = 0.0


def _resolve_paths(cfg: PrepareConfig):
    from qwen_tts_ext.checkpoint_io import resolve_checkpoint

    model_dir = resolve_checkpoint(cfg.model, what="model") if cfg.model else None
    if model_dir is not None and not (model_dir / "config.json").is_file():
        raise UserError(f"model {model_dir} has no config.json; pass a Qwen3-TTS checkpoint folder")
    if cfg.tokenizer:
        tok_dir = resolve_checkpoint(cfg.tokenizer, what="tokenizer")
    else:
        tok_dir = model_dir / "speech_tokenizer" if model_dir is not None else None
    if tok_dir is not None and not (tok_dir / "config.json").is_file():
        raise UserError(f"speech tokenizer {tok_dir} not found; pass --tokenizer DIR (e.g. a Qwen3-TTS-Tokenizer-12Hz folder)")
    spk_dir = resolve_checkpoint(cfg.speaker_encoder, what="speaker encoder") if cfg.speaker_encoder else model_dir
    return model_dir, tok_dir, spk_dir


def _columns(cfg: PrepareConfig) -> Columns:
    defaults = PrepareConfig()
    explicit = {name for name in ("speaker", "language", "instruct", "ref_audio")
                if getattr(cfg, f"{name}_column") != getattr(defaults, f"{name}_column")}
    return Columns(audio=cfg.audio_column, text=cfg.text_column, speaker=cfg.speaker_column,
                   language=cfg.language_column, instruct=cfg.instruct_column, ref_audio=cfg.ref_audio_column,
                   required_optional=explicit)


def _log(cfg: PrepareConfig, msg: str) -> None:
    if cfg.progress:
        print(msg, file=sys.stderr, flush=True)


def prepare(cfg: PrepareConfig) -> Path:
    """Run data preparation; return the output folder. Raises ``UserError`` for top-level mistakes."""
    cfg.validate()
    cfg.require_paths()
    out = Path(os.path.expanduser(cfg.output)).resolve()
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} is a file; pass a folder path")
    shard_i, shard_n = cfg.shard_index()

    manifest_path = Path(os.path.expanduser(cfg.manifest))
    model_dir, tok_dir, spk_dir = _resolve_paths(cfg)
    languages = _supported_languages(model_dir)
    rows = read_manifest(cfg.manifest, _columns(cfg), cfg.split)
    total_rows = len(rows)
    lo, hi = shard_i * total_rows // shard_n, (shard_i + 1) * total_rows // shard_n
    rows = rows[lo:hi]

    identity = {
        "format_version": FORMAT_VERSION,
        "config": {k: v for k, v in config_to_dict(cfg).items() if k not in NON_IDENTITY_FIELDS},
        "manifest": {"path": str(manifest_path.resolve()) if manifest_path.exists() else cfg.manifest,
                     "sha256": manifest_fingerprint(cfg.manifest), "rows": total_rows, "slice": [lo, hi]},
        "model": _checkpoint_identity(model_dir),
        "tokenizer": _checkpoint_identity(tok_dir),
        "speaker_encoder": _checkpoint_identity(spk_dir),
    }
    fingerprint = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
    if _check_existing_output(out, fingerprint, cfg):
        _log(cfg, f"{out} already holds this prepared dataset (same manifest, model and settings); nothing to do")
        return out

    plans = plan_rows(rows, cfg, languages)
    out.parent.mkdir(parents=True, exist_ok=True)
    if cfg.dry_run:
        return _dry_run(cfg, out, plans, identity, fingerprint)

    models = _Models()
    from qwen_tts_ext.prep.encode import load_tokenizer
    from qwen_tts_ext.prep.speakers import SpeakerEncoder

    import torch

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[cfg.dtype]
    models.speaker_encoder = SpeakerEncoder.from_checkpoint(spk_dir, device=cfg.device, dtype=dtype,
                                                            num_threads=cfg.embed_threads or None)
    models.tokenizer = load_tokenizer(tok_dir, device=cfg.device, dtype=cfg.dtype)

    num_shards = max(1, math.ceil(len(plans) / cfg.shard_size))
    work = WorkDir(work_dir_for(out), fingerprint, num_shards).open()
    try:
        timing = _process_shards(cfg, plans, work, models)
        _assemble(cfg, out, work, identity, fingerprint, timing, total_rows)
    finally:
        work.close()
    if not cfg.keep_work:
        work.remove()
    return out


def _check_existing_output(out: Path, fingerprint: str, cfg: PrepareConfig) -> bool:
    """True when ``out`` is already this exact dataset. Raise ``UserError`` when it holds something else."""
    if not out.exists() or not any(out.iterdir()):
        return False
    meta_path = out / "prepare_config.json"
    meta = None
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except ValueError:
            meta = None
    if (meta is not None and meta.get("fingerprint") == fingerprint and not meta.get("dry_run") and not cfg.dry_run
            and not cfg.overwrite):
        return True
    if cfg.overwrite or (meta is not None and meta.get("dry_run")):
        return False
    if cfg.dry_run and meta is not None:
        raise UserError(f"output {out} holds a prepared dataset; give the dry run another --output (it writes "
                        "rejects.jsonl + stats.json there)")
    if meta is None:
        raise UserError(f"output {out} exists and is not a prepared dataset; choose another --output or pass --overwrite")
    raise UserError(f"output {out} holds a dataset prepared from different inputs or settings; "
                    "choose another --output or pass --overwrite to replace it")


# --------------------------------------------------------------------------- stage 2: shards


def _process_shards(cfg: PrepareConfig, plans: list[RowPlan], work: WorkDir, models: _Models) -> _Timing:
    from tqdm.auto import tqdm

    from qwen_tts_ext.prep.encode import LENGTH_QUANTUM, encode_batch, plan_batches, round_up

    checks = A.AudioChecks(min_seconds=cfg.min_seconds, max_seconds=cfg.max_seconds, silence_db=cfg.silence_db,
                           clip_level=cfg.clip_level, clip_fraction=cfg.clip_fraction)
    want_ref = cfg.ref_mode == "ref"
    delay = float(os.environ.get(SHARD_DELAY_ENV, "0") or 0)
    timing = _Timing()
    shard_rows = [plans[k * cfg.shard_size:(k + 1) * cfg.shard_size] for k in range(work.num_shards)]
    todo = [k for k in range(work.num_shards) if not work.is_done(k)]
    done_rows = sum(len(shard_rows[k]) for k in range(work.num_shards) if work.is_done(k))
    if done_rows and todo:
        _log(cfg, f"resuming: {work.num_shards - len(todo)}/{work.num_shards} shards already done")
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
                data.rejects.append(_reject_entry(r.plan, r.reject))
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
                    data.rejects.append(_reject_entry(r.plan, rej))
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
                    data.ref_rejects.append(_reject_entry(r.plan, r.ref_reject, kind="ref_audio", path=row.ref_path))
                elif r.ref_wav is not None and row.ref_path not in data.refs:
                    try:
                        data.refs[row.ref_path] = models.speaker_encoder.embed(r.ref_wav)
                    except (RuntimeError, ValueError) as exc:
                        data.ref_rejects.append(_reject_entry(
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


# --------------------------------------------------------------------------- stage 3: assemble


def _frames_histogram(frames: list[int]) -> dict:
    if not frames:
        return {"edges": [], "counts": []}
    edges = [0, 13, 25, 50, 75, 100, 150, 200, 250, 300, 375]  # 0, 1, 2, 4, 6, 8, 12, 16, 20, 24, 30 s
    top = max(frames) + 1
    if top > edges[-1]:
        edges.append(top)
    counts, _ = np.histogram(frames, bins=edges)
    return {"edges": edges, "counts": counts.tolist(), "frame_rate_hz": SAMPLE_RATE / SAMPLES_PER_FRAME}


def _assemble(cfg: PrepareConfig, out: Path, work: WorkDir, identity: dict, fingerprint: str, timing: _Timing,
              total_rows: int) -> None:
    from qwen_tts_ext.prep.speakers import cosine_similarity, mean_embedding, save_speakers

    records, codes, xvecs, rejects, ref_rejects = [], [], [], [], []
    refs: dict[str, np.ndarray] = {}
    shard_of_record: list[int] = []
    for k in range(work.num_shards):
        d = work.read_shard(k)
        records += d.records
        codes += d.codes
        xvecs += d.xvectors
        rejects += d.rejects
        ref_rejects += d.ref_rejects
        shard_of_record += [k] * len(d.records)
        for name, v in d.refs.items():
            refs.setdefault(name, v)
    # content duplicates (same samples under different paths)
    seen: dict[str, int] = {}
    keep = []
    for i, rec in enumerate(records):
        if rec["hash"] in seen:
            rejects.append({"row": rec["row"], "path": rec["source"], "reason": "duplicate",
                            "message": f"same audio content as row {seen[rec['hash']]}", "kind": "clip",
                            **({"line": rec["line"]} if rec.get("line") is not None else {})})
            continue
        seen[rec["hash"]] = rec["row"]
        keep.append(i)
    rejects.sort(key=lambda e: e["row"])
    records = [records[i] for i in keep]
    codes = [codes[i] for i in keep]
    xvecs = [xvecs[i] for i in keep]
    shard_of_record = [shard_of_record[i] for i in keep]
    if not records:
        report = work.path / "rejects.jsonl"
        _write_jsonl(report, rejects)
        reasons = Counter(r["reason"] for r in rejects)
        raise UserError(f"no usable clips: all {len(rejects)} rows were rejected ({dict(reasons)}); see {report}")
    for rec in records:
        rec["id"] = f"{rec['row']:06d}_{_stem(rec['source'])}"

    # speakers: ref clips (ref_mode=ref, when the speaker has any usable one) or all kept clips
    by_speaker: dict[str, list[int]] = defaultdict(list)
    for i, rec in enumerate(records):
        by_speaker[rec["speaker"]].append(i)
    spk_vectors, spk_clips, spk_sources, similarity = {}, {}, {}, {}
    clip_vectors: dict[str, np.ndarray] = {}
    for spk, idxs in sorted(by_speaker.items()):
        ref_names = sorted({records[i]["ref_audio"] for i in idxs if records[i]["ref_audio"] in refs})
        if cfg.ref_mode == "ref" and ref_names:
            vecs, clips, source = [refs[n] for n in ref_names], ref_names, "ref_audio"
        else:
            vecs, clips, source = [xvecs[i] for i in idxs], [records[i]["source"] for i in idxs], "clips"
        spk_vectors[spk] = mean_embedding(vecs)
        spk_clips[spk] = clips
        clip_vectors.update(zip(clips, vecs))
        spk_sources[spk] = source
        sims = sorted((cosine_similarity(xvecs[i], spk_vectors[spk]), records[i]["id"]) for i in idxs)
        similarity[spk] = {"min": round(sims[0][0], 4), "mean": round(float(np.mean([s for s, _ in sims])), 4),
                           "lowest": [[cid, round(s, 4)] for s, cid in sims[:3]]}

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        audio_dir_made = False
        for rec, k in zip(records, shard_of_record):
            if rec["audio_path"].startswith("audio/") and not Path(rec["audio_path"]).is_absolute():
                src = work.shard_path(k) / rec["audio_path"]
                if not audio_dir_made:
                    (tmp / "audio").mkdir()
                    audio_dir_made = True
                dst = tmp / rec["audio_path"]
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copy2(src, dst)
                rec["audio_path"] = str(out / rec["audio_path"])
                rec["source"] = rec["audio_path"]
        _save_dataset(tmp / "dataset", records, codes, progress=cfg.progress)
        save_speakers(spk_vectors, spk_clips, tmp, spk_sources)
        if cfg.shard_index()[1] > 1:  # a slice: keep per-clip vectors so `--merge` reproduces exact means
            from safetensors.numpy import save_file

            from qwen_tts_ext.prep.merge import CLIP_VECTORS

            save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in clip_vectors.items()},
                      str(tmp / CLIP_VECTORS))
            os.chmod(tmp / CLIP_VECTORS, 0o644)
        with open(tmp / "train_with_codes.jsonl", "w", encoding="utf-8") as f:
            for rec, c in zip(records, codes):
                f.write(json.dumps({
                    "audio": rec["audio_path"], "text": rec["text"], "audio_codes": c.astype(int).tolist(),
                    "ref_audio": rec["ref_audio"] or rec["audio_path"], "speaker": rec["speaker"],
                    "language": rec["language"], "instruct": rec["instruct"], "id": rec["id"],
                }, ensure_ascii=False) + "\n")
        _write_jsonl(tmp / "rejects.jsonl", rejects + ref_rejects)
        stats = _stats(cfg, records, rejects, ref_rejects, total_rows, timing, similarity, spk_sources)
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False), encoding="utf-8")
        meta = {"format_version": FORMAT_VERSION, "fingerprint": fingerprint, "dry_run": False,
                "created_unix": time.time(), "config": config_to_dict(cfg), "identity": identity}
        (tmp / "prepare_config.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False, default=str),
                                                 encoding="utf-8")
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _log(cfg, _summary(out, stats))


def _save_dataset(path: Path, records: list[dict], codes: list[np.ndarray], progress: bool = True) -> None:
    import datasets
    import pyarrow as pa
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

    offsets = np.zeros(len(codes) + 1, dtype=np.int32)
    offsets[1:] = np.cumsum([c.shape[0] for c in codes])
    flat = np.concatenate(codes).astype(np.int32).reshape(-1)
    frames = pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.int32()), 16)
    codes_arr = pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), frames)
    table = pa.table({
        "id": pa.array([r["id"] for r in records], pa.string()),
        "text": pa.array([r["text"] for r in records], pa.string()),
        "codes": codes_arr,
        "num_frames": pa.array([r["num_frames"] for r in records], pa.int32()),
        "speaker": pa.array([r["speaker"] for r in records], pa.string()),
        "language": pa.array([r["language"] for r in records], pa.string()),
        "instruct": pa.array([r["instruct"] for r in records], pa.string()),
        "duration": pa.array([r["duration"] for r in records], pa.float32()),
        "audio_path": pa.array([r["audio_path"] for r in records], pa.string()),
        "ref_audio": pa.array([r["ref_audio"] for r in records], pa.string()),
    })
    features = datasets.Features({
        "id": datasets.Value("string"), "text": datasets.Value("string"),
        "codes": datasets.List(datasets.List(datasets.Value("int32"), length=16)),
        "num_frames": datasets.Value("int32"), "speaker": datasets.Value("string"),
        "language": datasets.Value("string"), "instruct": datasets.Value("string"),
        "duration": datasets.Value("float32"), "audio_path": datasets.Value("string"),
        "ref_audio": datasets.Value("string"),
    })
    ds = datasets.Dataset(table, info=datasets.DatasetInfo(features=features,
                                                           description="qwen-tts-ext prepared 12 Hz codes"))
    was_enabled = is_progress_bar_enabled()
    if not progress:
        disable_progress_bar()
    try:
        ds.save_to_disk(str(path))
    finally:
        if was_enabled and not progress:
            enable_progress_bar()


def _publish(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` onto ``out``; an existing ``out`` (overwrite / dry-run report) is swapped out first."""
    from qwen_tts_ext.checkpoint_io import publish_dir

    publish_dir(tmp, out)


def _write_jsonl(path: Path, items: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for it in items:
            f.write(json.dumps(it, ensure_ascii=False) + "\n")


def _stats(cfg, records, rejects, ref_rejects, total_rows, timing: _Timing, similarity=None, spk_sources=None) -> dict:
    durations = [r["duration"] for r in records]
    speakers: dict[str, dict] = defaultdict(lambda: {"clips": 0, "seconds": 0.0})
    for r in records:
        speakers[r["speaker"]]["clips"] += 1
        speakers[r["speaker"]]["seconds"] += r["duration"]
    for s in speakers.values():
        s["seconds"] = round(s["seconds"], 3)
    for name, src in (spk_sources or {}).items():
        speakers[name]["embedding_from"] = src
    clipped = [r.get("id", r["row"]) for r in records if "clipping" in r.get("warnings", [])]
    elapsed = time.perf_counter() - timing.start
    i, n = cfg.shard_index()
    return {
        "manifest_rows": total_rows,
        "slice": f"{i}/{n}",
        "rows": len(records) + len(rejects),
        "kept": len(records),
        "rejected": len(rejects),
        "rejected_by_reason": dict(sorted(Counter(r["reason"] for r in rejects).items())),
        "ref_audio_rejected_by_reason": dict(sorted(Counter(r["reason"] for r in ref_rejects).items())),
        "warnings": {"clipping": len(clipped)},
        "clipping_clips": clipped[:100],
        "hours": round(sum(durations) / 3600, 6),
        "seconds": round(sum(durations), 3),
        "duration_seconds": ({"min": round(min(durations), 3), "mean": round(float(np.mean(durations)), 3),
                              "p50": round(float(np.percentile(durations, 50)), 3),
                              "p95": round(float(np.percentile(durations, 95)), 3), "max": round(max(durations), 3)}
                             if durations else {}),
        "speakers": dict(sorted(speakers.items())),
        "languages": dict(sorted(Counter(r["language"] for r in records).items())),
        "frames_histogram": _frames_histogram([r["num_frames"] for r in records]),
        "speaker_similarity": similarity or {},
        "this_run": {"rows_processed": timing.processed_rows, "audio_seconds_encoded": round(timing.processed_seconds, 3),
                     "elapsed_seconds": round(elapsed, 3),
                     "clips_per_second": round(timing.processed_rows / elapsed, 3) if elapsed > 0 else None,
                     "audio_seconds_per_second": round(timing.processed_seconds / elapsed, 3) if elapsed > 0 else None},
    }


def _summary(out: Path, stats: dict) -> str:
    lines = [f"prepared {out}: kept {stats['kept']} clips ({stats['hours']:.3f} h), rejected {stats['rejected']}"]
    if stats["rejected_by_reason"]:
        lines.append("  rejected: " + ", ".join(f"{k} {v}" for k, v in stats["rejected_by_reason"].items())
                     + f"  (details: {out / 'rejects.jsonl'})")
    if stats["warnings"]["clipping"]:
        lines.append(f"  warning: {stats['warnings']['clipping']} clip(s) are clipped (kept; see stats.json clipping_clips)")
    lines.append("  speakers: " + ", ".join(f"{k} ({v['clips']})" for k, v in stats["speakers"].items()))
    return "\n".join(lines)


# --------------------------------------------------------------------------- dry run


def _dry_run(cfg: PrepareConfig, out: Path, plans: list[RowPlan], identity: dict, fingerprint: str) -> Path:
    """Decode and validate every row, write ``rejects.jsonl`` + ``stats.json`` (+ prepare_config.json) only."""
    from tqdm.auto import tqdm

    checks = A.AudioChecks(min_seconds=cfg.min_seconds, max_seconds=cfg.max_seconds, silence_db=cfg.silence_db,
                           clip_level=cfg.clip_level, clip_fraction=cfg.clip_fraction)
    timing = _Timing()
    records, rejects, ref_rejects = [], [], []
    seen: dict[str, int] = {}
    args = (checks, cfg.trim, cfg.trim_margin, cfg.ref_mode == "ref")
    with ThreadPoolExecutor(max_workers=max(1, cfg.num_workers)) as pool:
        it = pool.map(lambda p: process_row(p, *args), plans)
        for res in tqdm(it, total=len(plans), unit="clip", desc="dry run", disable=not cfg.progress):
            timing.processed_rows += 1
            if res.reject is not None:
                rejects.append(_reject_entry(res.plan, res.reject))
                continue
            if res.content_hash in seen:
                rejects.append(_reject_entry(res.plan, A.Rejected("duplicate", f"same audio content as row {seen[res.content_hash]}")))
                continue
            seen[res.content_hash] = res.plan.row.row
            if res.ref_reject is not None:
                ref_rejects.append(_reject_entry(res.plan, res.ref_reject, kind="ref_audio", path=res.plan.row.ref_path))
            n = len(res.wav)
            records.append({"row": res.plan.row.row, "speaker": res.plan.speaker, "language": res.plan.language,
                            "duration": n / SAMPLE_RATE, "num_frames": -(-n // SAMPLES_PER_FRAME),
                            "warnings": res.report.warnings, "source": res.plan.row.audio_path})
            timing.processed_seconds += n / SAMPLE_RATE
    rejects.sort(key=lambda e: e["row"])
    stats = _stats(cfg, records, rejects, ref_rejects, int(identity["manifest"]["rows"]), timing)
    stats["dry_run"] = True
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        _write_jsonl(tmp / "rejects.jsonl", rejects + ref_rejects)
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False), encoding="utf-8")
        meta = {"format_version": FORMAT_VERSION, "fingerprint": fingerprint, "dry_run": True,
                "created_unix": time.time(), "config": config_to_dict(cfg), "identity": identity}
        (tmp / "prepare_config.json").write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _log(cfg, "dry run: " + _summary(out, stats).replace("prepared", "validated", 1) + "\n  (nothing encoded)")
    return out

