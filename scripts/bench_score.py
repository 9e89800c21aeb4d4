"""Benchmark: ``qwen-tts-ext score`` with the default judges on espeak-ng clips of about 3 s.

Generates ``--clips`` clips (several sentences, voices, speeds and pitches; a ``NAME.txt`` transcript
beside each) and one reference clip in a temp folder, then scores them ``--repeats`` times, each in a
fresh subprocess (so every repeat pays the judges' imports and weight loading, as a user's run does),
and prints for every repeat and their median: judge load time, scoring time, clips/s, seconds of audio
per wall-clock second (above 1 is faster than real time), each judge's time (wall clock: with judges side
by side they overlap), the peak RSS and CPU time (``resource.getrusage``) of the scoring process, and the
machine's load average (other processes on a shared machine slow the wall-clock numbers, not the CPU time).

    python scripts/bench_score.py                        # 100 clips, default judges, 1 repeat
    python scripts/bench_score.py --clips 20 --repeats 3 --judges distillmos,timing
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# ~3 s each at espeak's 150-180 words per minute
SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river.",
    "Please call Stella and ask her to bring these things with her.",
    "We will meet again when the morning comes and the rain has stopped.",
    "She sells sea shells by the sea shore every single summer.",
    "A rainbow is a division of white light into many beautiful colors.",
    "Could you tell me the way to the nearest train station, please?",
    "It was a quiet evening, and the children were already asleep.",
    "I can't believe you finished the whole project in one weekend.",
    "The library closes at nine, so we should leave a little earlier.",
    "Remember to water the plants and feed the cat while I'm away.",
]
VOICES = ["en-us+m3", "en-us+f2", "en-gb+m7", "en-us+f4", "en-gb+f3", "en-us+m1"]


def build_clips(root: Path, n: int) -> tuple[Path, Path]:
    """``n`` clips under ``root/clips`` (NAME.wav + NAME.txt) and ``root/ref.wav``; returns (folder, ref)."""
    from qwen_tts_ext.testing.speech import espeak_to_wav

    folder = root / "clips"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        text = SENTENCES[i % len(SENTENCES)]
        wav = espeak_to_wav(text, folder / f"clip_{i:04d}.wav", voice=VOICES[(i // len(SENTENCES) + i) % len(VOICES)],
                            speed=155 + 10 * (i % 3), pitch=35 + (i * 7) % 40)
        wav.with_suffix(".txt").write_text(text + "\n", encoding="utf-8")
    ref = espeak_to_wav("This is the voice every clip is compared with, spoken clearly.", root / "ref.wav",
                        voice=VOICES[0], speed=160, pitch=45)
    return folder, ref


def worker(args: argparse.Namespace) -> int:
    """One scoring run in this process; one JSON line on stdout."""
    t_start = time.perf_counter()
    from qwen_tts_ext.evaluation.score import preflight, score
    from qwen_tts_ext.evaluation.score_config import ScoreConfig

    cfg = ScoreConfig(audio=args.audio, ref_audio=args.ref, judges=[j for j in args.judges.split(",") if j],
                      jobs=args.jobs, threads=args.threads,
                      out_dir=str(Path(tempfile.gettempdir()) / f"bench-score-{os.getpid()}"), progress=False)
    cfg.validate()
    report = score(cfg, preflight(cfg))
    info = report.pop("_info")
    bad = [r for r in report["rows"] if r["status"] != "ok"]
    t = report["timing"]
    use = resource.getrusage(resource.RUSAGE_SELF)
    out = {**t, "total_seconds": round(time.perf_counter() - t_start, 3),
           "cpu_seconds": round(use.ru_utime + use.ru_stime, 2), "loadavg": round(os.getloadavg()[0], 2),
           "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
           "judges": [j["name"] for j in report["judges"]["ran"]],
           "skipped": [j["note"] for j in report["judges"]["skipped"]], "failed_clips": len(bad),
           "means": {k: (None if v["mean"] is None else round(v["mean"], 4)) for k, v in report["summary"].items()},
           "directions": {k: info[k].direction for k in report["summary"] if k in info}}
    print(json.dumps(out))
    return 0


def show(label: str, r: dict) -> None:
    per = ", ".join(f"{k} {v:.2f} s" for k, v in r["per_judge_seconds"].items())
    print(f"{label}: load {r['load_seconds']:.2f} s | scoring {r['score_seconds']:.2f} s for {r['clips']} clips "
          f"({r['audio_seconds']:.1f} s of audio): {r['clips_per_second']:.2f} clips/s, "
          f"{r['audio_seconds_per_second']:.2f} s of audio per second | decode {r['decode_seconds']:.2f} s | {per} | "
          f"peak RSS {r['peak_rss_mib']:.0f} MiB | process total {r['total_seconds']:.1f} s, "
          f"CPU {r['cpu_seconds']:.0f} s "
          f"({r['audio_seconds'] / r['cpu_seconds']:.2f} s of audio per CPU second) | load average {r['loadavg']:.1f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=100, help="number of clips (default 100)")
    p.add_argument("--repeats", type=int, default=1, help="scoring runs, each in a fresh process (default 1)")
    p.add_argument("--judges", default="", help="comma-separated judges (default: every installed judge)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads per judge (default: the judges' 1)")
    p.add_argument("--jobs", type=int, default=0, help="judges side by side (default: 2 on 2+ cores)")
    p.add_argument("--keep", default="", help="generate the clips into this new folder and keep them")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--audio", help=argparse.SUPPRESS)
    p.add_argument("--ref", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.clips < 1 or args.repeats < 1 or args.threads < 0 or args.jobs < 0:
        p.error("--clips and --repeats must be >= 1, --threads and --jobs >= 0")
    if args.keep and Path(args.keep).exists() and any(Path(args.keep).iterdir()):
        p.error(f"--keep {args.keep} exists and is not empty; give a new folder")
    from qwen_tts_ext.testing.speech import espeak_available

    if not espeak_available():
        print("error: espeak-ng is not installed (apt-get install espeak-ng)", file=sys.stderr)
        return 2
    if args.judges:
        from qwen_tts_ext.evaluation.judges import JUDGES

        unknown = [j for j in args.judges.split(",") if j and j not in JUDGES]
        if unknown:
            p.error(f"unknown judge(s) {', '.join(unknown)}; choose from {', '.join(JUDGES)}")

    with tempfile.TemporaryDirectory(prefix="bench-score-") as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        t0 = time.perf_counter()
        folder, ref = build_clips(root, args.clips)
        print(f"generated {args.clips} espeak-ng clips in {time.perf_counter() - t0:.1f} s ({folder}); "
              f"{os.cpu_count()} CPU cores", file=sys.stderr)
        results = []
        for k in range(args.repeats):
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--audio", str(folder), "--ref", str(ref),
                   "--judges", args.judges, "--threads", str(args.threads), "--jobs", str(args.jobs)]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                print(res.stderr, file=sys.stderr)
                print(f"error: repeat {k + 1} failed (exit {res.returncode})", file=sys.stderr)
                return 1
            r = json.loads(res.stdout.strip().splitlines()[-1])
            results.append(r)
            show(f"repeat {k + 1}", r)
    first = results[0]
    print(f"judges: {', '.join(first['judges'])}; side by side: {first['jobs']}; "
          f"threads per judge: {args.threads or 1}"
          + (f"; skipped: {' | '.join(first['skipped'])}" if first["skipped"] else "")
          + (f"; {first['failed_clips']} clip(s) failed" if first["failed_clips"] else ""))
    if len(results) > 1:
        med = {k: statistics.median(r[k] for r in results)
               for k in ("load_seconds", "score_seconds", "clips_per_second", "audio_seconds_per_second",
                         "decode_seconds", "peak_rss_mib", "total_seconds", "audio_seconds", "clips", "cpu_seconds",
                         "loadavg")}
        med["per_judge_seconds"] = {j: statistics.median(r["per_judge_seconds"][j] for r in results)
                                    for j in first["per_judge_seconds"]}
        show(f"median of {len(results)}", med)
    print("mean scores: " + ", ".join(f"{k} {v}" for k, v in first["means"].items()))
    rtf = statistics.median(r["audio_seconds_per_second"] for r in results)
    print(f"{'faster' if rtf > 1 else 'SLOWER'} than real time: {rtf:.2f} s of audio per second of scoring")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
