"""Write the alpha-sweep report: ``sweep.md`` (table), ``sweep.json`` (everything), ``sweep.png`` (plot)."""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

COMMAND = "evaluate"
# Reports written before the output marker existed are recognised by their files.
LEGACY = {COMMAND: ["sweep.json", "sweep.md"]}

COLUMNS = [
    ("alpha", "alpha", "{:g}"),
    ("stop_rate", "stop rate", "{:.0%}"),
    ("cap_hits", "cap hits", "{:d}"),
    ("duration_ratio", "duration vs α=0", "{:.2f}×"),
    ("mean_seconds", "mean s", "{:.2f}"),
    ("similarity", "speaker sim", "{:.3f}"),
    ("drift", "identity drift", "{:.3f}"),
    ("rtf", "RTF", "{:.2f}"),
    ("cer", "CER", "{:.1%}"),
]
# The offline judges' means (shown when the sweep ran them), headed with their direction from metric_info().
JUDGE_COLUMNS = [
    ("spk_sim", "spk_sim", "{:.3f}"),
    ("mos_distill", "MOS", "{:.2f}"),
    ("dnsmos_ovrl", "DNSMOS", "{:.2f}"),
    ("speaking_rate", "chars/s", "{:.1f}"),
    ("truncated", "truncated", "{:.0%}"),
    ("duration_ratio_text", "duration vs text", "{:.2f}×"),
    ("wer", "WER", "{:.1%}"),
]
ARROWS = {"higher": "↑", "lower": "↓", "target": "◎"}


def _arrow(column: str) -> str:
    from qwen_tts_ext.evaluation.judges import metric_info
    from qwen_tts_ext.evaluation.sweep import metric_of

    m = metric_info().get(metric_of(column))
    return f" {ARROWS[m.direction]}" if m is not None and m.direction in ARROWS else ""


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    cols = [c for c in COLUMNS if c[0] != "cer" or any(r.get("cer") is not None for r in rows)]
    cols += [(k, h + _arrow(k), p) for k, h, p in JUDGE_COLUMNS if any(k in r for r in rows)]
    return cols


def _fmt(value: Any, pattern: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    try:
        return pattern.format(value)
    except (ValueError, TypeError):
        return str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], recommended: float | None, verdicts: Mapping[float, list]) -> str:
    cols = _columns(rows)
    head = "| " + " | ".join(c[1] for c in cols) + " | verdict |"
    sep = "|" + "|".join("---:" for _ in cols) + "|---|"
    lines = [head, sep]
    for r in rows:
        a = float(r["alpha"])
        reasons = verdicts.get(a, [])
        verdict = "**recommended**" if recommended is not None and a == recommended else ("ok" if not reasons else "; ".join(reasons))
        lines.append("| " + " | ".join(_fmt(r.get(k), p) for k, _, p in cols) + f" | {verdict} |")
    return "\n".join(lines)


def render_markdown(report: Mapping[str, Any]) -> str:
    rec = report["recommendation"]
    verdicts = {float(a): r for a, r in rec.get("failures", {}).items()}
    s = report["settings"]
    out = [
        "# Darwin alpha sweep",
        "",
        f"- model: `{s['model']}`  ",
        f"- LLM: `{s.get('llm') or '-'}`  ",
        f"- voice: {s['voice']['name']} ({s['voice']['kind']}, {s['voice']['source']})  ",
        f"- {s['num_sentences']} test sentence(s), tagged script of {s['num_script_segments']} segment(s), seed {s['seed']}  ",
        f"- similarity reference: {s['similarity_reference']}",
        "",
        markdown_table(report["rows"], rec["alpha"] if rec.get("status") != "baseline-unstable" else None, verdicts),
        "",
        _headline(rec, s),
        "",
    ]
    for note in rec.get("notes", []):
        out.append(f"> note: {note}")
    if rec.get("notes"):
        out.append("")
    out += [
        "Columns: *stop rate* = share of test sentences that ended with EOS before the text-derived frame cap; "
        "*duration vs α=0* = mean duration relative to alpha 0; *speaker sim* = mean cosine between the speaker "
        "encoder's embedding of each output and the reference voice; *identity drift* = 1 − mean pairwise cosine "
        "between the segments of the tagged script; *RTF* = generation time / audio time.",
        "",
    ]
    if any(k in r for r in report["rows"] for k, _, _ in JUDGE_COLUMNS):
        out += [
            "Offline judges (`qwen-tts-ext score`'s, independent of the model; means over the test sentences, n/a "
            "where no sentence could be scored; ↑ higher is better, ↓ lower, ◎ closest to typical speech): *spk_sim* "
            "= resemblyzer similarity to the reference clip; *MOS* = DistillMOS; *DNSMOS* = DNSMOS P.835 overall; "
            "*chars/s* = speaking rate over detected speech; *truncated* = share cut off mid-speech; *duration vs "
            "text* = seconds / the text's expected seconds; *WER*/*CER* = word/character error rate of the asr "
            "judge's transcript. Every judge metric, per sentence too, is in sweep.json.",
            "",
        ]
    return "\n".join(out)


def _headline(rec: Mapping[str, Any], s: Mapping[str, Any]) -> str:
    t = s["tolerances"]
    rule = (
        f"the largest alpha whose stop rate and speaker similarity stay within tolerance of alpha 0 (stop rate "
        f"−{t['stop']:.2f} and at least {t['min_stop_rate']:.0%}, similarity −{t['similarity']:.3f}"
        + (f", CER +{t['cer']:.3f}" if s.get("asr") else "")
        + "), for it and every smaller alpha"
    )
    if rec.get("status") == "baseline-unstable":
        return f"**No blend recommended (alpha 0)**: alpha 0 itself fails the stop-rate minimum. Rule: {rule}."
    return f"**Recommended alpha: {rec['alpha']:g}** — {rule}."


def plot(report: Mapping[str, Any], png_path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    alphas = [float(r["alpha"]) for r in rows]
    rec = report["recommendation"]["alpha"] if report["recommendation"].get("status") != "baseline-unstable" else None
    panels = [
        (("stop_rate",), "stop rate (EOS before cap) ↑", (0, 1.05)),
        (("duration_ratio",), "mean duration vs alpha 0", None),
        (("similarity", "spk_sim"), "speaker similarity ↑", None),
        (("drift",), "identity drift across segments ↓", None),
    ]
    judged = any(k in r for r in rows for k in ("mos_distill", "dnsmos_ovrl", "wer"))
    if judged:
        panels += [(("mos_distill", "dnsmos_ovrl"), "MOS ↑", None), (("cer", "wer"), "CER / WER ↓", None)]
    labels = {"similarity": "ECAPA (own encoder)", "spk_sim": "spk_sim (resemblyzer)", "mos_distill": "DistillMOS",
              "dnsmos_ovrl": "DNSMOS ovrl", "cer": "CER", "wer": "WER"}
    fig, axes = plt.subplots(2, 3 if judged else 2, figsize=(13 if judged else 9, 6.5), constrained_layout=True)
    for ax, (keys, title, ylim) in zip(axes.flat, panels):
        drawn = 0
        for key, color in zip(keys, ("tab:blue", "tab:orange")):
            ys = [r.get(key) for r in rows]
            pts = [(a, y) for a, y in zip(alphas, ys) if y is not None and math.isfinite(float(y))]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=color,
                        label=labels.get(key, key) if len(keys) > 1 else None)
                drawn += 1
        if not drawn:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes, color="gray")
        elif len(keys) > 1:
            ax.legend(loc="best", fontsize=7)
        if rec is not None:
            ax.axvline(rec, color="tab:green", ls="--", lw=1, label=f"recommended α={rec:g}")
        ax.set_title(title)
        ax.set_xlabel("alpha")
        if ylim:
            ax.set_ylim(*ylim)
        ax.grid(alpha=0.3)
    if rec is not None:
        axes.flat[0].legend(loc="lower left", fontsize=8)
    else:
        axes.flat[0].set_title("stop rate: alpha 0 already fails, no alpha recommended", color="tab:red", fontsize=9)
    fig.suptitle(f"Darwin alpha sweep: {Path(str(report['settings']['model'])).name}")
    png_path = Path(png_path)
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return png_path


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(type(obj).__name__)


def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_report_files(report: Mapping[str, Any], folder: str | Path,
                       audio_dir: str | Path | None = None) -> dict[str, Path]:
    """Write ``sweep.md``, ``sweep.json``, ``sweep.png`` (and a copy of ``audio_dir`` as ``audio/``) into ``folder``."""
    folder = Path(folder)
    (folder / "sweep.md").write_text(render_markdown(report), encoding="utf-8")
    (folder / "sweep.json").write_text(
        json.dumps(_clean(dict(report)), indent=2, ensure_ascii=False, default=_json_default) + "\n", encoding="utf-8"
    )
    plot(report, folder / "sweep.png")
    if audio_dir is not None and Path(audio_dir).is_dir() and Path(audio_dir).resolve() != (folder / "audio").resolve():
        shutil.copytree(audio_dir, folder / "audio")
    return {name: folder / f"sweep.{name}" for name in ("md", "json", "png")}


def write_report(report: Mapping[str, Any], out_dir: str | Path, audio_dir: str | Path | None = None, *,
                 overwrite: bool = False) -> dict[str, Path]:
    """Write the report folder ``out_dir`` atomically, under the suite's output policy (``qwen_tts_ext.outputs``).

    The files are built in a temp folder beside ``out_dir`` and renamed into place when complete. An
    existing ``out_dir`` is replaced only when it is a previous ``evaluate`` report and ``overwrite``
    is set; anything else (a user's folder, a file) is refused and left as it is.
    """
    from qwen_tts_ext.outputs import output_dir

    with output_dir(out_dir, command=COMMAND, overwrite=overwrite, flag="--out-dir", legacy=LEGACY) as tmp:
        write_report_files(report, tmp, audio_dir)
    final = Path(os.path.abspath(os.path.expanduser(str(out_dir))))
    return {name: final / f"sweep.{name}" for name in ("md", "json", "png")}
