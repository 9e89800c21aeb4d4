"""SFT on a CUDA GPU (``pytest -m gpu tests/test_sft_gpu.py``; skipped where torch sees no CUDA): one bf16
training step, and the FSDP export gather. Both train the tiny model on the synthetic prepared folder."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from _sft_helpers import tiny_recipe
from qwen_tts_ext.config import load_config
from qwen_tts_ext.train.config import SFTConfig

pytestmark = pytest.mark.gpu
REPO = Path(__file__).resolve().parents[1]


def test_one_bf16_step_on_cuda(tmp_path, tiny_base, synthetic_prepared):
    """bf16 autocast over float32 master weights: a finite loss, the step timed on the device, weights moved."""
    from qwen_tts_ext.train.loop import train

    out = tmp_path / "bf16"
    summary = train(load_config(SFTConfig, None, tiny_recipe(tiny_base, synthetic_prepared, out, "train.max_steps=1",
                                                             "train.warmup_steps=0", "train.precision=bf16")))
    assert summary["device"].startswith("cuda"), summary
    assert math.isfinite(summary["final_loss"]) and summary["global_step"] == 1
    timing = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if "timing/t" in line]
    assert len(timing) == 1 and timing[0]["timing/fwd_bwd_s"][0] > 0 and timing[0]["timing/frames"] > 0
    base = load_file(str(tiny_base / "model.safetensors"))
    export = load_file(str(Path(summary["export"]) / "model.safetensors"))
    key = "talker.model.layers.0.mlp.up_proj.weight"
    assert export[key].dtype == torch.float32 and not torch.equal(export[key], base[key])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fsdp_export_gathers_what_a_plain_export_writes(tmp_path, tiny_base, synthetic_prepared):
    """A 1-process FSDP2 run under `accelerate launch` (configs/accelerate/fsdp.yaml) exports, through
    accelerator.get_state_dict's gather, exactly the weights a plain single-GPU run exports. The one step
    runs at lr 0 (the first of 2 warmup steps), so forward, backward and the optimizer run under FSDP while the
    weights stay, and any difference is the export path's."""
    script = str(REPO / "finetuning" / "sft_12hz.py")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]}
    steps = ["train.max_steps=1", "train.warmup_steps=2"]
    plain, fsdp = tmp_path / "plain", tmp_path / "fsdp"
    r = subprocess.run([sys.executable, script, *tiny_recipe(tiny_base, synthetic_prepared, plain, *steps)],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                        str(REPO / "configs" / "accelerate" / "fsdp.yaml"), "--num_processes", "1",
                        "--main_process_port", str(_free_port()), script,
                        *tiny_recipe(tiny_base, synthetic_prepared, fsdp, *steps)],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summaries = {name: json.loads((run / "summary.json").read_text()) for name, run in (("plain", plain), ("fsdp", fsdp))}
    assert "FSDP" in summaries["fsdp"]["distributed_type"] and summaries["fsdp"]["num_processes"] == 1, summaries
    assert "FSDP" not in summaries["plain"]["distributed_type"] and summaries["plain"]["device"].startswith("cuda")
    a = load_file(str(plain / "export" / "model.safetensors"))
    b = load_file(str(fsdp / "export" / "model.safetensors"))
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert torch.equal(a[key], b[key]), key
    assert json.loads((fsdp / "export" / "config.json").read_text()) == json.loads((plain / "export" / "config.json").read_text())


ATTENTION = ["sdpa", "eager", "flash_attention_2"]


@pytest.mark.parametrize("attn", ATTENTION)
def test_one_bf16_step_per_attention_implementation(tmp_path, tiny_base, synthetic_prepared, attn):
    """sdpa and eager always; flash_attention_2 where flash-attn is installed (said as a skip reason that
    scripts/gpu_check.sh lists, not silently)."""
    import importlib.util

    from qwen_tts_ext.train.loop import train

    if attn == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        pytest.skip("flash-attn is not installed (pip install flash-attn): flash_attention_2 not checked")
    out = tmp_path / attn
    summary = train(load_config(SFTConfig, None, tiny_recipe(tiny_base, synthetic_prepared, out, "train.max_steps=2",
                                                             "train.precision=bf16", f"train.attn_implementation={attn}")))
    assert summary["device"].startswith("cuda") and math.isfinite(summary["final_loss"]), summary


def test_fused_adamw_runs_on_cuda():
    """train.adamw_impl=fused gives torch's fused kernel on CUDA parameters (no fallback to foreach)."""
    from qwen_tts_ext.train.config import TrainConfig
    from qwen_tts_ext.train.setup import build_adamw

    said = []
    p = torch.nn.Parameter(torch.randn(64, 64, device="cuda"))
    opt = build_adamw([{"params": [p], "weight_decay": 0.0}], TrainConfig(adamw_impl="fused"), said.append)
    assert opt.defaults["fused"] is True and not said, said
    before = p.detach().clone()
    p.grad = torch.ones_like(p)
    opt.step()
    assert not torch.equal(before, p.detach())
