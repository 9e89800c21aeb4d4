"""Stage 3 of data prep: the finished shards -> one output folder, built in a temporary folder next to
it and renamed into place by :func:`qwen_tts_ext.outputs.output_dir` (content-duplicate check,
per-speaker float32 mean x-vectors, the dataset and speaker files through :mod:`qwen_tts_ext.prepared`
(the format training reads), ``train_with_codes.jsonl``, ``rejects.jsonl``, ``stats.json``, and the
``.qwen-tts-ext.json`` marker saying ``prepare`` wrote it)."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from qwen_tts_ext.config import config_to_dict
from qwen_tts_ext.errors import UserError
from qwen_tts_ext.outputs import output_dir
from qwen_tts_ext.prep.config import PrepareConfig
from qwen_tts_ext.prepared import save_speakers, write_meta, write_prepared
from qwen_tts_ext.prep.report import Timing, log, summary, write_jsonl
from qwen_tts_ext.prep.report import stats as report_stats
from qwen_tts_ext.prep.rows import clip_stem
from qwen_tts_ext.prep.shards import WorkDir

COMMAND = "prepare"  # the command named in the output's marker (qwen_tts_ext.outputs)
LEGACY = {COMMAND: ["prepare_config.json"]}  # outputs written before the marker existed


def assemble(cfg: PrepareConfig, out: Path, work: WorkDir, identity: dict, fingerprint: str, timing: Timing,
             total_rows: int, overwrite: bool = False) -> None:
    """Build the output folder from the finished shards; ``overwrite``: ``out`` holds a previous
    ``prepare`` output that may be replaced (anything else there is refused)."""
    from qwen_tts_ext.prep.speakers import cosine_similarity, mean_embedding

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
        write_jsonl(report, rejects)
        reasons = Counter(r["reason"] for r in rejects)
        raise UserError(f"no usable clips: all {len(rejects)} rows were rejected ({dict(reasons)}); see {report}")
    for rec in records:
        rec["id"] = f"{rec['row']:06d}_{clip_stem(rec['source'])}"

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

    with output_dir(out, command=COMMAND, overwrite=overwrite, legacy=LEGACY) as tmp:
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
        write_prepared(tmp, records, codes, progress=cfg.progress)
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
        write_jsonl(tmp / "rejects.jsonl", rejects + ref_rejects)
        stats = report_stats(cfg, records, rejects, ref_rejects, total_rows, timing, similarity, spk_sources)
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False), encoding="utf-8")
        write_meta(tmp, {"fingerprint": fingerprint, "dry_run": False, "created_unix": time.time(),
                         "config": config_to_dict(cfg), "identity": identity})
    log(cfg, summary(out, stats))

