"""Benchmark of the streaming Darwin blend against the naive approach and the I/O floor.

Builds synthetic checkpoints with the *real* tensor names and shapes (the model classes are
instantiated on the ``meta`` device from configs with the released dimensions: Qwen3-TTS-12Hz-1.7B-
Base, 480 tensors / 1.93 B parameters, and Qwen3-1.7B, tied embeddings, two shards), filled with
random bf16 values, in a temp folder that is removed afterwards. Each method then runs in its own
subprocess, which reports its wall time and peak RSS (``ru_maxrss``):

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


def tts_config(layers: int) -> dict:
    talker = dict(
        vocab_size=3072, hidden_size=2048, intermediate_size=6144, num_hidden_layers=layers, num_attention_heads=16,
        num_key_value_heads=8, head_dim=128, hidden_act="silu", text_vocab_size=151936, text_hidden_size=2048,
        num_code_groups=16, spk_id={}, spk_is_dialect={}, codec_language_id={}, max_position_embeddings=32768,
        rope_theta=1000000, rope_scaling={"rope_type": "default", "mrope_section": [24, 20, 20], "interleaved": True},
        code_predictor_config=dict(vocab_size=2048, hidden_size=1024, intermediate_size=3072, num_hidden_layers=5,
                                   num_attention_heads=16, num_key_value_heads=8, head_dim=128, num_code_groups=16),
    )
    return dict(talker_config=talker, speaker_encoder_config=dict(enc_dim=2048), tts_model_type="base",
                tts_model_size="1b7", tokenizer_type="qwen3_tts_tokenizer_12hz")


def llm_config(layers: int) -> dict:
    return dict(vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=layers,
                num_attention_heads=16, num_key_value_heads=8, head_dim=128, hidden_act="silu",
                max_position_embeddings=40960, rope_theta=1000000, tie_word_embeddings=True)


def _meta_specs(model) -> list:
    """(name, shape, is_float) per saved tensor (tied tensors once, as save_pretrained writes them)."""
    seen, out = set(), []
    for name, t in model.state_dict(keep_vars=True).items():
        if id(t) in seen:
            continue
        seen.add(id(t))
        out.append((name, tuple(t.shape), t.is_floating_point()))
    return out


def _write_random(specs, out_dir: Path, pool, seed: int, max_shard_bytes=None) -> int:
    import torch

    from qwen_tts_ext.checkpoint_io import SafetensorsStreamWriter, TensorSpec

    gen = torch.Generator().manual_seed(seed)
    st_specs = [TensorSpec(n, "BF16" if f else "I64", s) for n, s, f in specs]
    with SafetensorsStreamWriter(out_dir, st_specs, max_shard_bytes=max_shard_bytes, metadata={"format": "pt"}) as w:
        for spec, (name, shape, is_float) in zip(st_specs, specs):
            n = spec.nbytes // (2 if is_float else 8)
            if not is_float:
                w.write(name, torch.zeros(shape, dtype=torch.int64))
                continue
            t = torch.empty(n, dtype=torch.bfloat16)
            pos = 0
            while pos < n:  # tile random slices of a random pool: distinct, cheap, realistic magnitudes
                off = int(torch.randint(0, pool.numel() // 2, (1,), generator=gen))
                k = min(n - pos, pool.numel() - off)
                t[pos:pos + k] = pool[off:off + k]
                pos += k
            w.write(name, t.view(shape))
    return sum(s.nbytes for s in st_specs)


def build_checkpoints(root: Path, layers: int) -> tuple[Path, Path, dict]:
    """Write the synthetic TTS and LLM folders under ``root``; return their paths and facts."""
    import torch
    from qwen_tts.core.models.configuration_qwen3_tts import Qwen3TTSConfig
    from qwen_tts.core.models.modeling_qwen3_tts import Qwen3TTSForConditionalGeneration
    from transformers import Qwen3Config, Qwen3ForCausalLM

    facts = {}
    pool = (torch.randn(32 << 20, generator=torch.Generator().manual_seed(0)) * 0.02).to(torch.bfloat16)
    tts_dir, llm_dir = root / "tts", root / "llm"
    tts_dir.mkdir(parents=True)
    llm_dir.mkdir(parents=True)

    cfg = tts_config(layers)
    with torch.device("meta"):
        tts = Qwen3TTSForConditionalGeneration(Qwen3TTSConfig(**cfg))
    specs = _meta_specs(tts)
    facts["tts_tensors"] = len(specs)
    facts["tts_params"] = sum(int(torch.Size(s).numel()) for _, s, _ in specs)
    facts["tts_bytes"] = _write_random(specs, tts_dir, pool, seed=1)
    (tts_dir / "config.json").write_text(json.dumps({"model_type": "qwen3_tts",
                                                     "architectures": ["Qwen3TTSForConditionalGeneration"], **cfg}))
    (tts_dir / "generation_config.json").write_text(json.dumps({"max_new_tokens": 2048}))

    lcfg = llm_config(layers)
    with torch.device("meta"):
        llm = Qwen3ForCausalLM(Qwen3Config(**lcfg))
    specs = _meta_specs(llm)
    facts["llm_tensors"] = len(specs)
    facts["llm_params"] = sum(int(torch.Size(s).numel()) for _, s, _ in specs)
    total = sum(int(torch.Size(s).numel()) * 2 for _, s, _ in specs)
    facts["llm_bytes"] = _write_random(specs, llm_dir, pool, seed=2, max_shard_bytes=total // 2 + 1)
    (llm_dir / "config.json").write_text(json.dumps({"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"],
                                                     **lcfg}))
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
    p.add_argument("--layers", type=int, default=28, help="talker and LLM depth (28 = the released size)")
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

    base = Path(args.workdir or tempfile.gettempdir())
    # inputs (TTS ~ 3.86 GB + LLM ~ 3.44 GB at 28 layers) + up to two outputs kept for verification
    est = (3.86 + 3.44 + 2 * 3.86) * 1e9 * (args.layers + 8) / 36
    free = shutil.disk_usage(base).free
    print(f"disk: {free / GIB:.1f} GiB free in {base}, this run needs about {est / GIB:.1f} GiB")
    if free < est * 1.05:
        print("error: not enough free disk space; use --workdir elsewhere or fewer --layers", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="bench_blend-", dir=base))
    out_root = Path(tempfile.mkdtemp(prefix="bench_blend-out-", dir=args.outputs_dir)) if args.outputs_dir else root
    try:
        t0 = time.perf_counter()
        tts, llm, facts = build_checkpoints(root, args.layers)
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
        print(json.dumps({"layers": args.layers, **facts, "results": results}))
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
