"""What data prep reports: ``stats.json`` (kept/rejected by reason, hours, speakers, languages, a
frames histogram, speaker similarity, this run's throughput), the console summary, ``rejects.jsonl``."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qwen_tts_ext.constants import SAMPLE_RATE, SAMPLES_PER_FRAME
from qwen_tts_ext.prep.config import PrepareConfig


@dataclass
class Timing:
    start: float = field(default_factory=time.perf_counter)
    processed_rows: int = 0
    processed_seconds: float = 0.0


def log(cfg: PrepareConfig, msg: str) -> None:
    if cfg.progress:
        print(msg, file=sys.stderr, flush=True)


def frames_histogram(frames: list[int]) -> dict:
    if not frames:
        return {"edges": [], "counts": []}
    edges = [0, 13, 25, 50, 75, 100, 150, 200, 250, 300, 375]  # 0, 1, 2, 4, 6, 8, 12, 16, 20, 24, 30 s
    top = max(frames) + 1
    if top > edges[-1]:
        edges.append(top)
    counts, _ = np.histogram(frames, bins=edges)
    return {"edges": edges, "counts": counts.tolist(), "frame_rate_hz": SAMPLE_RATE / SAMPLES_PER_FRAME}


def write_jsonl(path: Path, items: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for it in items:
            f.write(json.dumps(it, ensure_ascii=False) + "\n")


def stats(cfg, records, rejects, ref_rejects, total_rows, timing: Timing, similarity=None, spk_sources=None) -> dict:
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
        "frames_histogram": frames_histogram([r["num_frames"] for r in records]),
        "speaker_similarity": similarity or {},
        "this_run": {"rows_processed": timing.processed_rows, "audio_seconds_encoded": round(timing.processed_seconds, 3),
                     "elapsed_seconds": round(elapsed, 3),
                     "clips_per_second": round(timing.processed_rows / elapsed, 3) if elapsed > 0 else None,
                     "audio_seconds_per_second": round(timing.processed_seconds / elapsed, 3) if elapsed > 0 else None},
    }


def summary(out: Path, stats: dict) -> str:
    lines = [f"prepared {out}: kept {stats['kept']} clips ({stats['hours']:.3f} h), rejected {stats['rejected']}"]
    if stats["rejected_by_reason"]:
        lines.append("  rejected: " + ", ".join(f"{k} {v}" for k, v in stats["rejected_by_reason"].items())
                     + f"  (details: {out / 'rejects.jsonl'})")
    if stats["warnings"]["clipping"]:
        lines.append(f"  warning: {stats['warnings']['clipping']} clip(s) are clipped (kept; see stats.json clipping_clips)")
    lines.append("  speakers: " + ", ".join(f"{k} ({v['clips']})" for k, v in stats["speakers"].items()))
    return "\n".join(lines)
