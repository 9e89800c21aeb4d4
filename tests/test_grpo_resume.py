"""A GRPO run killed with -9 resumes from its last checkpoint to the weights of an uninterrupted run; two CPU
processes (gloo) under `accelerate launch` learn the same thing and export once.

The checkpoint is a tiny CustomVoice that stops by itself (tests/_grpo_helpers.py); the reward is the duration
to 0.3 s, which moves its EOS rate from ~0 to ~1 within a few steps."""

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

from _grpo_helpers import make_stopping_checkpoint
from _sft_helpers import max_abs_diff_state

REPO = Path(__file__).resolve().parents[1]
SCRIPT = str(REPO / "finetuning" / "grpo_12hz.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture(scope="module")
def stopper(tiny_custom_voice, tmp_path_factory):
    return make_stopping_checkpoint(tiny_custom_voice, tmp_path_factory.mktemp("grpo") / "stop-cv")


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    p = tmp_path_factory.mktemp("grpo-prompts") / "prompts.jsonl"
    p.write_text('{"text": "Hello there.", "speaker": "vivian"}\n{"text": "A second line.", "speaker": "ryan"}\n')
    return p


def recipe(model, prompts, out, *extra):
    """The run's arguments; a key=value in ``extra`` replaces its default (one key may not be given twice)."""
    defaults = ["rollout.max_frames=16", "rollout.samples_per_prompt=4", "rollout.prompts_per_step=2",
                "reward.weights={duration: 1.0}", "reward.duration_target=0.3", "train.precision=no",
                "export_dtype=float32", "train.lr=1e-2"]
    given = {e.split("=", 1)[0] for e in extra if "=" in e}
    return (["--model", str(model), "--prompts", str(prompts), "--output-dir", str(out)]
            + [d for d in defaults if d.split("=", 1)[0] not in given] + list(extra))


def _metrics(run: Path) -> dict[int, dict]:
    return {r["step"]: r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


@pytest.mark.slow
def test_kill9_then_resume_matches_uninterrupted(tmp_path, stopper, prompts):
    steps = ["train.steps=8", "checkpoint.every_steps=2", "checkpoint.keep_last=5"]
    full = tmp_path / "full"
    subprocess.run([sys.executable, SCRIPT, *recipe(stopper, prompts, full, *steps)], check=True, env=ENV,
                   capture_output=True)
    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, SCRIPT, *recipe(stopper, prompts, cut, *steps)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and not (cut / "checkpoints" / "step-00000004").is_dir():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (cut / "checkpoints" / "step-00000004").is_dir()
    assert not (cut / "export").exists(), "the run was not interrupted before the end"
    r = subprocess.run([sys.executable, SCRIPT, *recipe(stopper, prompts, cut, *steps, "--resume")], env=ENV,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resumed from" in r.stderr
    assert max_abs_diff_state(full / "export", cut / "export") == 0.0
    a, b = _metrics(full), _metrics(cut)
    assert [a[s]["reward/mean"] for s in range(5, 9)] == [b[s]["reward/mean"] for s in range(5, 9)]
    # and it learned: the starting model runs long, the policy stops near the target
    assert a[1]["rollout/mean_seconds"] > 0.8 and min(a[s]["rollout/mean_seconds"] for s in range(5, 9)) < 0.5, a


@pytest.mark.slow
def test_two_processes_learn_the_same_and_export_once(tmp_path, stopper, prompts):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    one, two = tmp_path / "one", tmp_path / "two"
    steps = ["train.steps=8", "checkpoint.every_steps=0"]
    subprocess.run([sys.executable, SCRIPT, *recipe(stopper, prompts, one, *steps)], check=True, env=ENV,
                   capture_output=True)
    # On a GPU-less machine `--multi_gpu` gives MULTI_CPU (gloo); each process rolls out 1 prompt (2 together)
    r = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                        "--main_process_port", str(port), SCRIPT,
                        *recipe(stopper, prompts, two, *steps, "rollout.prompts_per_step=1")],
                       env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, [ln for ln in r.stderr.splitlines() if "error" in ln.lower()][:10]
    assert r.stdout.strip() == f"export: {two / 'export'}"  # one result line: the main process alone
    assert json.loads((two / "summary.json").read_text())["num_processes"] == 2
    a, b = _metrics(one), _metrics(two)
    assert sorted(b) == list(range(1, 9)) and all(x["rollout/count"] == 8 for x in b.values())  # both processes' rollouts
    for m in (a, b):  # the same curve shape: long at first, near the target at the end, reward up
        assert m[1]["rollout/mean_seconds"] > 0.8
        assert min(m[s]["rollout/mean_seconds"] for s in range(5, 9)) < 0.5, m
        assert max(m[s]["reward/mean"] for s in range(5, 9)) > m[1]["reward/mean"] + 0.5
    assert [p.name for p in two.iterdir() if p.name.startswith("export") or p.name.startswith(".export")] == ["export"]
