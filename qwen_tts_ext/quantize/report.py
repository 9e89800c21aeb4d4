"""What a quantized folder says about itself: provenance, the measured cost, the model card.

- ``quantization.json``: what was quantized (tensor names), group size, method, calibration rows and
  their sha256, sizes before/after, library versions, the command's config;
- ``quantize_report.json`` / ``.md``: per projection the output SQNR (dB, higher is better) of
  round-to-nearest and of AWQ on the sampled calibration inputs, the AWQ ratio chosen; teacher-forced
  codec-0 cross-entropy and KL(float || quantized) on the held-out rows for both methods;
- ``README.md``: the card (what changed, what did not, how to load it, the numbers).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import qwen_tts_ext


def _version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def sqnr_db(err: float, energy: float) -> float:
    """10 log10(signal / noise); inf for an exact reconstruction."""
    if err <= 0:
        return math.inf
    return 10.0 * math.log10(max(energy, 1e-30) / err)


def layer_row(name: str, shape: tuple, ratio: float, errs: dict, energy: float, rows: int) -> dict:
    return {"name": name, "shape": list(shape), "awq_ratio": ratio, "rows": rows,
            "sqnr_rtn_db": sqnr_db(errs["rtn"], energy), "sqnr_awq_db": sqnr_db(errs["awq"], energy),
            "mse_rtn": errs["rtn"] / max(rows, 1), "mse_awq": errs["awq"] / max(rows, 1)}


def sizes(src, chosen: dict, embed, int8: dict | None = None) -> dict:
    """Bytes: the quantized projections before/after, the talker, and all weights (without speech_tokenizer)."""
    def nb(k: str) -> int:
        return src.location(k).nbytes

    before = sum(nb(f"{n}.weight") for n in chosen)
    after = sum(q.nbytes() for q in chosen.values())
    total_before = sum(nb(k) for k in src.keys())
    talker_before = sum(nb(k) for k in src.keys() if k.startswith("talker.") and
                        not k.startswith("talker.code_predictor."))
    emb_before = emb_after = 0
    if embed is not None:
        emb_before = nb("talker.model.text_embedding.weight")
        emb_after = sum(t.numel() * t.element_size() for t in embed)
    cp_before = sum(nb(f"{n}.weight") for n in (int8 or {}))
    cp_after = sum(q.numel() * q.element_size() + s.numel() * s.element_size() for q, s in (int8 or {}).values())
    saved = (before - after) + (emb_before - emb_after) + (cp_before - cp_after)
    return {"projections_before": before, "projections_after": after,
            "projection_ratio": before / after if after else None,
            "text_embedding_before": emb_before, "text_embedding_after": emb_after,
            "code_predictor_8bit_before": cp_before, "code_predictor_8bit_after": cp_after,
            "talker_before": talker_before, "talker_after": talker_before - (saved - (cp_before - cp_after)),
            "weights_before": total_before, "weights_after": total_before - saved}


def provenance(cfg, folder: Path, data, names: list[str], size: dict, seconds: float, embed_8bit: bool,
               int8: list[str] | None = None) -> dict:
    return {
        "tool": "qwen-tts-ext", "tool_version": qwen_tts_ext.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "format": "qwen-tts-ext-int4", "bits": 4, "group_size": cfg.group_size, "zero_point": True,
        "symmetric": False, "method": cfg.method,
        "layout": "uint8, two codes per byte (low nibble = even input channel); scales in the model dtype; "
                  "uint8 zero points; act_scale = 1 / AWQ scale, multiplied into the input",
        "quantized": names, "text_embedding_8bit": embed_8bit, "int8": list(int8 or []),
        "kept": ", ".join(k for k, on in (("codec embedding", True), ("text embedding", not embed_8bit),
                                          ("codec head", True), ("norms", True), ("code predictor", not int8),
                                          ("speaker encoder", True), ("speech tokenizer", True)) if on)
                + ": byte-identical",
        "source": {"path": str(folder), "id": cfg.model},
        "calibration": {"data": str(cfg.calib) if cfg.calib else
                        f"{len(data.calib_ids) + len(data.heldout_ids)} sentences spoken by the float model as "
                        f"{cfg.speaker}", "rows": len(data.calib_ids), "positions": data.positions,
                        "heldout_rows": len(data.heldout_ids), "sha256": data.sha256, "seed": cfg.seed,
                        "heldout_ids": data.heldout_ids},
        "sizes": size, "seconds": round(seconds, 1),
        "versions": {k: _version(k) for k in ("torch", "torchao", "transformers", "safetensors", "qwen-tts")},
        "config": dict(cfg.__dict__),
    }


def build(cfg, info: dict, layers: list[dict], quality: dict, judged: dict | None = None) -> dict:
    def mean(key):
        vals = [r[key] for r in layers if math.isfinite(r[key])]
        return sum(vals) / len(vals) if vals else None

    return {"method": cfg.method, "group_size": cfg.group_size, "layers": layers,
            "mean_sqnr_rtn_db": mean("sqnr_rtn_db"), "mean_sqnr_awq_db": mean("sqnr_awq_db"),
            "quality": quality, "sizes": info["sizes"], "calibration": info["calibration"],
            "judges": judged or {"skipped": "not asked for (judges: [])"}}


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def summary(rep: dict) -> str:
    s = rep["sizes"]
    lines = [f"quantized {len(rep['layers'])} projections ({rep['method']}, group {rep['group_size']}): "
             f"{_mb(s['projections_before'])} -> {_mb(s['projections_after'])}; "
             f"weights {_mb(s['weights_before'])} -> {_mb(s['weights_after'])}",
             f"mean output SQNR: rtn {rep['mean_sqnr_rtn_db']:.2f} dB, awq {rep['mean_sqnr_awq_db']:.2f} dB"]
    for label, q in rep["quality"].items():
        lines.append(f"held-out codec-0 ({label}): CE {q['ce_reference']:.4f} -> {q['ce']:.4f} "
                     f"(+{q['ce_increase']:.4f}), KL {q['kl']:.5f}, top-1 agreement {q['top1_agreement']:.3f}")
    return "\n".join(lines)


def markdown(rep: dict) -> str:
    lines = ["# INT4 quantization report", "", "```", summary(rep), "```", ""]
    if rep["quality"]:
        lines += ["| method | CE float | CE int4 | CE increase | KL | top-1 agreement | positions |",
                  "|---|---|---|---|---|---|---|"]
        for label, q in rep["quality"].items():
            lines.append(f"| {label} | {q['ce_reference']:.4f} | {q['ce']:.4f} | {q['ce_increase']:+.4f} | "
                         f"{q['kl']:.5f} | {q['top1_agreement']:.3f} | {q['positions']} |")
        lines.append("")
    lines += ["Per projection: output SQNR (dB, higher is better) on the sampled calibration inputs.", "",
              "| projection | shape | rows | SQNR rtn | SQNR awq | awq ratio |", "|---|---|---|---|---|---|"]
    for r in rep["layers"]:
        lines.append(f"| {r['name']} | {r['shape'][0]}x{r['shape'][1]} | {r['rows']} | {r['sqnr_rtn_db']:.2f} | "
                     f"{r['sqnr_awq_db']:.2f} | {r['awq_ratio']:.2f} |")
    j = rep["judges"]
    if "metrics" in j:
        lines += ["", f"Judges on {len(j['sentences'])} sentences spoken as {j['speaker']} (same seeds; the float "
                  "rendering is the speaker reference):", "", "| metric | float | int4 | better |", "|---|---|---|---|"]
        for m, v in j["metrics"].items():
            fmt = (lambda x: "-" if x is None else f"{x:.4g}")
            lines.append(f"| {m} | {fmt(v['float'])} | {fmt(v['int4'])} | {v['better'] or ''} |")
        lines += [f"- {n}" for n in j.get("notes", [])]
    else:
        lines += ["", f"Judges: {j.get('skipped')}."] + [f"- {n}" for n in j.get("notes", [])]
    lines.append("")
    return "\n".join(lines)


def write(rep: dict, folder: Path) -> None:
    (Path(folder) / "quantize_report.json").write_text(json.dumps(rep, indent=2, default=str) + "\n", encoding="utf-8")
    (Path(folder) / "quantize_report.md").write_text(markdown(rep), encoding="utf-8")


def model_card(cfg, info: dict, rep: dict) -> str:
    name = Path(cfg.output).name or "int4"
    s = info["sizes"]
    return "\n".join([
        "---", "library_name: qwen-tts", "pipeline_tag: text-to-speech",
        "tags:", "- qwen3-tts", "- int4", "- awq" if cfg.method == "awq" else "- rtn", "---",
        f"# {name}", "",
        f"A weight-only INT4 export of **{cfg.model}**, made with qwen-tts-ext {qwen_tts_ext.__version__} "
        f"(`qwen-tts-ext quantize`).", "",
        "| setting | value |", "|---|---|",
        f"| quantized | the talker's attention q/k/v/o and MLP gate/up/down projections ({len(info['quantized'])} tensors) |",
        f"| method | {'activation-aware scales (AWQ search)' if cfg.method == 'awq' else 'round-to-nearest'} |",
        f"| bits / group size | 4 / {cfg.group_size}, asymmetric with zero points |",
        f"| text embedding | {'int8 rows' if info['text_embedding_8bit'] else 'unchanged'} |",
        f"| code predictor | {'int8 linears (' + str(len(info['int8'])) + ')' if info['int8'] else 'unchanged'} |",
        f"| unchanged (byte-identical) | {info['kept'].split(':')[0]} |",
        f"| calibration | {info['calibration']['rows']} rows of `{info['calibration']['data']}`, sha256 `{info['calibration']['sha256']}` |",
        f"| projections | {_mb(s['projections_before'])} -> {_mb(s['projections_after'])} |",
        f"| weights (without speech tokenizer) | {_mb(s['weights_before'])} -> {_mb(s['weights_after'])} |",
        f"| libraries | torch {info['versions']['torch']}, torchao {info['versions']['torchao']} |", "",
        "## Load", "", "```python", "import torch", "from qwen_tts import Qwen3TTSModel",
        "from qwen_tts_ext.quantize import apply_quantized", "",
        f'tts = Qwen3TTSModel.from_pretrained("{name}", dtype=torch.bfloat16)  # projections absent: initialised, then replaced',
        f'apply_quantized(tts.model, "{name}")', "tts.model.to(\"cuda:0\"); tts.device = tts.model.device",
        "```", "", "or `qwen_tts_ext.quantize.load_tts(folder, device_map=..., dtype=...)` (what `synthesize`, `evaluate`, "
        "the studio and `score` use).", "", "## Measured cost", "", markdown(rep).split("\n", 2)[2], ""])
