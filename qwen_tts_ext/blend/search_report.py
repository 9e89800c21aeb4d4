"""The Darwin search's report: ``search.json`` (everything), ``search.md`` (to read), ``search.png`` (to look at),
and ``best_genome.yaml`` (what ``darwin_blend.py --config`` consumes as it is).

``search.md`` holds the best genome as per-layer bars (L00..L27 like the Darwin card), the fitness over the
evaluations, the top-k candidates, and the judges' numbers of the best genome next to the flat 3% blend and
alpha 0.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

SKIP_COLUMNS = ("clips",)
BAR = 24  # characters of the widest bar (alpha_max)


def best_genome_yaml(report: dict[str, Any]) -> str:
    """The best genome as BlendConfig keys (tts, llm, alpha_per_layer, freeze_layers, tensors), with comments."""
    best = report["best"]
    s = report["settings"]
    body = {
        "tts": s["model"],
        "llm": s["llm"],
        "alpha_per_layer": best["schedule"],
        "freeze_layers": list(s["frozen_layers"]),
        "tensors": list(s["projections"]),
    }
    head = [
        "# Best genome of `qwen-tts-ext search` (the Darwin genome search). Blend it with:",
        "#   python finetuning/darwin_blend.py --config best_genome.yaml --output OUT",
        f"# fitness {best['fitness']:.4f} (alpha 0 = 0; flat {s['flat_alpha']:g} = "
        f"{_fmt(report['flat']['fitness'])}), evaluation {best.get('n', '-')} of {report['evaluations_total']}",
        f"# genes {json.dumps(best['genes'])}" + (f", trust {best['trust']}" if best.get("trust") is not None else ""),
    ]
    return "\n".join(head) + "\n" + yaml.safe_dump(body, sort_keys=False, default_flow_style=None, width=1000)


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int,)):
        return str(v)
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.{digits}g}"
    return str(v)


def layer_bars(ratios: dict[str, list[float]], alpha_max: float, frozen: list[int]) -> list[str]:
    """``L00 ████████          0.0310`` per layer (the mean over projections; per projection when they differ)."""
    projs = list(ratios)
    n = len(ratios[projs[0]])
    same = all(ratios[p] == ratios[projs[0]] for p in projs)
    lines = []
    for layer in range(n):
        vals = [ratios[p][layer] for p in projs]
        v = vals[0] if same else sum(vals) / len(vals)
        bar = "█" * int(round(BAR * v / alpha_max)) if alpha_max > 0 else ""
        extra = "" if same else "  (" + ", ".join(f"{p} {x:.4f}" for p, x in zip(projs, vals)) + ")"
        tag = "  frozen" if layer in frozen else ""
        lines.append(f"L{layer:02d} {bar:<{BAR}} {v:.4f}{extra}{tag}")
    return lines


def _metric_table(report: dict[str, Any]) -> list[str]:
    rows = [("alpha 0", report["baseline"]), (f"flat {report['settings']['flat_alpha']:g}", report["flat"]),
            ("best", report["best"])]
    dirs = report.get("directions", {})
    keys = ["fitness", "cap_hits", "segments", "seconds", "contrast"]
    keys += [k for k in report["baseline"].get("metrics", {}) if k not in keys and k not in SKIP_COLUMNS
             and k not in ("audio_seconds", "blend_seconds", "rtf")]
    keys += ["rtf"]
    arrows = {"higher": " ↑", "lower": " ↓", "target": " →"}
    lines = ["| metric | " + " | ".join(name for name, _ in rows) + " |", "|---|" + "---|" * len(rows)]
    for k in keys:
        cells = []
        for _, r in rows:
            v = r.get("fitness") if k == "fitness" else r.get("metrics", {}).get(k)
            cells.append(_fmt(v))
        lines.append(f"| {k}{arrows.get(dirs.get(k, ''), '')} | " + " | ".join(cells) + " |")
    return lines


def markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    best = report["best"]
    ev = report["evaluations"]
    out = [
        "# Darwin genome search",
        "",
        f"Model `{s['model']}` x LLM `{s['llm']}`; {s['genes']} genes ({'per layer and projection' if s['per_projection'] else 'per layer'}"
        f"{', + trust over the MRI prior' if s['mri_prior'] else ''}) in [0, {s['alpha_max']:g}], frozen layers "
        f"{', '.join(map(str, s['frozen_layers'])) or 'none'}; CMA-ES population {s['population']}, sigma0 "
        f"{s['sigma0']:g}, seed {s['seed']}, {report['generations']} generations, {len(ev)} candidates "
        f"({report['measured']} measured in the last run, {report['recalled']} recalled from the journal).",
        "",
        f"**Best fitness {best['fitness']:.4f}** (alpha 0 = 0 by construction; flat {s['flat_alpha']:g} = "
        f"{_fmt(report['flat']['fitness'])}). Blend it: `python finetuning/darwin_blend.py --config "
        "best_genome.yaml --output OUT`.",
        "",
    ]
    for note in report.get("notes", []):
        out.append(f"- note: {note}")
    if report.get("notes"):
        out.append("")
    out += ["## Best genome (final ratio per talker layer)", "", "```"]
    out += layer_bars(best["ratios"], s["alpha_max"], s["frozen_layers"])
    if best.get("trust") is not None:
        out.append(f"trust {best['trust']:.4f} (final = trust x MRI prior + (1 - trust) x genome)")
    out += ["```", "", "## Judges: best vs flat vs alpha 0", ""]
    out += _metric_table(report)
    out += ["", "Fitness terms of the best (each in [-2, 2], 0 = alpha 0): "
            + ", ".join(f"{k} {v:+.3f}" for k, v in best.get("scores", {}).items()), ""]
    out += ["## Fitness over evaluations", "", "![search](search.png)", "", "```"]
    running = -math.inf
    for r in ev:
        running = max(running, r["fitness"])
        out.append(f"{r.get('n', '-'):>4} gen {r.get('generation', '-'):>3}  fitness {r['fitness']:+.4f}  "
                   f"best {running:+.4f}")
    out += ["```", "", f"## Top {len(report['top'])}", "",
            "| rank | eval | fitness | mean ratio | max ratio | cap hits | " + " | ".join(report["top_metrics"]) + " |",
            "|---|---|---|---|---|---|" + "---|" * len(report["top_metrics"])]
    for i, r in enumerate(report["top"], 1):
        flat = [v for vs in r["ratios"].values() for v in vs]
        m = r.get("metrics", {})
        out.append(f"| {i} | {r.get('n', '-')} | {r['fitness']:.4f} | {sum(flat) / len(flat):.4f} | {max(flat):.4f} | "
                   f"{m.get('cap_hits', '-')} | " + " | ".join(_fmt(m.get(k)) for k in report["top_metrics"]) + " |")
    out.append("")
    return "\n".join(out)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ev = report["evaluations"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4))
    fits = [max(r["fitness"], -5.0) for r in ev]  # failures (-100) drawn at -5
    best, run = [], -math.inf
    for f in fits:
        run = max(run, f)
        best.append(run)
    a.plot(range(len(fits)), fits, ".", label="candidate (failures at -5)")
    a.plot(range(len(fits)), best, "-", label="best so far")
    a.axhline(0, color="gray", lw=0.8, label="alpha 0")
    if report["flat"].get("fitness") is not None:
        a.axhline(max(report["flat"]["fitness"], -5.0), color="orange", lw=0.8, ls="--", label="flat 3%")
    a.set_xlabel("evaluation")
    a.set_ylabel("fitness (higher is better)")
    a.legend(fontsize=8)
    ratios = report["best"]["ratios"]
    n = len(next(iter(ratios.values())))
    width = 0.8 / len(ratios)
    for i, (p, vals) in enumerate(ratios.items()):
        b.bar([x + i * width for x in range(n)], vals, width=width, label=p)
    b.axhline(report["settings"]["flat_alpha"], color="orange", lw=0.8, ls="--")
    b.set_xlabel("talker layer")
    b.set_ylabel("blend ratio")
    b.set_title("best genome")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(report: dict[str, Any], paths: dict[str, Path]) -> None:
    """Write the four files to the (temp) ``paths`` given for best_genome.yaml, search.json, search.md, search.png."""
    paths["best_genome.yaml"].write_text(best_genome_yaml(report), encoding="utf-8")
    paths["search.json"].write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    paths["search.md"].write_text(markdown(report), encoding="utf-8")
    plot(report, paths["search.png"])
