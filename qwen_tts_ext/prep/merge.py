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
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from qwen_tts_ext.errors import UserError
from qwen_tts_ext.outputs import check_output_dir, output_dir
from qwen_tts_ext.prep.assemble import COMMAND, LEGACY
from qwen_tts_ext.prepared import META, check_version, concat_prepared, save_speakers, write_meta

CLIP_VECTORS = "speaker_clips.safetensors"


def _load_meta(part: Path) -> dict:
    path = part / META
    if not path.is_file():
        raise UserError(f"{part} is not a prepared folder (no {META})")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        meta["identity"]["manifest"]["slice"], meta["identity"]["manifest"]["rows"]  # noqa: B018 (must exist)
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{path} is not a readable {META}; is {part} a `prepare` output?") from None
    check_version(meta.get("format_version"), part)
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


def _check_output(out: Path, parts: list[Path], overwrite: bool) -> None:
    """Refuse an output that is, holds or lies in one of the slices, or that is not ours to replace."""
    real = Path(os.path.realpath(out))
    for p in parts:
        rp = Path(os.path.realpath(p))
        if real == rp:
            raise UserError(f"--output {out} is one of the --merge folders; choose a new folder for the merged data")
        if real in rp.parents:
            raise UserError(f"--output {out} contains the --merge folder {p}; choose a folder outside it")
        if rp in real.parents:
            raise UserError(f"--output {out} is inside the --merge folder {p}; choose a folder outside it")
    check_output_dir(out, command=COMMAND, overwrite=overwrite, legacy=LEGACY)


def merge_prepared(parts: list[str | os.PathLike], output: str | os.PathLike, overwrite: bool = False,
                   progress: bool = True) -> Path:
    """Concatenate slice outputs (in manifest order) into ``output``; return it.

    Every check (the output folder, each slice's prepare_config.json, that the slices tile one job's
    manifest) runs before anything is read or written.
    """
    if not str(output).strip():
        raise UserError("--merge needs --output (the folder for the merged data)")
    out = Path(os.path.expanduser(str(output))).resolve()
    paths = [Path(os.path.expanduser(str(p))).resolve() for p in parts]
    if len(paths) < 2:
        raise UserError("--merge needs at least two slice folders")
    _check_output(out, paths, overwrite)
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

    from safetensors import safe_open

    from qwen_tts_ext.prep.speakers import mean_embedding

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

    with output_dir(out, command=COMMAND, overwrite=overwrite, legacy=LEGACY) as tmp:
        _write_merged(tmp, paths, metas, total, vectors, clips, sources, progress)
    return out


def _write_merged(tmp: Path, paths: list[Path], metas: list[dict], total: int, vectors: dict, clips: dict,
                  sources: dict, progress: bool) -> None:
    from qwen_tts_ext.prep.report import frames_histogram

    ds = concat_prepared(paths, tmp, progress=progress)  # the slices' datasets checked, in the current format
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
    write_meta(tmp, meta)
