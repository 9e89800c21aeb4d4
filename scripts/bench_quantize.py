"""Benchmark of ``qwen-tts-ext quantize`` at a released shape (random weights): sizes, peak RSS, load memory.

    python scripts/bench_quantize.py --shape 1.7b --layers 2 --work /tmp/bq      # a quick run, extrapolated
    python scripts/bench_quantize.py --shape 1.7b --work /tmp/bq                  # all 28 layers

Steps (each heavy one in a child process, so its peak RSS is its own):
1. build a ``--shape`` checkpoint with random bf16 weights (``testing.tiny_checkpoint.build_released_tts``)
   and a synthetic prepared dataset for it (random codes, random speaker vectors);
2. quantize it (AWQ, group 128) and, with ``--embed-8bit``, once more with the 8-bit text embedding;
3. load the bf16 folder and each quantized folder with ``quantize.load_tts`` and count the weight bytes
   held by the model (parameters + buffers, without the speech tokenizer) and the RSS.

Prints a Markdown table; per-layer figures are extrapolated to the released 28 layers (weights are
exact arithmetic: each talker layer has the same shapes; times scale with layers, stated as such).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _rss_peak_children_mib() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def _child(args: list[str]) -> dict:
    """Run this script's ``--phase`` in a child; return its JSON result plus its peak RSS."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    if proc.returncode:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"phase {args[:2]} failed")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = time.perf_counter() - t
    return out


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase_build(work: Path, shape: str, layers: int | None) -> dict:
    import numpy as np
    import torch

    from qwen_tts_ext.prepared import save_speakers, write_meta, write_prepared
    from qwen_tts_ext.testing.tiny_checkpoint import build_released_tts

    ckpt = work / "bf16"
    want = layers or 28
    try:  # a checkpoint this script built before, with the same layer count, is reused
        same = json.loads((ckpt / "config.json").read_text())["talker_config"]["num_hidden_layers"] == want
    except (OSError, ValueError, KeyError):
        same = False
    if not (same and (ckpt / "model.safetensors").is_file()):
        ckpt = build_released_tts(ckpt, shape, layers=layers, dtype=torch.bfloat16, overwrite=True)
    hidden = json.loads((ckpt / "config.json").read_text())["talker_config"]["hidden_size"]
    prep = work / "prepared"
    if not prep.exists():
        prep.mkdir(parents=True)
        g = np.random.default_rng(0)
        records, codes = [], []
        for i in range(12):
            frames = int(g.integers(20, 60))
            codes.append(g.integers(0, 2048, (frames, 16)))
            records.append({"id": f"{i:06d}", "text": "The quick brown fox jumps over the lazy dog.",
                            "num_frames": frames, "speaker": "alice", "language": "english", "instruct": None,
                            "duration": frames / 12.5, "audio_path": f"a/{i}.wav", "ref_audio": None})
        write_prepared(prep, records, codes, progress=False)
        save_speakers({"alice": (g.standard_normal(hidden) * 0.1).astype("float32")}, {"alice": []}, prep)
        write_meta(prep, {"fingerprint": "bench", "dry_run": False, "config": {}, "identity": {}})
    return {"ckpt": str(ckpt), "prepared": str(prep)}


def phase_quantize(work: Path, name: str, extra: list[str]) -> dict:
    from qwen_tts_ext.config import load_config
    from qwen_tts_ext.quantize.config import QuantizeConfig
    from qwen_tts_ext.quantize.pipeline import quantize_checkpoint

    t = time.perf_counter()
    cfg = load_config(QuantizeConfig, None, [f"model={work / 'bf16'}", f"calib={work / 'prepared'}",
                                             f"output={work / name}", "overwrite=true", *extra])
    res = quantize_checkpoint(cfg, progress=False)
    return {"seconds": time.perf_counter() - t, "sizes": res["info"]["sizes"], "peak_rss_mib": _peak_rss_mib(),
            "quality": res["report"]["quality"], "mean_sqnr_rtn_db": res["report"]["mean_sqnr_rtn_db"],
            "mean_sqnr_awq_db": res["report"]["mean_sqnr_awq_db"]}


def phase_load(folder: Path) -> dict:
    import torch

    from qwen_tts_ext.quantize import load_tts

    t = time.perf_counter()
    tts = load_tts(str(folder), device_map="cpu", dtype=torch.bfloat16)
    seconds = time.perf_counter() - t
    model = tts.model
    skip = {id(t) for t in getattr(model, "speech_tokenizer", None).model.parameters()} \
        if hasattr(getattr(model, "speech_tokenizer", None), "model") else set()
    weights = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers())
                  if id(t) not in skip)
    talker = sum(t.numel() * t.element_size() for t in list(model.talker.parameters()) + list(model.talker.buffers()))
    return {"weights": weights, "talker": talker, "load_s": seconds, "peak_rss_mib": _peak_rss_mib()}


def _du(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="1.7b", choices=("0.6b", "1.7b"))
    ap.add_argument("--layers", type=int, default=None, help="talker layers to build (default: all 28)")
    ap.add_argument("--work", default="bench_quantize_work")
    ap.add_argument("--calib-rows", type=int, default=8)
    ap.add_argument("--max-rows", type=int, default=1024)
    ap.add_argument("--grid", type=int, default=10)
    ap.add_argument("--embed-8bit", action="store_true", help="also measure the int8 text embedding variant")
    ap.add_argument("--phase", help=argparse.SUPPRESS)
    ap.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    work = Path(a.work).absolute()
    if a.phase:
        res = {"build": lambda: phase_build(work, a.shape, a.layers),
               "quantize": lambda: phase_quantize(work, a.rest[0], a.rest[1:]),
               "load": lambda: phase_load(Path(a.rest[0]))}[a.phase]()
        print(json.dumps(res, default=str))
        return 0
    work.mkdir(parents=True, exist_ok=True)
    common = ["--work", str(work), "--shape", a.shape] + (["--layers", str(a.layers)] if a.layers else [])
    _child(common + ["--phase", "build"])
    qargs = ["judges=[]", f"calib_rows={a.calib_rows}", "heldout_rows=2", f"max_rows={a.max_rows}", f"grid={a.grid}"]
    runs = {"int4": _child(common + ["--phase", "quantize", "--", "int4", *qargs])}
    if a.embed_8bit:
        runs["int4-e8"] = _child(common + ["--phase", "quantize", "--", "int4-e8", *qargs, "embed_8bit=true"])
    loads = {"bf16": _child(common + ["--phase", "load", "--", str(work / "bf16")])}
    for name in runs:
        loads[name] = _child(common + ["--phase", "load", "--", str(work / name)])
    layers = a.layers or 28
    cfg = json.loads((work / "bf16" / "config.json").read_text())
    full = cfg["talker_config"]["num_hidden_layers"] if a.layers is None else layers
    released = 28

    def extrap(total: int, per_layer: float) -> float:
        return total + (released - full) * per_layer

    s = runs["int4"]["sizes"]
    per_layer_before = s["projections_before"] / full
    per_layer_after = s["projections_after"] / full
    gib = 2**30
    rows = [("quantized projections", s["projections_before"], s["projections_after"], per_layer_before, per_layer_after)]
    lines = [f"# bench_quantize: {a.shape}, {full} talker layers built (extrapolated to {released})", "",
             "| what | bf16 (built) | int4 (built) | bf16 (28 layers) | int4 (28 layers) |", "|---|---|---|---|---|"]
    for label, b, q, pb, pq in rows:
        lines.append(f"| {label} | {b / gib:.3f} GiB | {q / gib:.3f} GiB | {extrap(b, pb) / gib:.3f} GiB | "
                     f"{extrap(q, pq) / gib:.3f} GiB |")
    wb, wq = loads["bf16"]["weights"], loads["int4"]["weights"]
    lines.append(f"| load-time weight memory (no speech tokenizer) | {wb / gib:.3f} GiB | {wq / gib:.3f} GiB | "
                 f"{extrap(wb, per_layer_before + _layer_rest(cfg)) / gib:.3f} GiB | "
                 f"{extrap(wq, per_layer_after + _layer_rest(cfg)) / gib:.3f} GiB |")
    if "int4-e8" in loads:
        we = loads["int4-e8"]["weights"]
        lines.append(f"| ... with the int8 text embedding | | {we / gib:.3f} GiB | | "
                     f"{extrap(we, per_layer_after + _layer_rest(cfg)) / gib:.3f} GiB |")
    lines.append(f"| whole folder on disk | {_du(work / 'bf16') / gib:.3f} GiB | {_du(work / 'int4') / gib:.3f} GiB | | |")
    lines += ["", f"projection ratio bf16/int4: {s['projection_ratio']:.2f}x", ""]
    lines += ["| run | wall s | peak RSS MiB | mean SQNR rtn / awq dB |", "|---|---|---|---|"]
    for name, r in runs.items():
        lines.append(f"| quantize {name} | {r['seconds']:.1f} | {r['peak_rss_mib']:.0f} | "
                     f"{r['mean_sqnr_rtn_db']:.2f} / {r['mean_sqnr_awq_db']:.2f} |")
    for name, r in loads.items():
        lines.append(f"| load {name} | {r['load_s']:.1f} | {r['peak_rss_mib']:.0f} | |")
    print("\n".join(lines))
    (work / "bench_quantize.json").write_text(json.dumps({"runs": runs, "loads": loads}, indent=2, default=str))
    return 0


def _layer_rest(cfg: dict) -> float:
    """Bytes of one talker layer that are not quantized projections (its two RMSNorms + q/k norms, bf16)."""
    t = cfg["talker_config"]
    return 2 * (2 * t["hidden_size"] + 2 * t.get("head_dim", 128))


if __name__ == "__main__":
    raise SystemExit(main())
