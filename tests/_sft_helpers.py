"""Test helpers for SFT: a prepared dataset built from the espeak corpus on a tiny checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def make_prepared(out_dir: Path, model_dir: Path, manifest: Path, *, instruct: dict | None = None,
                  language: str | None = None) -> Path:
    """Run data prep on ``manifest`` (optionally rewriting its rows' instruct/language first)."""
    rows = [json.loads(l) for l in Path(manifest).read_text().splitlines() if l.strip()]
    base = Path(manifest).parent
    for r in rows:
        r["audio"] = str((base / r["audio"]).resolve())
        if language is not None:
            r["language"] = language
        if instruct and r["speaker"] in instruct:
            r["instruct"] = instruct[r["speaker"]]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    m2 = out_dir.parent / f"{out_dir.name}.manifest.jsonl"
    m2.write_text("".join(json.dumps(r) + "\n" for r in rows))
    from qwen_tts_ext.config import load_config
    from qwen_tts_ext.prep import PrepareConfig, prepare

    cfg = load_config(PrepareConfig, None, [f"manifest={m2}", f"model={model_dir}", f"output={out_dir}",
                                            "ref_mode=all", "overwrite=true"])
    return prepare(cfg)


def tiny_recipe(model_dir, data_dir, out_dir, *extra: str) -> list[str]:
    """key=value overrides of a fast tiny run; a key given in ``extra`` replaces its default (the command
    line refuses one key given twice with different values)."""
    defaults = [f"model={model_dir}", f"data.path={data_dir}", f"output_dir={out_dir}",
                "train.lr=3e-3", "train.batch_size=2", "train.warmup_steps=2", "train.seed=0",
                "log.tracker=none", "log.log_samples=false", "eval.judges=[]", "log.every_steps=1", "log.eval_every_steps=0",
                "checkpoint.every_steps=0", "data.eval_fraction=0", "export.dtype=float32"]
    given = {e.split("=", 1)[0] for e in extra}
    return [d for d in defaults if d.split("=", 1)[0] not in given] + list(extra)


def max_abs_diff_state(a_dir: Path, b_dir: Path) -> float:
    from safetensors import safe_open

    worst = 0.0
    with safe_open(str(Path(a_dir) / "model.safetensors"), "pt") as fa, safe_open(str(Path(b_dir) / "model.safetensors"), "pt") as fb:
        assert set(fa.keys()) == set(fb.keys())
        for k in fa.keys():
            worst = max(worst, float((fa.get_tensor(k).float() - fb.get_tensor(k).float()).abs().max()))
    return worst


def speaker_row(ckpt: Path, name: str) -> torch.Tensor:
    from safetensors import safe_open

    cfg = json.loads((Path(ckpt) / "config.json").read_text())
    row = cfg["talker_config"]["spk_id"][name]
    with safe_open(str(Path(ckpt) / "model.safetensors"), "pt") as f:
        return f.get_tensor("talker.model.codec_embedding.weight")[row]
