"""Helpers for the blend tests: rewrite tiny checkpoints (dtype, shards, edits) and read tensors back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import torch

from qwen_tts_ext import checkpoint_io as cio
from qwen_tts_ext.blend.plan import LLM_FFN, TTS_FFN


def rewrite_checkpoint(
    src: Path,
    dst: Path,
    *,
    dtype: torch.dtype | None = None,
    max_shard_bytes: int | None = None,
    edit: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
    config_edit: Callable[[dict], None] | None = None,
) -> Path:
    """Copy a checkpoint folder with its float tensors cast to ``dtype``, resharded, and/or edited."""
    if dst.exists():
        shutil.rmtree(dst)
    cio.copy_support_files(src, dst)
    with cio.LazyCheckpoint(src) as ck:
        tensors = {k: ck.get(k) for k in ck.keys()}
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    if edit is not None:
        tensors = edit(tensors)
    cio.write_safetensors_sharded(tensors, dst, max_shard_bytes=max_shard_bytes)
    if config_edit is not None:
        cfg_path = dst / "config.json"
        cfg = json.loads(cfg_path.read_text())
        config_edit(cfg)
        cfg_path.write_text(json.dumps(cfg, indent=2))
    return dst


def load_all(ckpt: Path) -> dict[str, torch.Tensor]:
    with cio.LazyCheckpoint(ckpt) as ck:
        return {k: ck.get(k).clone() for k in ck.keys()}


def same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8))


def ffn_names(num_layers: int, projections=("gate", "up", "down")) -> list[tuple[int, str, str, str]]:
    return [(layer, p, TTS_FFN.format(layer=layer, proj=p), LLM_FFN.format(layer=layer, proj=p))
            for layer in range(num_layers) for p in projections]


def expected_blend(tts: torch.Tensor, llm: torch.Tensor, alpha: float) -> torch.Tensor:
    """The issue's formula, written out independently: float32 math, cast to the TTS dtype."""
    x, y = tts.to(torch.float32), llm.to(torch.float32)
    return ((1 - alpha) * x + alpha * y).to(tts.dtype)


def leftovers(parent: Path, name: str) -> list[str]:
    """Temp folders a failed run might have left next to ``parent/name``."""
    return [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.")]
