"""Two CPU processes (gloo) under `accelerate launch --multi_gpu` train like one process with the same global batch,
and a 2-process run killed with -9 resumes (same process count) to the weights of an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _sft_helpers import make_prepared, max_abs_diff_state, tiny_recipe

REPO = Path(__file__).resolve().parents[1]


def _losses(run: Path) -> list[float]:
    return [json.loads(l)["train/loss"] for l in (run / "metrics.jsonl").read_text().splitlines() if "train/loss" in l]


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path, tiny_base, espeak_corpus):
    prep = make_prepared(tmp_path / "prep", tiny_base, espeak_corpus)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = str(REPO / "finetuning" / "sft_12hz.py")
    steps = ["train.max_steps=8", "train.warmup_steps=2"]
    one = tmp_path / "one"
    subprocess.run([sys.executable, script, *tiny_recipe(tiny_base, prep, one, *steps, "train.batch_size=2")],
                   check=True, env=env, capture_output=True)
    two = tmp_path / "two"
    # On a GPU-less machine `--multi_gpu` gives MULTI_CPU (gloo); `--cpu --num_processes 2` would start ONE process.
    r = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                        "--main_process_port", "29517", script,
                        *tiny_recipe(tiny_base, prep, two, *steps, "train.batch_size=1")],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((two / "summary.json").read_text())
    assert summary["num_processes"] == 2, summary
    a, b = _losses(one), _losses(two)
    assert len(a) == len(b) == 8  # the main process alone writes metrics: one line per step
    assert b[-1] < b[0] - 0.5  # it learns
    for x, y in zip(a, b):
        assert abs(x - y) / x < 0.08, (a, b)
    exports = [p for p in two.iterdir() if p.name.startswith("export")]
    assert [p.name for p in exports] == ["export"] and (two / "export" / "model.safetensors").is_file()
    assert not list(two.glob(".export*")), "a half-written export was left behind"


def _two_processes(script: str, args: list[str]) -> list[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(port), script, *args]


def test_two_process_kill9_then_resume_matches_uninterrupted(tmp_path, tiny_base, espeak_corpus):
    prep = make_prepared(tmp_path / "prep", tiny_base, espeak_corpus)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    script = str(REPO / "finetuning" / "sft_12hz.py")
    recipe = ["train.max_steps=8", "train.batch_size=1", "checkpoint.every_steps=2", "checkpoint.keep_last=5"]
    full = tmp_path / "full"
    r = subprocess.run(_two_processes(script, tiny_recipe(tiny_base, prep, full, *recipe)), env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    cut = tmp_path / "cut"
    proc = subprocess.Popen(_two_processes(script, tiny_recipe(tiny_base, prep, cut, *recipe)), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (cut / "checkpoints" / "step-00000004").is_dir() and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both workers
    proc.wait()
    assert (cut / "checkpoints" / "step-00000004").is_dir()
    assert not (cut / "export").exists(), "the run was not interrupted before the end"
    r = subprocess.run(_two_processes(script, tiny_recipe(tiny_base, prep, cut, *recipe, "checkpoint.resume=true")),
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((cut / "summary.json").read_text())["num_processes"] == 2
    assert max_abs_diff_state(full / "export", cut / "export") == 0.0
