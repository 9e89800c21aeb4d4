"""Benchmark of the Darwin genome search: evaluations per minute on a tiny model, and the cost of one
evaluation at a released size estimated from measured synthesis RTF and in-memory blend time.

    python scripts/bench_search.py --tiny                 # 12-evaluation search on a tiny 4-layer model
    python scripts/bench_search.py --released 0.6b        # RTF + blend time at the released 0.6B shape
    python scripts/bench_search.py --tiny --released 0.6b,1.7b --threads 2

Random checkpoints never emit EOS, so the talker is made to emit it after a fixed number of frames (a
forward hook on the codec head, as the tests do): generation time per frame does not depend on what is
said, so RTF = generation seconds / audio seconds is measured honestly at any frame count.

The estimate for one evaluation with the default fitness settings (configs/search.yaml: 3 sentences x 1
seed + 5 emotion renderings = 8 utterances) assumes SECONDS_PER_UTTERANCE of audio per utterance and
JUDGE_CPU_PER_AUDIO_S CPU seconds of judging per second of judged audio (docs/benchmarks.md, bench_score:
the default judges at 1.24-1.30x real time on 2 cores).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

SECONDS_PER_UTTERANCE = 3.0  # an 8-12 word sentence (espeak-ng: 2.6-4.5 s)
UTTERANCES = 8  # 3 sentences x 1 seed + 5 emotion tags (configs/search.yaml)
JUDGED_UTTERANCES = 3
JUDGE_CPU_PER_AUDIO_S = 1 / 1.27  # bench_score: 1.24-1.30x real time with the default judges


@contextlib.contextmanager
def eos_after(model, frames: int):
    """The talker emits codec EOS as its ``frames``-th new token (see tests/_synthesis_helpers.force_eos_after)."""
    eos = model.config.talker_config.codec_eos_token_id
    calls = {"n": 0}

    def hook(module, inputs, output):
        calls["n"] += 1
        if calls["n"] > frames:
            output = output.clone()
            output[..., eos] += 1e4
        return output

    handle = model.talker.codec_head.register_forward_hook(hook)
    had, prev = "generate" in vars(model), vars(model).get("generate")
    orig = model.generate

    def generate(*a, **k):
        calls["n"] = 0
        return orig(*a, **k)

    model.generate = generate
    try:
        yield
    finally:
        handle.remove()
        if had:
            model.generate = prev
        else:
            del model.generate


@contextlib.contextmanager
def _load_patched(frames: int):
    """Every Synthesizer loaded inside stops after ``frames`` frames."""
    from qwen_tts_ext.synthesis import engine

    keep = []
    original = engine.Synthesizer.load
    load = original.__func__

    def patched(cls, *a, **k):
        s = load(cls, *a, **k)
        cm = eos_after(s.model, frames)
        cm.__enter__()
        keep.append(cm)
        return s

    engine.Synthesizer.load = classmethod(patched)
    try:
        yield
    finally:
        engine.Synthesizer.load = original
        for cm in keep:
            cm.__exit__(None, None, None)


def _reference(root: Path) -> Path:
    """A 2 s speech-like reference clip (the voice of a Base checkpoint)."""
    import numpy as np
    import soundfile as sf

    from qwen_tts_ext.testing.speech import synthetic_voice

    ref = root / "ref.wav"
    sf.write(str(ref), np.asarray(synthetic_voice("x" * 28, sample_rate=22050), dtype=np.float32), 22050)
    return ref


def bench_tiny(root: Path, frames: int) -> dict:
    from qwen_tts_ext.blend.search_cli import main
    from qwen_tts_ext.testing.tiny_checkpoint import TinySpec, build_tiny_llm, build_tiny_tts

    tts = build_tiny_tts(root / "tiny-tts", TinySpec(num_hidden_layers=4), seed=0, overwrite=True)
    llm = build_tiny_llm(root / "tiny-llm", tts, seed=1, overwrite=True)
    ref = _reference(root)
    out = root / "search"
    t0 = time.perf_counter()
    with _load_patched(frames), contextlib.redirect_stdout(sys.stderr):  # only the bench's JSON on stdout
        rc = main(["--model", str(tts), "--llm", str(llm), "--ref-audio", str(ref), "--output", str(out), "--budget",
                   "12", "--population", "4", "--freeze-layers", "0", "--judges", "", "synthesis.cap_margin=0.5",
                   "synthesis.cap_slack_seconds=0.2", "--overwrite" if out.exists() else "--device=cpu"])
    wall = time.perf_counter() - t0
    assert rc == 0
    report = json.loads((out / "search.json").read_text())
    per = report["seconds_per_evaluation"]
    return {"evaluations": len(report["evaluations"]), "wall_s": wall, "search_s": report["seconds"],
            "s_per_evaluation": per, "evaluations_per_minute": 60 / per,
            "utterances_per_evaluation": report["best"]["metrics"]["segments"], "frames_per_utterance": frames}


def bench_released(root: Path, shape: str, frames: int, repeats: int) -> dict:
    import torch

    from qwen_tts_ext.blend.runtime import apply_blend_to_model, restore_ffn
    from qwen_tts_ext.synthesis.config import SynthesisOptions
    from qwen_tts_ext.synthesis.engine import Synthesizer
    from qwen_tts_ext.testing.tiny_checkpoint import build_released_tts, build_tiny_llm

    tts = build_released_tts(root / f"tts-{shape}", shape, seed=0, overwrite=True)
    llm = build_tiny_llm(root / f"llm-{shape}", tts, seed=1, dtype=torch.bfloat16, overwrite=True)
    t0 = time.perf_counter()
    synth = Synthesizer.load(tts, device="cpu", dtype="float32")
    load_s = time.perf_counter() - t0
    voice = synth.voice(ref_audio=str(_reference(root)))
    opts = SynthesisOptions(cap_margin=4.0, cap_slack_seconds=10.0)
    gen = audio = 0.0
    with eos_after(synth.model, frames):
        synth.synthesize("Hello there.", voice, opts)  # warm-up
        for i in range(repeats):
            res = synth.synthesize("Please remember to water the plants while I'm away.", voice,
                                   SynthesisOptions(cap_margin=4.0, cap_slack_seconds=10.0, seed=i))
            gen += sum(s.gen_seconds for s in res.segments)
            audio += res.seconds
    blends = []
    for alpha in (0.03, 0.05):
        t = time.perf_counter()
        apply_blend_to_model(synth.model, str(llm), alpha)
        blends.append(time.perf_counter() - t)
    restore_ffn(synth.model)
    rtf = gen / audio
    synth_s = UTTERANCES * SECONDS_PER_UTTERANCE * rtf
    judge_s = JUDGED_UTTERANCES * SECONDS_PER_UTTERANCE * JUDGE_CPU_PER_AUDIO_S
    blend_s = blends[-1]
    return {"shape": shape, "load_s": load_s, "frames_per_utterance": frames, "utterances": repeats,
            "rtf": rtf, "blend_s_first": blends[0], "blend_s_again": blends[1],
            "estimate_s_per_evaluation": synth_s + judge_s + blend_s,
            "estimate_parts": {"synthesis_s": synth_s, "judges_s": judge_s, "blend_s": blend_s}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="time a 12-evaluation search on a tiny 4-layer model")
    p.add_argument("--released", default="", help="comma-separated released shapes to time (0.6b, 1.7b)")
    p.add_argument("--frames", type=int, default=25, help="frames per utterance at released size (25 = 2 s)")
    p.add_argument("--tiny-frames", type=int, default=4, help="frames per utterance on the tiny model")
    p.add_argument("--repeats", type=int, default=2, help="timed utterances at released size")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--work", default="", help="scratch folder (default: a temp folder)")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    root = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_search-"))
    root.mkdir(parents=True, exist_ok=True)
    results = {"threads": args.threads, "load_before": os.getloadavg()[0], "torch": torch.__version__}
    if args.tiny:
        results["tiny"] = bench_tiny(root, args.tiny_frames)
        print(json.dumps(results["tiny"]), file=sys.stderr)
    for shape in [s for s in args.released.split(",") if s.strip()]:
        results[f"released_{shape}"] = bench_released(root, shape.strip(), args.frames, args.repeats)
        print(json.dumps(results[f"released_{shape}"]), file=sys.stderr)
    results["load_after"] = os.getloadavg()[0]
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
