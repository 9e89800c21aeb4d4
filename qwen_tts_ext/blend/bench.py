"""Benchmark of the streaming Darwin blend against the naive approach and the I/O floor.

Builds synthetic checkpoints with the *real* tensor names and shapes (the model classes are
instantiated on the ``meta`` device from the configs of :mod:`qwen_tts_ext.released`: by default
Qwen3-TTS-12Hz-1.7B-Base, 480 tensors / 1.93 B parameters, and Qwen3-1.7B, tied embeddings, two
shards; ``--shape 0.6b`` for the 0.6B pair), filled with random bf16 values
(``qwen_tts_ext.testing.tiny_checkpoint.write_random_weights``), in a temp folder that is removed
afterwards. Each method then runs in its own subprocess, which reports its wall time and peak RSS
(``ru_maxrss``):

- ``python+torch``: import torch and exit (the baseline every method pays);
- ``floor``: read both inputs completely and write one output of the TTS size (plain read/write);
- ``stream``: ``qwen-tts-ext blend`` (this package), with and without hashing the sources (the
  hash cache is off, so ``stream`` is a first blend; re-blending the same parents skips hashing);
- ``naive``: ``safetensors.torch.load_file`` both models, blend the 84 tensors, ``save_file``.

Numbers are for a warm page cache (the inputs were just written). ``--layers`` scales both models'
depth down for a quick run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GIB = 2**30


# --------------------------------------------------------------------------- synthetic checkpoints


def model_specs(shape: str = "1.7b", layers: int | None = None) -> tuple[dict, list, dict, list]:
    """The TTS and LLM configs of ``shape`` (:mod:`qwen_tts_ext.released`) and the tensors each saves.

    The stock classes are instantiated on the ``meta`` device: real names and shapes, no memory.
    """
    import torch
    from qwen_tts.core.models.configuration_qwen3_tts import Qwen3TTSConfig
    from qwen_tts.core.models.modeling_qwen3_tts import Qwen3TTSForConditionalGeneration
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from qwen_tts_ext import released
    from qwen_tts_ext.testing.tiny_checkpoint import random_init_specs

    cfg = released.tts_config(shape, layers=layers)
    lcfg = released.llm_config(shape, layers=layers)
    with torch.device("meta"):
        tts = Qwen3TTSForConditionalGeneration(Qwen3TTSConfig(**released.class_kwargs(cfg)))
        llm = Qwen3ForCausalLM(Qwen3Config(**released.class_kwargs(lcfg)))
    return cfg, random_init_specs(tts), lcfg, random_init_specs(llm)


def _nbytes(specs, float_bytes: int = 2) -> int:
    import math

    return sum(math.prod(s) * (8 if init == "int_zeros" else float_bytes) for _, s, init in specs)


def build_checkpoints(root: Path, layers: int | None = None, shape: str = "1.7b") -> tuple[Path, Path, dict]:
    """Write the synthetic TTS and LLM folders (random bf16 weights) under ``root``; return their paths and facts."""
    import math

    from qwen_tts_ext.testing.tiny_checkpoint import write_random_weights

    facts = {}
    tts_dir, llm_dir = root / "tts", root / "llm"
    tts_dir.mkdir(parents=True)
    llm_dir.mkdir(parents=True)
    cfg, tts_specs, lcfg, llm_specs = model_specs(shape, layers)

    facts["tts_tensors"] = len(tts_specs)
    facts["tts_params"] = sum(math.prod(s) for _, s, _ in tts_specs)
    facts["tts_bytes"] = write_random_weights(tts_specs, tts_dir, seed=1)
    (tts_dir / "config.json").write_text(json.dumps(cfg))
    (tts_dir / "generation_config.json").write_text(json.dumps({"max_new_tokens": 2048}))

    facts["llm_tensors"] = len(llm_specs)
    facts["llm_params"] = sum(math.prod(s) for _, s, _ in llm_specs)
    facts["llm_bytes"] = write_random_weights(llm_specs, llm_dir, seed=2, max_shard_bytes=_nbytes(llm_specs) // 2 + 1)
    (llm_dir / "config.json").write_text(json.dumps(lcfg))
    return tts_dir, llm_dir, facts


# --------------------------------------------------------------------------- methods (run in children)


def _method_floor(tts: Path, llm: Path, out: Path) -> None:
    from qwen_tts_ext.checkpoint_io import weight_files

    buf = bytearray(16 << 20)
    view = memoryview(buf)
    out.mkdir(parents=True)
    with open(out / "model.safetensors", "wb", buffering=0) as fout:
        for f in weight_files(tts):
            with open(f, "rb", buffering=0) as fin:
                while n := fin.readinto(view):
                    fout.write(view[:n])
    for f in weight_files(llm):
        with open(f, "rb", buffering=0) as fin:
            while fin.readinto(view):
                pass


def _method_stream(tts: Path, llm: Path, out: Path, hash_sources: bool = True) -> None:
    from qwen_tts_ext.blend.pipeline import BlendConfig, blend_checkpoint

    cfg = BlendConfig(tts=str(tts), llm=str(llm), output=str(out), alpha=0.03, hash_sources=hash_sources)
    blend_checkpoint(cfg, log=lambda msg: None, progress=False)


def _method_naive(tts: Path, llm: Path, out: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from qwen_tts_ext.checkpoint_io import weight_files

    a = 0.03
    t = {}
    for f in weight_files(tts):
        t.update(load_file(f))
    m = {}
    for f in weight_files(llm):
        m.update(load_file(f))
    for name in list(t):
        if ".mlp." in name and name.startswith("talker.model.layers."):
            src = m[name.removeprefix("talker.")]
            t[name] = ((1 - a) * t[name].float() + a * src.float()).to(t[name].dtype)
    out.mkdir(parents=True)
    save_file(t, str(out / "model.safetensors"), metadata={"format": "pt"})


METHODS = {
    "python+torch": None,
    "floor": _method_floor,
    "stream": _method_stream,
    "stream-nohash": lambda tts, llm, out: _method_stream(tts, llm, out, hash_sources=False),
    "naive": _method_naive,
}


def _child(method: str, tts: str, llm: str, out: str) -> None:
    import torch  # noqa: F401  (every method pays for it; measured by "python+torch")

    t0 = time.perf_counter()
    fn = METHODS[method]
    if fn is not None:
        fn(Path(tts), Path(llm), Path(out))
    seconds = time.perf_counter() - t0
    print(json.dumps({"method": method, "seconds": seconds, "peak_rss": peak_rss()}))


def peak_rss() -> int:
    """This process's peak resident set (VmHWM). Unlike ``ru_maxrss``, it is not inherited from the
    parent across fork + exec, so each method's child reports only its own peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_method(method: str, tts: Path, llm: Path, out: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "qwen_tts_ext.blend.bench", "--_child", method, str(tts), str(llm), str(out)],
        capture_output=True, text=True,
        env={**os.environ, "QWEN_TTS_EXT_HASH_CACHE": "0"},  # measure a first blend: hash everything
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- verification


def same_tensors(a: Path, b: Path, names=None) -> bool:
    """Raw-byte equality of the tensors of two checkpoints (chunked reads, constant memory)."""
    import os as _os

    from qwen_tts_ext.checkpoint_io import LazyCheckpoint

    chunk = 64 << 20
    ba, bb = bytearray(chunk), bytearray(chunk)
    with LazyCheckpoint(a) as ca, LazyCheckpoint(b) as cb:
        for name in names or ca.keys():
            la, lb = ca.location(name), cb.location(name)
            if (la.dtype, la.shape) != (lb.dtype, lb.shape):
                return False
            with open(la.file, "rb", buffering=0) as fa, open(lb.file, "rb", buffering=0) as fb:
                done = 0
                while done < la.nbytes:
                    k = min(chunk, la.nbytes - done)
                    _os.preadv(fa.fileno(), [memoryview(ba)[:k]], la.offset + done)
                    _os.preadv(fb.fileno(), [memoryview(bb)[:k]], lb.offset + done)
                    if ba[:k] != bb[:k]:
                        return False
                    done += k
    return True


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--_child":
        _child(*argv[1:5])
        return 0
    p = argparse.ArgumentParser(prog="python scripts/bench_blend.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=["1.7b", "0.6b"], default="1.7b",
                   help="which released TTS model and its LLM (Qwen3-1.7B / Qwen3-0.6B) to imitate")
    p.add_argument("--layers", type=int, default=28, help="talker and LLM depth, 1..28 (28 = the released size)")
    p.add_argument("--workdir", default=None, help="where the temp folder goes (default: the system temp dir)")
    p.add_argument("--methods", default="python+torch,floor,stream,stream-nohash,naive",
                   help=f"comma list from {', '.join(METHODS)}")
    p.add_argument("--outputs-dir", default=None,
                   help="write the outputs here instead (e.g. /dev/shm to take the disk's write speed out)")
    p.add_argument("--repeat", type=int, default=1, help="runs per method; the fastest is reported")
    p.add_argument("--no-verify", action="store_true", help="skip checking stream and naive outputs agree")
    p.add_argument("--keep", action="store_true", help="keep the synthetic checkpoints (prints the folder)")
    args = p.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        print(f"error: unknown methods {unknown}; choose from {', '.join(METHODS)}", file=sys.stderr)
        return 2

    if not 1 <= args.layers <= 28:
        print("error: --layers must be between 1 and 28", file=sys.stderr)
        return 2

    base = Path(args.workdir or tempfile.gettempdir())
    # inputs (1.7b: TTS 3.86 GB + LLM 3.44 GB at 28 layers) + up to two outputs kept for verification
    _, tts_specs, _, llm_specs = model_specs(args.shape, args.layers)
    est = 3 * _nbytes(tts_specs) + _nbytes(llm_specs)
    free = shutil.disk_usage(base).free
    print(f"disk: {free / GIB:.1f} GiB free in {base}, this run needs about {est / GIB:.1f} GiB")
    if free < est * 1.05:
        print("error: not enough free disk space; use --workdir elsewhere or fewer --layers", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="bench_blend-", dir=base))
    out_root = Path(tempfile.mkdtemp(prefix="bench_blend-out-", dir=args.outputs_dir)) if args.outputs_dir else root
    try:
        t0 = time.perf_counter()
        tts, llm, facts = build_checkpoints(root, args.layers, args.shape)
        print(f"built synthetic checkpoints in {time.perf_counter() - t0:.1f} s: "
              f"TTS {facts['tts_tensors']} tensors, {facts['tts_params'] / 1e9:.2f} B params, "
              f"{facts['tts_bytes'] / 1e9:.2f} GB; LLM {facts['llm_tensors']} tensors, "
              f"{facts['llm_params'] / 1e9:.2f} B params, {facts['llm_bytes'] / 1e9:.2f} GB (2 shards)")
        results: dict[str, dict] = {}
        for rep in range(args.repeat):
            for m in methods:
                out = out_root / f"out-{m}"
                if out.exists():
                    shutil.rmtree(out)
                os.sync()  # start every method without the previous one's dirty pages in flight
                res = run_method(m, tts, llm, out)
                print(f"  [{rep + 1}/{args.repeat}] {m:<14} {res['seconds']:7.2f} s   "
                      f"peak RSS {res['peak_rss'] / GIB:5.2f} GiB", flush=True)
                best = results.get(m)
                if best is None or res["seconds"] < best["seconds"]:
                    results[m] = {**res, "peak_rss": max(res["peak_rss"], (best or res)["peak_rss"])}
                keep = m in ("stream", "naive") and not args.no_verify and rep == args.repeat - 1
                if out.exists() and not keep:
                    shutil.rmtree(out)
        if not args.no_verify and (out_root / "out-stream").exists() and (out_root / "out-naive").exists():
            ok = same_tensors(out_root / "out-stream", out_root / "out-naive")
            print(f"stream and naive outputs hold identical tensors: {ok}")
        floor = results.get("floor", {}).get("seconds")
        print("\nmethod          wall s   x floor   peak RSS GiB   (warm page cache; best of "
              f"{args.repeat}, peak over all runs)")
        for m, r in results.items():
            if m == "python+torch":
                print(f"{m:<14} {'-':>7}   {'-':>7}   {r['peak_rss'] / GIB:8.2f}")
                continue
            ratio = f"{r['seconds'] / floor:7.2f}" if floor else "      -"
            print(f"{m:<14} {r['seconds']:7.2f}   {ratio}   {r['peak_rss'] / GIB:8.2f}")
        print(json.dumps({"shape": args.shape, "layers": args.layers, **facts, "results": results}))
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
        if out_root != root:
            shutil.rmtree(out_root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
