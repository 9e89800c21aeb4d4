"""Data prep in 2 processes under `accelerate launch` (gloo, as the SFT test runs) equals a single-process run:
the same dataset rows, speaker vectors (bit for bit) and rejects, with one bad clip in each rank's slice; a launch
killed with -9 mid-way and rerun resumes each rank's finished work shards and ends with the same output."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from _prep_helpers import read_jsonl
from qwen_tts_ext.prep import PrepareConfig, prepare
from qwen_tts_ext.prep.distributed import parts_dir
from qwen_tts_ext.prep.pipeline import SHARD_DELAY_ENV
from qwen_tts_ext.prepared import load_speakers

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(manifest: Path, model: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
            str(_port()), str(REPO / "finetuning" / "prepare_data.py"), "--manifest", str(manifest), "--model",
            str(model), "--output", str(out), "--shard-size", "1", "--quiet"]


@pytest.fixture(scope="module")
def job(tmp_path_factory, tiny_base):
    """6 good clips + 2 bad ones, one in each half of the manifest; and the single-process reference."""
    from qwen_tts_ext.testing.speech import make_corpus

    root = tmp_path_factory.mktemp("dist")
    manifest = make_corpus(root / "corpus", speakers=("alice", "bob"), clips_per_speaker=3)
    rows = [json.loads(l) for l in manifest.read_text().splitlines() if l.strip()]
    rows.insert(1, {"audio": "wavs/missing.wav", "text": "not there", "speaker": "alice"})
    rows.append({"audio": rows[0]["audio"], "text": "", "speaker": "bob"})  # an empty transcript
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    reference = prepare(PrepareConfig(manifest=str(manifest), model=str(tiny_base), output=str(root / "reference"),
                                      shard_size=1, progress=False))
    return root, manifest, reference


def _rows(out: Path) -> list[dict]:
    import datasets

    return datasets.load_from_disk(str(out / "dataset")).to_list()


def _assert_same(out: Path, reference: Path) -> None:
    assert _rows(out) == _rows(reference)  # ids, texts, codes, speakers, paths, in manifest order
    assert read_jsonl(out / "rejects.jsonl") == read_jsonl(reference / "rejects.jsonl")
    assert len(read_jsonl(out / "rejects.jsonl")) == 2
    ref, got = load_speakers(reference), load_speakers(out)
    assert set(got) == set(ref) == {"alice", "bob"}
    for name in got:
        np.testing.assert_array_equal(got[name], ref[name])  # the exact means, not an average of averages


def test_two_processes_equal_one(job, tiny_base):
    root, manifest, reference = job
    out = root / "two"
    r = subprocess.run(_launch(manifest, tiny_base, out), capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines() == [str(out)]  # the result once, from the main process
    _assert_same(out, reference)
    assert not parts_dir(out, 2).exists()  # the parts folder the launch made is gone


def _kill_tree(pid: int) -> None:
    import psutil

    procs = [psutil.Process(pid)]
    procs += procs[0].children(recursive=True)
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=30)


def test_killed_launch_resumes_on_rerun(job, tiny_base):
    root, manifest, reference = job
    out = root / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", SHARD_DELAY_ENV: "1.0"}
    proc = subprocess.Popen(_launch(manifest, tiny_base, out), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    works = parts_dir(out, 2)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            done = list(works.glob(".rank-*.work/shards/shard-*"))
            if len(done) >= 2:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        _kill_tree(proc.pid)  # the launcher and both ranks (torch's launcher starts them in their own groups)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            _kill_tree(proc.pid)
    finished = {p: p.stat().st_ino for p in works.glob(".rank-*.work/shards/shard-*")}
    assert finished and not out.exists()
    r = subprocess.run(_launch(manifest, tiny_base, out) + ["--keep-work"], capture_output=True, text=True,
                       timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    for shard, ino in finished.items():
        assert shard.stat().st_ino == ino, f"{shard} was redone"
    _assert_same(out, reference)


def test_shard_flag_and_a_multi_process_launch_are_refused_together(job, tiny_base):
    root, manifest, _ = job
    r = subprocess.run(_launch(manifest, tiny_base, root / "refused") + ["--shard", "0/2"], capture_output=True,
                       text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.stderr.count("both split the manifest") == 1  # said once, by the main process
    assert not (root / "refused").exists()
