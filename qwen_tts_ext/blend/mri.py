"""The blend "MRI": where the two parents' FFNs differ, layer by layer, before choosing alphas.

For every talker layer and projection it records

- ``rel_distance`` = ||W_llm - W_tts|| / ||W_tts||  (how far a blend moves per unit alpha: the
  blended tensor moves by alpha * rel_distance relative to its own norm),
- ``cosine`` between the flattened tensors (1: same direction, 0: unrelated),
- ``norm_ratio`` = ||W_llm|| / ||W_tts||,

and writes them as JSON plus a PNG heat-map (layers x projections, one panel per metric).
Layers with a large ``rel_distance`` are the ones a fixed alpha disturbs most; a per-layer schedule
can lower alpha there.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Mapping

from qwen_tts_ext.blend.lerp import Lerper, PairReader, torch_threads
from qwen_tts_ext.blend.plan import BlendPlan
from qwen_tts_ext.blend.stream_io import StreamingCheckpoint

METRICS = ("rel_distance", "cosine", "norm_ratio")
_TITLES = {
    "rel_distance": "||W_llm - W_tts|| / ||W_tts||",
    "cosine": "cosine(W_tts, W_llm)",
    "norm_ratio": "||W_llm|| / ||W_tts||",
}


def measure(
    plan: BlendPlan,
    tts: StreamingCheckpoint,
    llm: StreamingCheckpoint,
    progress: Callable[[int], None] | None = None,
) -> dict[str, dict[str, float]]:
    """MRI statistics of every mapped tensor (read one pair at a time into reused buffers)."""
    reader = PairReader(tts, llm, Lerper())
    out: dict[str, dict[str, float]] = {}
    with torch_threads(1):
        for entry in plan.entries:
            raw_t, raw_l = reader.read(entry)
            out[entry.tts_name] = reader.lerper.compare(raw_t, raw_l)
            if progress is not None:
                progress(1)
    return out


def build_report(plan: BlendPlan, stats: Mapping[str, Mapping[str, float]], sources: Mapping[str, Any]) -> dict:
    """Assemble the JSON report from per-tensor statistics."""
    layers = plan.tts.num_hidden_layers
    projs = list(plan.schedule.projections)
    grid = {m: [[math.nan] * len(projs) for _ in range(layers)] for m in METRICS}
    tensors = []
    for e in plan.entries:
        s = stats.get(e.tts_name)
        if s is None:
            continue
        for m in METRICS:
            grid[m][e.layer][projs.index(e.proj)] = s[m]
        tensors.append({"layer": e.layer, "projection": e.proj, "tts_tensor": e.tts_name, "llm_tensor": e.llm_name,
                        "alpha": e.alpha, **{k: float(v) for k, v in s.items()}})
    summary = {}
    for m in METRICS:
        vals = [t[m] for t in tensors if math.isfinite(t[m])]
        if vals:
            summary[m] = {"min": min(vals), "max": max(vals), "mean": sum(vals) / len(vals)}
    if tensors:
        worst = max(tensors, key=lambda t: t["rel_distance"])
        summary["most_different"] = f"layer {worst['layer']} {worst['projection']}_proj"
    return {
        "sources": dict(sources),
        "layers": layers,
        "projections": projs,
        "metrics": {m: _TITLES[m] for m in METRICS},
        "grid": grid,  # grid[metric][layer][projection index]
        "tensors": tensors,
        "summary": summary,
    }


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


def plot_heatmap(report: Mapping[str, Any], png_path: str | Path) -> Path:
    """One panel per metric, layers down, projections across, values annotated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    layers, projs = report["layers"], report["projections"]
    fig, axes = plt.subplots(
        1, len(METRICS), figsize=(3.2 * len(METRICS) + 1.5, max(3.0, 0.28 * layers + 1.6)), squeeze=False
    )
    cmaps = {"rel_distance": "magma", "cosine": "viridis", "norm_ratio": "coolwarm"}
    for ax, m in zip(axes[0], METRICS):
        data = np.array(report["grid"][m], dtype=float).reshape(layers, len(projs))
        kwargs = {}
        if m == "norm_ratio" and np.isfinite(data).any():
            span = max(abs(np.nanmax(data) - 1), abs(1 - np.nanmin(data)), 1e-6)
            kwargs = {"vmin": 1 - span, "vmax": 1 + span}
        im = ax.imshow(data, aspect="auto", cmap=cmaps[m], interpolation="nearest", **kwargs)
        ax.set_title(report["metrics"][m], fontsize=9)
        ax.set_xticks(range(len(projs)), [f"{p}_proj" for p in projs], fontsize=8)
        step = 1 if layers <= 32 else max(1, layers // 16)
        ax.set_yticks(range(0, layers, step), [str(i) for i in range(0, layers, step)], fontsize=7)
        ax.set_ylabel("talker layer")
        if layers * len(projs) <= 160:
            finite = data[np.isfinite(data)]
            digits = 3
            if finite.size:  # enough significant digits that the smallest and largest cells differ
                spread = float(finite.max() - finite.min())
                scale = float(np.abs(finite).max()) or 1.0
                if spread > 0:
                    digits = int(min(6, max(3, np.ceil(np.log10(scale / spread)) + 2)))
            for i in range(layers):
                for j in range(len(projs)):
                    if np.isfinite(data[i, j]):
                        shade = im.cmap(im.norm(data[i, j]))
                        dark = 0.299 * shade[0] + 0.587 * shade[1] + 0.114 * shade[2] < 0.5
                        ax.text(j, i, f"{data[i, j]:.{digits}g}", ha="center", va="center", fontsize=6,
                                color="white" if dark else "black")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    src = report.get("sources", {})
    fig.suptitle(f"Darwin blend MRI: {Path(str(src.get('tts', 'TTS'))).name} vs {Path(str(src.get('llm', 'LLM'))).name}",
                 fontsize=10)
    fig.tight_layout()
    png_path = Path(png_path)
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return png_path


def write_report(report: Mapping[str, Any], out_dir: str | Path, stem: str = "mri") -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.png`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(json.dumps(_json_safe(dict(report)), indent=2), encoding="utf-8")
    png_path = plot_heatmap(report, out_dir / f"{stem}.png")
    return json_path, png_path


def format_summary(report: Mapping[str, Any]) -> str:
    """Three lines for the terminal."""
    s = report.get("summary", {})
    lines = []
    for m in METRICS:
        if m in s:
            lines.append(f"  {m:<13} min {s[m]['min']:.4g}  mean {s[m]['mean']:.4g}  max {s[m]['max']:.4g}")
    if "most_different" in s:
        lines.append(f"  most different: {s['most_different']}")
    return "\n".join(lines)
