"""Benchmark: ``qwen-tts-ext prepare`` vs. a faithful re-implementation of the official loop.

Builds a tiny checkpoint and an espeak-ng corpus (22.05 kHz WAVs of 1-15 s, several languages) in a
temp folder, then runs each implementation in its own fresh subprocess (so neither inherits the
other's warm kernel caches), ``--repeats`` times alternating, and prints clips/s, audio-seconds/s
and the ratio of the medians.

The official loop (QwenLM/Qwen3-TTS ``finetuning/prepare_data.py``): read the JSONL, call
``Qwen3TTSTokenizer.encode(paths)`` on fixed batches of 32 rows in file order (which loads and
resamples each file with librosa), write ``audio_codes`` into an output JSONL. Ours does more work:
validation, x-vectors for every clip, and a ``datasets`` dataset besides the JSONL.

    python scripts/bench_prepare.py --clips 96 --repeats 5
    python scripts/bench_prepare.py --processes 2     # + our command in 1 vs 2 processes (accelerate launch)

With ``--processes N`` two more rows time our command as a user runs it, start-up included:
``python finetuning/prepare_data.py`` (1 process) and ``accelerate launch --multi_gpu --num_processes N
finetuning/prepare_data.py`` (N ranks over gloo, each with cores/N threads, merged by the main rank).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SENTENCES = [
    ("english", "en-us", "Yes."),
    ("english", "en-us", "Please call Stella."),
    ("english", "en-us", "The quick brown fox jumps over the lazy dog."),
    ("english", "en-us", "A rainbow is a division of white light into many beautiful colors, and it takes the "
                         "shape of an arch, with its two ends apparently beyond the horizon."),
    ("german", "de", "Guten Morgen, wie geht es dir heute?"),
    ("german", "de", "Der Zug fährt um acht Uhr ab, und wir müssen uns beeilen, wenn wir ihn noch erreichen wollen."),
    ("french", "fr", "Bonjour, comment allez-vous aujourd'hui?"),
    ("spanish", "es", "El tren sale a las ocho, y todavía tenemos que comprar los billetes para todo el grupo."),
]


def build_corpus(root: Path, n: int) -> Path:
    """``n`` espeak clips, lengths from ~1 to ~15 s (long ones are several sentences), shuffled order."""
    import random

    from qwen_tts_ext.testing.speech import espeak_to_wav

    rng = random.Random(0)
    (root / "wavs").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        lang, voice, text = SENTENCES[i % len(SENTENCES)]
        reps = rng.choice([1, 1, 1, 2, 3])
        text = " ".join([text] * reps)
        path = root / f"wavs/clip_{i:04d}.wav"
        espeak_to_wav(text, path, voice=voice + rng.choice(["+f2", "+m3"]), speed=rng.choice([150, 170, 190]),
                      pitch=20 + i % 60)  # every clip distinct (identical clips would be rejected as duplicates)
        rows.append({"audio": str(path), "text": text, "speaker": f"spk{i % 4}", "language": lang})
    rng.shuffle(rows)
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return manifest


# --------------------------------------------------------------------------- the two implementations


def run_official(manifest: Path, tokenizer_dir: Path, out: Path) -> None:
    """QwenLM/Qwen3-TTS finetuning/prepare_data.py, same logic (BATCH_INFER_NUM = 32, file order)."""
    from qwen_tts import Qwen3TTSTokenizer

    tokenizer_12hz = Qwen3TTSTokenizer.from_pretrained(str(tokenizer_dir), device_map="cpu")
    total_lines = [json.loads(line.strip()) for line in open(manifest).readlines()]
    final_lines, batch_lines, batch_audios = [], [], []
    for line in total_lines:
        batch_lines.append(line)
        batch_audios.append(line["audio"])
        if len(batch_lines) >= 32:
            enc_res = tokenizer_12hz.encode(batch_audios)
            for code, line in zip(enc_res.audio_codes, batch_lines):
                line["audio_codes"] = code.cpu().tolist()
                final_lines.append(line)
            batch_lines.clear()
            batch_audios.clear()
    if batch_audios:
        enc_res = tokenizer_12hz.encode(batch_audios)
        for code, line in zip(enc_res.audio_codes, batch_lines):
            line["audio_codes"] = code.cpu().tolist()
            final_lines.append(line)
    with open(out, "w") as f:
        for line in final_lines:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")


def run_ours(manifest: Path, model_dir: Path, out: Path, workers: int) -> None:
    from qwen_tts_ext.prep import PrepareConfig, prepare

    prepare(PrepareConfig(manifest=str(manifest), model=str(model_dir), output=str(out), progress=False,
                          num_workers=workers, overwrite=True))


def _child(args) -> None:
    """One timed run in a fresh process; prints a JSON line."""
    import datasets  # noqa: F401  (imports are not timed, for either side)
    import qwen_tts  # noqa: F401
    import torch  # noqa: F401

    from qwen_tts_ext.prep import pipeline  # noqa: F401

    work = Path(args.work)
    if args.child == "ours":
        import shutil

        shutil.rmtree(work / "ours", ignore_errors=True)
    t0 = time.perf_counter()
    if args.child == "official":
        run_official(work / "manifest.jsonl", work / "tiny" / "speech_tokenizer", work / "official.jsonl")
    else:
        run_ours(work / "manifest.jsonl", work / "tiny", work / "ours", args.workers)
    print(json.dumps({"seconds": time.perf_counter() - t0}))


def _time_command(work: Path, processes: int, workers: int, env: dict) -> float | None:
    """Seconds of our command as users run it (fresh output): 1 process plain, N under accelerate launch."""
    import shutil
    import socket

    out = work / f"cmd-{processes}"
    shutil.rmtree(out, ignore_errors=True)
    repo = Path(__file__).resolve().parents[1]
    tail = [str(repo / "finetuning" / "prepare_data.py"), "--manifest", str(work / "manifest.jsonl"), "--model",
            str(work / "tiny"), "--output", str(out), "--quiet"]
    if processes == 1:
        cmd = [sys.executable] + tail + ["--num-workers", str(workers)]
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        per = max(1, (os.cpu_count() or 1) // processes)
        env = dict(env, OMP_NUM_THREADS=str(per), CUDA_VISIBLE_DEVICES="")
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
               str(port)] + tail + ["--num-workers", str(max(1, workers // processes))]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        print(r.stderr[-3000:], file=sys.stderr)
        return None
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=96, help="corpus size (default 96)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per implementation (default 5)")
    p.add_argument("--workers", type=int, default=2, help="our decoding threads (default 2)")
    p.add_argument("--processes", type=int, default=1,
                   help="also time our command in 1 vs N processes under accelerate launch (default 1: not timed)")
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--child", choices=["official", "ours"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child(args)
        return 0

    import soundfile as sf

    from qwen_tts_ext.testing.speech import espeak_available
    from qwen_tts_ext.testing.tiny_checkpoint import build_tiny_tts

    if not espeak_available():
        print("error: espeak-ng is required for the benchmark corpus (apt-get install espeak-ng)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench_prepare_") as tmp:
        work = Path(tmp)
        print(f"building tiny checkpoint and a {args.clips}-clip espeak corpus in {work} ...", flush=True)
        build_tiny_tts(work / "tiny")
        manifest = build_corpus(work, args.clips)
        rows = [json.loads(x) for x in manifest.read_text().splitlines()]
        durations = [sf.info(r["audio"]).duration for r in rows]
        audio_s = sum(durations)
        print(f"corpus: {len(rows)} clips, {audio_s:.1f} s of audio, {min(durations):.1f}-{max(durations):.1f} s "
              f"per clip, 22.05 kHz mono WAV; {os.cpu_count()} CPU cores", flush=True)
        impls = ["official", "ours"] + (["cmd-1", f"cmd-{args.processes}"] if args.processes > 1 else [])
        times: dict[str, list[float]] = {impl: [] for impl in impls}
        for rep in range(args.repeats):
            for impl in impls:
                env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
                if impl.startswith("cmd-"):
                    sec = _time_command(work, int(impl[4:]), args.workers, env)
                    if sec is None:
                        return 1
                else:
                    cmd = [sys.executable, __file__, "--child", impl, "--work", str(work), "--workers", str(args.workers)]
                    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
                    if r.returncode != 0:
                        print(r.stderr[-3000:], file=sys.stderr)
                        return 1
                    sec = json.loads(r.stdout.strip().splitlines()[-1])["seconds"]
                times[impl].append(sec)
                print(f"  run {rep + 1} {impl:<8} {sec:7.2f} s", flush=True)
        # sanity: both produced codes for every clip, and ours match the official frame counts
        official = [json.loads(x) for x in (work / "official.jsonl").read_text().splitlines()]
        import datasets

        ours = datasets.load_from_disk(str(work / "ours" / "dataset"))
        assert len(official) == len(rows), "the official loop dropped clips"
        if len(ours) < len(rows):  # the generated corpus repeats exact clips past ~120 (pitch x voice x speed)
            print(f"note: ours kept {len(ours)} of {len(rows)} clips (exact duplicates are rejected by prep)")
        print()
        print(f"{'':10} {'median s':>9} {'clips/s':>9} {'audio-s/s':>10} {'best s':>8} {'clips/s':>9} {'audio-s/s':>10}")
        med, best = {}, {}
        for impl in impls:
            med[impl], best[impl] = statistics.median(times[impl]), min(times[impl])
            print(f"{impl:10} {med[impl]:9.2f} {len(rows) / med[impl]:9.2f} {audio_s / med[impl]:10.2f} "
                  f"{best[impl]:8.2f} {len(rows) / best[impl]:9.2f} {audio_s / best[impl]:10.2f}")
        print(f"\nspeed-up (ours / official, clips/s): median {med['official'] / med['ours']:.2f}x, "
              f"best-of-{args.repeats} {best['official'] / best['ours']:.2f}x")
        if args.processes > 1:
            n = args.processes
            print(f"our command, {n} processes / 1 process (clips/s, start-up included): median "
                  f"{med['cmd-1'] / med[f'cmd-{n}']:.2f}x, best-of-{args.repeats} {best['cmd-1'] / best[f'cmd-{n}']:.2f}x; "
                  f"{n} processes / official: median {med['official'] / med[f'cmd-{n}']:.2f}x")
            print(f"(load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
        print("(timings on a shared machine are noisy: runs alternate, each in a fresh process)")
        print("(ours also validates every clip, computes an x-vector per clip and writes a datasets dataset)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
