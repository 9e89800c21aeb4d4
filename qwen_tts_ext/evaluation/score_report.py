"""The report of ``qwen-tts-ext score``: ``scores.csv``, ``scores.json``, ``scores.md`` and the summary table.

Metric directions and descriptions come from the judge registry's ``metric_info()`` (passed in as ``info``).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Sequence

MD_CLIP_ROWS = 50  # scores.md lists every clip up to this many (scores.csv always has all)
ARROWS = {"higher": "↑", "lower": "↓", "target": "◎"}
BASE_COLUMNS = ("id", "path", "seconds", "language", "speaker", "text", "status", "message")


def summarize(rows: Sequence[dict], metrics: Sequence[str]) -> dict[str, dict[str, Any]]:
    """metric -> {mean, std, min, max, n} over the clips that have it (std: sample std, 0 for one clip)."""
    out = {}
    for name in metrics:
        vals = [float(r[name]) for r in rows if isinstance(r.get(name), (int, float)) and math.isfinite(r[name])]
        n = len(vals)
        if not n:
            out[name] = {"mean": None, "std": None, "min": None, "max": None, "n": 0}
            continue
        mean = sum(vals) / n
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else 0.0
        out[name] = {"mean": mean, "std": std, "min": min(vals), "max": max(vals), "n": n}
    return out


def _num(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return "n/a"
        return f"{v:.1f}" if abs(v) >= 100 else f"{v:.3f}"
    return str(v)


def summary_table(summary: dict[str, dict], info: dict[str, Any]) -> str:
    """Markdown: metric, better (arrow), mean, std, min, max, n."""
    lines = ["| metric | better | mean | std | min | max | n |", "|---|:---:|---:|---:|---:|---:|---:|"]
    for name, s in summary.items():
        if not s["n"]:
            continue  # not measured for any clip (listed under the table in scores.md)
        direction = getattr(info.get(name), "direction", "")
        arrow = f"{ARROWS.get(direction, '?')} {direction}".strip()
        lines.append(f"| {name} | {arrow} | " + " | ".join(_num(s[k]) for k in ("mean", "std", "min", "max", "n"))
                     + " |")
    return "\n".join(lines)


def _md_cell(v: Any) -> str:
    return _num(v).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: dict[str, Any], info: dict[str, Any]) -> str:
    s, t = report["settings"], report["timing"]
    metrics = list(report["summary"])
    rows = report["rows"]
    bad = [r for r in rows if r["status"] != "ok"]
    out = ["# Scores", "",
           f"- audio: `{s['audio']}` ({s['clips']} clip(s), {s['kind']}); transcripts: {s['text_source']}  ",
           f"- reference: {s['reference']}  ",
           f"- judges: {', '.join(j['name'] for j in report['judges']['ran']) or 'none'}  "]
    for skip in report["judges"]["skipped"]:
        out.append(f"- skipped: {skip['note']}  ")
    if t.get("clips_per_second"):
        out.append(f"- time: load {t['load_seconds']:.1f} s, scoring {t['score_seconds']:.1f} s "
                   f"({t['clips_per_second']:.2f} clips/s, {t['audio_seconds_per_second']:.2f} s of audio per second)")
    if bad:
        out.append(f"- {len(bad)} clip(s) could not be scored (status column)")
    out += ["", "## Summary", "", summary_table(report["summary"], info), "",
            "↑ higher is better, ↓ lower is better, ◎ a target value is best (see each metric's typical range)."]
    unmeasured = [m for m, v in report["summary"].items() if not v["n"]]
    if unmeasured:
        out.append(f"Not measured for any clip: {', '.join(unmeasured)} (no transcript, reference or generation "
                   "record where a metric needs one).")
    out.append("")
    described = [m for m in metrics if m in info]
    if described:
        out += ["| metric | what it measures | typical |", "|---|---|---|"]
        for m in described:
            out.append(f"| {m} | {_md_cell(info[m].description)} | {_md_cell(info[m].typical or '')} |")
        out.append("")
    shown = rows[:MD_CLIP_ROWS]
    out += ["## Clips" + (f" (first {MD_CLIP_ROWS} of {len(rows)}; every clip is in scores.csv)"
                          if len(rows) > MD_CLIP_ROWS else ""), ""]
    cols = ["id", "seconds", *(m for m in metrics if report["summary"][m]["n"]), "status"]
    out.append("| " + " | ".join(cols) + " |")
    out.append("|---|" + "|".join("---:" for _ in cols[1:-1]) + "|---|")
    for r in shown:
        cells = [_md_cell(r.get(c)) for c in cols[:-1]]
        status = r["status"] if r["status"] == "ok" and not r.get("message") else (
            f"{r['status']}: {r.get('message') or ''}".rstrip(": "))
        out.append("| " + " | ".join(cells) + f" | {_md_cell(status)} |")
    return "\n".join(out) + "\n"


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def write_reports(report: dict[str, Any], folder: Path, info: dict[str, Any]) -> None:
    metrics = list(report["summary"])
    columns = [*BASE_COLUMNS, *metrics]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for r in report["rows"]:
        writer.writerow([_csv_value(r.get(c)) for c in columns])
    (folder / "scores.csv").write_text(buf.getvalue(), encoding="utf-8")
    (folder / "scores.json").write_text(json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n",
                                        encoding="utf-8")
    (folder / "scores.md").write_text(render_markdown(report, info), encoding="utf-8")
