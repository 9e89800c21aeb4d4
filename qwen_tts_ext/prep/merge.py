"""Merge the outputs of ``prepare --shard i/n`` runs (one per machine) into one prepared folder.

Each slice output stores the x-vector of every clip behind its speaker means
(``speaker_clips.safetensors``), so the merged speaker vectors are exactly the float32 means an
unsplit run computes (same clips, same order), not an average of averages.

    qwen-tts-ext prepare --merge out/part0 out/part1 out/part2 --output out/all

Not done across slices: detecting the same audio content under different paths (each slice
checks its own rows).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from qwen_tts_ext.errors import UserError

CLIP_VECTORS = "speaker_clips.safetensors"


def _load_meta(part: Path) -> dict:
    path = part / "prepare_config.json"
    if not path.is_file():
        raise UserError(f"{part} is not a prepared folder (no prepare_config.json)")
    meta = json.loads(path.read_text(encoding="utf-8"))
    if meta.get("dry_run"):
        raise UserError(f"{part} is a dry-run report, not a prepared dataset")
    if not (part / CLIP_VECTORS).is_file():
        raise UserError(f"{part} has no {CLIP_VECTORS}; only outputs of --shard i/n runs (n > 1) can be merged")
    return meta


def _job_key(meta: dict) -> str:
    ident = meta["identity"]
    cfg = {k: v for k, v in ident["config"].items() if k != "shard"}
    return json.dumps([cfg, ident["model"], ident["tokenizer"], ident["speaker_encoder"],
                       ident["manifest"]["sha256"]], sort_keys=True, default=str)


def merge_prepared(parts: list[str | os.PathLike], output: str | os.PathLike, overwrite: bool = False) -> Path:
    """Concatenate slice outputs (in manifest order) into ``output``; return it."""
    import datasets
    from safetensors import safe_open

    from qwen_tts_ext.checkpoint_io import publish_dir
    from qwen_tts_ext.prep.report import frames_histogram
    from qwen_tts_ext.prep.speakers import mean_embedding, save_speakers

    paths = [Path(os.path.expanduser(str(p))).resolve() for p in parts]
    if len(paths) < 2:
        raise UserError("--merge needs at least two slice folders")
    for p in paths:
        if not p.is_dir():
            raise UserError(f"slice folder {p} does not exist")
    metas = [_load_meta(p) for p in paths]
    if len({_job_key(m) for m in metas}) != 1:
        raise UserError("the slices were prepared from different manifests, models or settings; merge only "
                        "slices of one job")
    order = sorted(range(len(paths)), key=lambda i: metas[i]["identity"]["manifest"]["slice"][0])
    paths, metas = [paths[i] for i in order], [metas[i] for i in order]
    total = metas[0]["identity"]["manifest"]["rows"]
    cover = 0
    for p, m in zip(paths, metas):
        lo, hi = m["identity"]["manifest"]["slice"]
        if lo != cover:
            raise UserError(f"slices do not tile the manifest: {p} starts at row {lo}, expected {cover}")
        cover = hi
    if cover != total:
        raise UserError(f"slices cover rows 0..{cover} of {total}; a slice is missing")

    out = Path(os.path.expanduser(str(output))).resolve()
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"output {out} exists and is not empty; choose another --output or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)

    # per-clip vectors and speaker sources, in manifest order
    clip_vecs: dict[str, np.ndarray] = {}
    spk_clips: dict[str, dict[str, list[str]]] = defaultdict(lambda: {"ref_audio": [], "clips": []})
    for p in paths:
        with safe_open(str(p / CLIP_VECTORS), framework="np") as f:
            for k in f.keys():
                clip_vecs.setdefault(k, f.get_tensor(k))
        for name, info in json.loads((p / "speakers.json").read_text(encoding="utf-8")).items():
            spk_clips[name][info.get("source", "clips")] += info["clips"]
    vectors, clips, sources = {}, {}, {}
    for name, by_src in sorted(spk_clips.items()):
        if by_src["ref_audio"]:
            src, names = "ref_audio", sorted(set(by_src["ref_audio"]))
        else:
            src, names = "clips", list(dict.fromkeys(by_src["clips"]))
        vectors[name] = mean_embedding([clip_vecs[n] for n in names])
        clips[name], sources[name] = names, src

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        ds = datasets.concatenate_datasets([datasets.load_from_disk(str(p / "dataset")) for p in paths])
        ds.save_to_disk(str(tmp / "dataset"))
        save_speakers(vectors, clips, tmp, sources)
        for fname in ("train_with_codes.jsonl", "rejects.jsonl"):
            with open(tmp / fname, "wb") as dst:
                for p in paths:
                    with open(p / fname, "rb") as src_f:
                        shutil.copyfileobj(src_f, dst)
        rejects = [json.loads(x) for x in (tmp / "rejects.jsonl").read_text(encoding="utf-8").splitlines() if x]
        clip_rejects = [r for r in rejects if r.get("kind", "clip") == "clip"]
        durations = ds["duration"]
        speakers: dict[str, dict] = defaultdict(lambda: {"clips": 0, "seconds": 0.0})
        for s, d in zip(ds["speaker"], durations):
            speakers[s]["clips"] += 1
            speakers[s]["seconds"] = round(speakers[s]["seconds"] + d, 3)
        stats = {
            "manifest_rows": total, "merged_slices": len(paths), "rows": len(ds) + len(clip_rejects),
            "kept": len(ds), "rejected": len(clip_rejects),
            "rejected_by_reason": dict(sorted(Counter(r["reason"] for r in clip_rejects).items())),
            "hours": round(float(sum(durations)) / 3600, 6),
            "speakers": dict(sorted(speakers.items())),
            "languages": dict(sorted(Counter(ds["language"]).items())),
            "frames_histogram": frames_histogram(list(ds["num_frames"])),
        }
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False), encoding="utf-8")
        meta = dict(metas[0])
        meta["identity"] = dict(meta["identity"], manifest=dict(meta["identity"]["manifest"], slice=[0, total]))
        meta["merged_from"] = [str(p) for p in paths]
        meta["created_unix"] = time.time()
        (tmp / "prepare_config.json").write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
        publish_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
