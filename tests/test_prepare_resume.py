"""A prepare run killed with SIGKILL mid-way, then rerun, gives the same output as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from _prep_helpers import read_jsonl
from qwen_tts_ext.prep import PrepareConfig, prepare
from qwen_tts_ext.prep.pipeline import SHARD_DELAY_ENV
from qwen_tts_ext.prep.shards import work_dir_for
from qwen_tts_ext.prepared import load_speakers

REPO = Path(__file__).resolve().parents[1]


def _dataset_rows(out: Path) -> list[dict]:
    import datasets

    return datasets.load_from_disk(str(out / "dataset")).to_list()


def test_sigkill_then_rerun_equals_uninterrupted_run(tmp_path, tiny_base):
    from qwen_tts_ext.testing.speech import make_corpus

    manifest = make_corpus(tmp_path / "corpus", speakers=("alice", "bob"), clips_per_speaker=3)
    with open(manifest, "a", encoding="utf-8") as f:  # one bad row, so rejects must survive the resume too
        f.write(json.dumps({"audio": "wavs/nope.wav", "text": "missing", "speaker": "alice"}) + "\n")
    common = dict(manifest=str(manifest), model=str(tiny_base), shard_size=1, progress=False)
    reference = prepare(PrepareConfig(output=str(tmp_path / "reference"), **common))

    out = tmp_path / "resumed"
    work = work_dir_for(out)
    cmd = [sys.executable, str(REPO / "finetuning/prepare_data.py"), "--manifest", str(manifest), "--model",
           str(tiny_base), "--output", str(out), "--shard-size", "1", "--quiet"]
    env = dict(os.environ, **{SHARD_DELAY_ENV: "0.5"})
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            done = sorted((work / "shards").glob("shard-*")) if (work / "shards").exists() else []
            if len(done) >= 2 or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists(), "a killed run must not leave a partial output folder"
    finished = {p.name: p.stat().st_ino for p in (work / "shards").glob("shard-*")}
    assert 2 <= len(finished) < 7  # 7 rows, 1 per shard; killed mid-way

    # rerun: continues, keeps the finished shards untouched (same inodes), encodes only the rest
    result = prepare(PrepareConfig(output=str(out), keep_work=True, **common))
    assert result == out
    for name, ino in finished.items():
        assert (work / "shards" / name).stat().st_ino == ino, f"{name} was redone"
    stats = json.loads((out / "stats.json").read_text())
    assert stats["this_run"]["rows_processed"] == 7 - len(finished)

    ref_rows, rows = _dataset_rows(reference), _dataset_rows(out)
    assert len(rows) == len(ref_rows) == 6
    assert rows == ref_rows  # ids, texts, codes, speakers, durations, paths: identical, no duplicates
    assert read_jsonl(out / "rejects.jsonl") == read_jsonl(reference / "rejects.jsonl")
    ref_vec, vec = load_speakers(reference), load_speakers(out)
    assert set(vec) == set(ref_vec) == {"alice", "bob"}
    for name in vec:
        np.testing.assert_array_equal(vec[name], ref_vec[name])
    assert (out / "train_with_codes.jsonl").read_text() == (reference / "train_with_codes.jsonl").read_text()


def test_second_run_on_same_output_is_refused_while_first_holds_lock(tmp_path, tiny_base):
    from qwen_tts_ext.errors import UserError
    from qwen_tts_ext.prep.shards import WorkDir

    out = tmp_path / "o"
    holder = WorkDir(work_dir_for(out), "x", 1).open()
    try:
        with pytest.raises(UserError, match="another prepare run"):
            WorkDir(work_dir_for(out), "x", 1).open()
    finally:
        holder.close()


def test_ctrl_c_exits_130_keeps_finished_shards_and_rerun_resumes(tmp_path, tiny_base):
    from qwen_tts_ext.testing.speech import make_corpus

    manifest = make_corpus(tmp_path / "corpus", speakers=("alice",), clips_per_speaker=4)
    out = tmp_path / "out"
    work = work_dir_for(out)
    cmd = [sys.executable, str(REPO / "finetuning/prepare_data.py"), "--manifest", str(manifest), "--model",
           str(tiny_base), "--output", str(out), "--shard-size", "1", "--quiet"]
    proc = subprocess.Popen(cmd, env=dict(os.environ, **{SHARD_DELAY_ENV: "0.5"}), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if (work / "shards").exists() and len(list((work / "shards").glob("shard-*"))) >= 1:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == "interrupted" and "Traceback" not in err
    assert not out.exists()
    done = len(list((work / "shards").glob("shard-*")))
    assert 1 <= done < 4
    prepare(PrepareConfig(manifest=str(manifest), model=str(tiny_base), output=str(out), shard_size=1,
                          progress=False))
    stats = json.loads((out / "stats.json").read_text())
    assert stats["kept"] == 4 and stats["this_run"]["rows_processed"] == 4 - done
    assert not work.exists()  # the work folder is removed after success
