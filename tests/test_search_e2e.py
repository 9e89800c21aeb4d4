"""`qwen-tts-ext search` end to end on tiny checkpoints (12 evaluations): it finishes, frozen layers are exactly 0,
the best genome blends through darwin_blend.py --config byte for byte like the in-memory candidate, and a search
killed with SIGKILL resumes without repeating a finished evaluation and ends with the same best genome.

Tiny random talkers never emit EOS, so the command runs in a subprocess whose Synthesizer gets the test suite's
forced-EOS hook (tests/_synthesis_helpers.force_eos_after): alpha 0 must stop by itself or the search refuses.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from _blend_helpers import load_all, same_bytes

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent
RUNNER = """\
import sys
sys.path.insert(0, {tests!r})
from _synthesis_helpers import force_eos_after
from qwen_tts_ext.synthesis import engine
_keep = []
_load = engine.Synthesizer.load.__func__
def load(cls, *a, **k):
    s = _load(cls, *a, **k)
    cm = force_eos_after(s.model, 4)
    cm.__enter__()
    _keep.append(cm)
    return s
engine.Synthesizer.load = classmethod(load)
from qwen_tts_ext.blend.search_cli import main
raise SystemExit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from _synthesis_helpers import write_reference_wav

    from qwen_tts_ext.testing.tiny_checkpoint import TinySpec, build_tiny_llm, build_tiny_tts

    root = tmp_path_factory.mktemp("search")
    tts = build_tiny_tts(root / "tts", TinySpec(num_hidden_layers=4), seed=0)
    llm = build_tiny_llm(root / "llm", tts, seed=1)
    runner = root / "run_search.py"
    runner.write_text(RUNNER.format(tests=str(TESTS)))
    return {"root": root, "tts": tts, "llm": llm, "ref": write_reference_wav(root / "ref.wav"), "runner": runner}


def _argv(w, out, *extra):
    return [sys.executable, str(w["runner"]), "--model", str(w["tts"]), "--llm", str(w["llm"]), "--ref-audio",
            str(w["ref"]), "--output", str(out), "--budget", "12", "--population", "4", "--freeze-layers", "0",
            "--judges", "", "sentences=[Hello there.]", "emotions=[happy, sad]", "contrast_sentence=Hi.",
            "synthesis.cap_margin=0.5", "synthesis.cap_slack_seconds=0.2", *extra]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false"}


def _evals(out: Path) -> list[dict]:
    lines = (out / "journal.jsonl").read_text().splitlines()
    recs = []
    for ln in lines[1:]:
        try:
            recs.append(json.loads(ln))
        except json.JSONDecodeError:
            pass
    return [r for r in recs if r.get("kind") == "eval"]


@pytest.fixture(scope="module")
def whole(world):
    out, ckpt = world["root"] / "run-whole", world["root"] / "best-ckpt"
    t0 = time.perf_counter()
    proc = subprocess.run(_argv(world, out, "--blend", str(ckpt)), capture_output=True, text=True, env=_env(),
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"out": out, "ckpt": ckpt, "proc": proc, "seconds": time.perf_counter() - t0}


def test_search_finishes_with_frozen_layers_at_zero(whole):
    out, proc = whole["out"], whole["proc"]
    for name in ("best_genome.yaml", "search.md", "search.json", "search.png", "journal.jsonl", ".qwen-tts-ext.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "search.json").read_text())
    assert len(report["evaluations"]) == 12 and report["measured"] == 12 and report["recalled"] == 0
    best = report["best"]
    assert all(best["ratios"][p][0] == 0.0 for p in ("gate", "up", "down"))
    genome = yaml.safe_load((out / "best_genome.yaml").read_text())
    assert genome["freeze_layers"] == [0] and genome["alpha_per_layer"][0] == 0.0
    assert all(0 <= a <= 0.08 for a in genome["alpha_per_layer"])
    assert all(r["ratios"]["gate"][0] == 0.0 for r in report["evaluations"])  # no candidate touched layer 0
    md = (out / "search.md").read_text()
    assert "L00" in md and "frozen" in md and "| fitness |" in md and "Top" in md
    assert "best fitness" in proc.stdout and "genome search" not in proc.stdout  # progress on stderr
    assert "genome search" in proc.stderr and "best=" in proc.stderr
    print(f"12 evaluations + baseline + flat in {whole['seconds']:.1f} s "
          f"({report['seconds_per_evaluation']:.2f} s per evaluation)")


def test_best_genome_blends_byte_for_byte_like_the_in_memory_candidate(whole, world, tmp_path, capsys):
    from qwen_tts import Qwen3TTSModel

    from qwen_tts_ext.blend.cli import main as blend_main
    from qwen_tts_ext.blend.runtime import apply_blend_to_model

    report = json.loads((whole["out"] / "search.json").read_text())
    best = report["best"]
    out = tmp_path / "from-yaml"
    assert blend_main(["--config", str(whole["out"] / "best_genome.yaml"), "--output", str(out)]) == 0, \
        capsys.readouterr().err
    written = load_all(out)
    import torch

    model = Qwen3TTSModel.from_pretrained(str(world["tts"]), dtype=torch.float32).model
    apply_blend_to_model(model, str(world["llm"]), 0.0, alpha_per_layer=best["schedule"], freeze_layers=[0],
                         tensors=["gate", "up", "down"])
    params = dict(model.named_parameters())
    searched = load_all(whole["ckpt"])  # --blend OUT
    original = load_all(world["tts"])
    changed = 0
    for name, tensor in written.items():
        if ".mlp." in name and name.startswith("talker.model.layers."):
            mem = params[name].detach().to(tensor.dtype)
            assert same_bytes(mem, tensor), name
            assert same_bytes(searched[name], tensor), name
            changed += not same_bytes(original[name], tensor)
            if name.startswith("talker.model.layers.0."):
                assert same_bytes(original[name], tensor), name  # frozen: untouched
    assert changed == 9  # 3 searched layers x gate/up/down
    prov = json.loads((whole["ckpt"] / "darwin_blend.json").read_text())
    assert prov["search"]["genes"] == best["genes"] and prov["search"]["config"]["optimizer"]["budget"] == 12


def test_killed_search_resumes_without_repeating_and_ends_the_same(whole, world):
    out = world["root"] / "run-killed"
    proc = subprocess.Popen(_argv(world, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    deadline = time.time() + 600
    try:
        while time.time() < deadline and proc.poll() is None:
            if (out / "journal.jsonl").is_file() and len(_evals(out)) >= 5:
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = {r["key"] for r in _evals(out)}
    assert 5 <= len(done) < 12, "the search should be killed part way"
    again = subprocess.run(_argv(world, out), capture_output=True, text=True, env=_env(), timeout=900)
    assert again.returncode == 2 and "--resume" in again.stderr  # the folder holds an unfinished search
    resumed = subprocess.run(_argv(world, out, "--resume"), capture_output=True, text=True, env=_env(), timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    evals = _evals(out)
    keys = [r["key"] for r in evals]
    assert len(keys) == len(set(keys)) == 12  # every candidate measured exactly once over both runs
    report = json.loads((out / "search.json").read_text())
    assert report["recalled"] == len(done) and report["measured"] == 12 - len(done)
    ref = json.loads((whole["out"] / "search.json").read_text())
    assert report["best"]["genes"] == ref["best"]["genes"]
    assert report["best"]["fitness"] == ref["best"]["fitness"]
    assert yaml.safe_load((out / "best_genome.yaml").read_text()) == \
        yaml.safe_load((whole["out"] / "best_genome.yaml").read_text())
