"""scripts/gpu_check.sh on a machine without CUDA: one line saying so, exit 0 (its checks run where a GPU is)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_without_cuda_says_so_and_exits_0():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: run bash scripts/gpu_check.sh itself")
    r = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh")], capture_output=True, text=True, timeout=120,
                       env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "gpu_check: no CUDA GPU found (torch.cuda.is_available() is False): nothing to check here"


def test_gpu_check_lists_checks_that_exist():
    text = (REPO / "scripts" / "gpu_check.sh").read_text()
    assert "tests/test_sft_gpu.py" in text and "--device cuda" in text
    gpu_tests = (REPO / "tests" / "test_sft_gpu.py").read_text()
    for name in ("test_one_bf16_step_per_attention_implementation", "test_fused_adamw_runs_on_cuda",
                 "test_fsdp_export_gathers_what_a_plain_export_writes"):
        assert f"def {name}" in gpu_tests
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_train.py"), "--help"], capture_output=True,
                         text=True, timeout=120)
    assert "--device" in out.stdout
