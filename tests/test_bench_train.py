"""The training benchmark: its report, rendered from (synthetic) results without running the benchmark, and
its measures, read from the timing records a real run of our loop writes to metrics.jsonl."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import pytest

from _sft_helpers import tiny_recipe

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_train", REPO / "scripts" / "bench_train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _result(name, frames, seconds, steps, real, slots, processes=1, rss=1000.0, wait=0.05):
    return {"name": name, "frames_steady": frames, "time_steady": seconds, "steps_steady": steps,
            "real_positions": real, "slots": slots, "data_wait": wait, "peak_rss_mb": rss, "processes": processes}


def _args(**kw):
    base = dict(hidden=256, intermediate=512, layers=4, cp_layers=2, speakers=3, clips=8, threads=1, batch_size=4,
                steps=8, repeats=3, argv=[], subtalker_fraction=None)
    base.update(kw)
    return argparse.Namespace(**base)


@pytest.mark.parametrize("load", [(0.3, 0.4), (2.5, 2.6)], ids=["idle", "busy"])
def test_report_states_the_ratio_and_where_it_comes_from(bench, load):
    results = {"ours": _result("ours", 3000, 10.0, 7, 930, 1000),
               "official": _result("official", 2000, 10.0, 7, 690, 1000),
               "ours_2proc": _result("ours", 6000, 15.0, 7, 930, 1000, processes=2)}
    split = {"full": 0.9, "talker": 0.4, "code_predictor_share": 0.55, "unfused_heads": 1.0,
             "adamw_fused": 0.014, "adamw_loop": 0.046}
    text = bench.render(results, {}, {"ours": "python x"}, {"cpu": "cpu", "cores": 2, "memory": "24 GiB",
                        "torch": "2.11", "python": "3.11"}, _args(), load,
                        {"rows": 24, "frames": 2416, "min_frames": 31, "max_frames": 167},
                        {"ours": [300.0], "official": [200.0]}, split)
    assert text.startswith(bench.START) and text.rstrip().endswith(bench.END)
    assert "**Ours / official: 1.50x frames/s**" in text
    assert "| ours (qwen_tts_ext.train.loop) | 1 | 300.0 | 0.70 | 93.0% | 7 | 1000 |" in text
    assert "Two processes vs one: 1.33x" in text
    assert "(1.11x)" in text and "46 ms -> 14 ms" in text  # fused heads, fused AdamW
    assert ("busy with other jobs" in text) == (load[0] > 1.5)
    assert "own timing records" not in text  # only with the loop's own breakdown (below)
    results["ours"].update(data_wait=0.07, fwd_bwd=6.3, optimizer=0.14)
    text = bench.render(results, {}, {}, {"cpu": "cpu", "cores": 2, "memory": "", "torch": "2.11", "python": "3.11"},
                        _args(), load, {"rows": 24, "frames": 2416, "min_frames": 31, "max_frames": 167})
    assert "per optimizer step: 10 ms waiting for the batch, 900 ms forward + backward, 20 ms in the optimizer" in text


def test_a_failed_run_is_reported_not_hidden(bench):
    results = {"ours": _result("ours", 3000, 10.0, 7, 930, 1000)}
    text = bench.render(results, {"official": "Traceback: boom"}, {}, {"cpu": "cpu", "cores": 2, "memory": "",
                        "torch": "2.11", "python": "3.11"}, _args(hidden=512), (0.1, 0.1),
                        {"rows": 2, "frames": 10, "min_frames": 5, "max_frames": 5})
    assert "| official loop, CPU port | - | failed |" in text and "Traceback: boom" in text
    assert "talker hidden 512" in text and "Ours / official" not in text


def test_headline_uses_medians_when_there_are_several_runs(bench):
    results = {"ours": _result("ours", 3000, 10.0, 7, 930, 1000), "official": _result("official", 2000, 10.0, 7, 690, 1000)}
    text = bench.render(results, {}, {}, {"cpu": "cpu", "cores": 2, "memory": "", "torch": "2.11", "python": "3.11"},
                        _args(), (0.1, 0.1), {"rows": 24, "frames": 2416, "min_frames": 31, "max_frames": 167},
                        {"ours": [300.0, 240.0, 260.0], "official": [200.0, 190.0, 130.0]})
    assert "**Ours / official: 1.37x frames/s** (median of the runs above; fastest runs 1.50x" in text


def test_the_subset_row_is_reported_apart_from_the_comparison(bench):
    results = {"ours": _result("ours", 3000, 10.0, 7, 930, 1000), "official": _result("official", 2000, 10.0, 7, 690, 1000),
               "ours_subset": _result("ours", 4500, 10.0, 7, 930, 1000)}
    text = bench.render(results, {}, {}, {"cpu": "cpu", "cores": 2, "memory": "", "torch": "2.11", "python": "3.11"},
                        _args(subtalker_fraction=0.25), (0.1, 0.1),
                        {"rows": 24, "frames": 2416, "min_frames": 31, "max_frames": 167})
    assert "| ours, sub-talker loss on 0.25 of the frames (less work) | 1 | 450.0 |" in text
    assert "runs at 1.50x its full-objective frames/s" in text and "**Ours / official: 1.50x" in text


def test_bad_arguments_exit_2(bench, capsys):
    assert bench.main(["--subtalker-fraction", "1.0", "--no-write"]) == 2
    assert bench.main(["--steps", "1", "--no-write"]) == 2
    assert "error:" in capsys.readouterr().err


def test_the_bench_measures_the_loop_from_its_own_timing_records(bench, tmp_path, tiny_base, synthetic_prepared):
    """A real run with 2 micro-batches per step: one timing record per optimizer step, one entry per
    micro-batch, every clip's frames counted once; the benchmark's measures are read from these records."""
    from qwen_tts_ext.config import load_config
    from qwen_tts_ext.train.config import SFTConfig
    from qwen_tts_ext.train.loop import train

    run = tmp_path / "run"
    train(load_config(SFTConfig, None, tiny_recipe(tiny_base, synthetic_prepared, run, "train.max_steps=3",
                                                   "train.batch_size=1", "train.grad_accum=2")))
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in lines if "timing/t" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]  # one record per optimizer step, beside the train/* lines
    assert len([r for r in lines if "train/loss" in r]) == 3
    for r in steps:
        assert len(r["timing/data_wait_s"]) == len(r["timing/fwd_bwd_s"]) == 2
        assert min(r["timing/fwd_bwd_s"]) > 0 and r["timing/optimizer_s"] > 0 and r["timing/processes"] == 1
        assert r["timing/padded_positions"] == r["timing/real_positions"] > r["timing/frames"] > 0  # batches of 1
        assert r["timing/padding_efficiency"] == 1.0
    assert steps[0]["timing/t"] < steps[1]["timing/t"] < steps[2]["timing/t"]
    assert sum(r["timing/frames"] for r in steps) == 57  # the 6 synthetic clips, one epoch
    m = bench.from_metrics(run / "metrics.jsonl")
    assert m["steps"] == 3 and m["steps_steady"] == 2 and m["micro_batches"] == 6 and m["loop_processes"] == 1
    assert m["frames_total"] == 57 and m["frames_steady"] == 57 - steps[0]["timing/frames"]
    assert m["time_steady"] == pytest.approx(steps[2]["timing/t"] - steps[0]["timing/t"])
    assert m["fwd_bwd"] == pytest.approx(sum(sum(r["timing/fwd_bwd_s"]) for r in steps[1:]))
    assert bench.metrics({**m, "peak_rss_mb": 1.0})["padding"] == 1.0
