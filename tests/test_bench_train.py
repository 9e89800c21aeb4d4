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
                steps=8, repeats=3, argv=[], subtalker_fraction=None, shape=None, sentences=4, dtype="float32")
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


# --------------------------------------------------------------------------- --shape (released widths, bf16)


def _parse(bench, *argv):
    args = bench.build_parser().parse_args(list(argv))
    return args, bench.resolve(args)


def test_shape_fills_its_own_defaults_and_the_tiny_mode_keeps_its_own(bench):
    args, err = _parse(bench, "--shape", "0.6b")
    assert err is None
    assert (args.layers, args.steps, args.repeats, args.batch_size, args.sentences) == (28, 3, 2, 2, 2)
    assert args.dtype == "bfloat16" and args.no_multiproc and args.hidden is None
    assert bench.model_tag(args) == "0.6b-l28"
    assert bench.markers(args) == ("<!-- bench_train:start:0.6b-l28 -->", "<!-- bench_train:end:0.6b-l28 -->")
    args, err = _parse(bench, "--shape", "0.6b", "--layers", "8", "--steps", "5", "--batch-size", "4")
    assert err is None and (args.layers, args.steps, args.batch_size) == (8, 5, 4) and bench.model_tag(args) == "0.6b-l8"
    args, err = _parse(bench)  # the default (tiny) mode is unchanged
    assert err is None
    assert (args.hidden, args.intermediate, args.layers, args.cp_layers, args.steps, args.repeats, args.batch_size,
            args.sentences, args.dtype, args.no_multiproc) == (256, 512, 4, 2, 16, 3, 4, 4, "float32", False)
    assert bench.markers(args) == (bench.START, bench.END)
    args, _ = _parse(bench, "--hidden", "512", "--intermediate", "1536", "--layers", "6")
    assert bench.markers(args)[0] == "<!-- bench_train:start:h512-i1536-l6-cp2 -->"


@pytest.mark.parametrize("argv, message", [
    (["--shape", "0.6b", "--hidden", "512"], "--hidden set(s) the factory model's size"),
    (["--shape", "1.7b", "--cp-layers", "2", "--intermediate", "64"], "--intermediate, --cp-layers"),
    (["--shape", "0.6b", "--layers", "29"], "--layers must be between 1 and 28"),
    (["--shape", "0.6b", "--layers", "0"], "--layers must be between 1 and 28"),
    (["--shape", "0.6b", "--steps", "1"], "need --steps >= 2"),
    (["--shape", "0.6b", "--sentences", "0"], "--sentences"),
    (["--shape", "0.6b", "--speakers", "1", "--clips", "1"], "cannot fill a batch of 2"),
])
def test_bad_shape_arguments_exit_2_in_one_line(bench, capsys, argv, message):
    assert bench.main(argv + ["--no-write"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_an_unknown_shape_is_refused_by_the_parser(bench, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.build_parser().parse_args(["--shape", "3b"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err


def _run(name, frames, seconds, steps, real, slots, wait, fwd_bwd, optimizer, speaker=0.0, rss=9000.0):
    return {**_result(name, frames, seconds, steps, real, slots, rss=rss, wait=wait), "fwd_bwd": fwd_bwd,
            "optimizer": optimizer, **({"speaker_encoder": speaker} if name == "official" else {})}


_SPLIT = {"full": 20.0, "talker": 6.0, "code_predictor_share": 0.7, "unfused_heads": 20.5, "frames": 50,
          "emb_backward": 0.5, "emb_clip": 0.3, "adamw_emb_fused": 0.6, "adamw_emb_for_loop": 4.0, "adamw_rest_fused": 1.2,
          "adamw_rest_for_loop": 8.0, "emb_params": 311_164_928, "rest_params": 594_623_744}


def test_released_report_states_the_ratio_the_parts_and_the_estimate(bench):
    # 2 steady steps of 120 frames each; official: +speaker encoder, +optimizer, worse padding
    ours = _run("ours", 240, 80.0, 2, 900, 950, wait=0.02, fwd_bwd=76.0, optimizer=3.0)
    official = _run("official", 240, 104.0, 2, 900, 1200, wait=0.2, fwd_bwd=83.0, optimizer=20.0, speaker=0.4)
    args = _args(shape="0.6b", layers=28, steps=3, repeats=2, batch_size=2, sentences=2, hidden=None,
                 intermediate=None, cp_layers=None, argv=["--shape", "0.6b"])
    text = bench.render_released({"ours": ours, "official": official}, {}, {"ours": "python x"},
                                 {"cpu": "cpu", "cores": 2, "memory": "24 GiB", "torch": "2.11", "python": "3.11"},
                                 args, (2.5, 2.0), {"rows": 24, "frames": 1400, "min_frames": 31, "max_frames": 93},
                                 {"ours": [3.0, 2.8], "official": [2.3, 2.2]}, _SPLIT, 914_643_008)
    start, end = bench.markers(args)
    assert text.startswith(start) and text.rstrip().endswith(end)
    assert "at the released 0.6B shape, bf16" in text and "914,643,008 parameters" in text
    assert "all 28 talker layers" in text and "other jobs were running" in text
    assert "| ours (qwen_tts_ext.train.loop) | 3.00 | 40.0 | 94.7% | 0.01 | - | 38.0 | 1.50 | 9000 |" in text
    assert "| official loop, CPU port | 2.31 | 52.0 | 75.0% | 0.10 | 0.20 | 41.5 | 10.00 | 9000 |" in text
    assert "Every run, frames/s (in run order): ours 3.00, 2.80; official 2.30, 2.20." in text
    assert "**Ours / official at the released 0.6B shape in bf16: 1.29x frames/s** (median of the runs above" in text
    bd = bench.breakdown(ours, official, _SPLIT)
    assert bd["ours_ms"] == pytest.approx(1000 * 80 / 240) and bd["official_ms"] == pytest.approx(1000 * 104 / 240)
    rows, parts = bd["rows_ms"], bd["parts_ms"]
    assert sum(rows.values()) == pytest.approx(bd["gap_ms"])  # the measured rows add up to the gap
    assert rows["optimizer"] == pytest.approx(1000 * (20.0 - 3.0) / 240)
    assert rows["fwd_bwd"] == pytest.approx(1000 * (83.0 - 76.0) / 240)
    assert rows["speaker_encoder"] == pytest.approx(1000 * 0.4 / 240)
    assert parts["optimizer"]["text_embedding"] == pytest.approx(1000 * 4.3 / 120)  # clip 0.3 + for-loop 4.0
    assert parts["optimizer"]["adamw_kernel"] == pytest.approx(1000 * 6.8 / 120)
    assert parts["fwd_bwd"]["text_embedding"] == pytest.approx(1000 * 0.5 / 120)
    assert parts["fwd_bwd"]["fused_heads"] == pytest.approx(1000 * 0.5 / 50)
    assert parts["fwd_bwd"]["bucketing"] == pytest.approx(1000 * 0.3 * 38.0 / 120 * ((900 / 950) / 0.75 - 1))
    for row, sub in parts.items():
        assert sum(sub.values()) == pytest.approx(rows[row])  # what the parts leave is reported as unexplained
    assert bd["text_embedding_ms"] == pytest.approx(1000 * 4.8 / 120)
    assert "| **optimizer** (clip + AdamW step + zero_grad) | 71 | 71% |" in text
    assert "| - text embedding frozen: its clipping and AdamW update | 36 |" in text
    assert "**estimate**" in text and "timed alone" in text and "The frozen text embedding in all: 40 ms" in text
    est = bench.accumulation_estimate(ours, official)
    assert est == pytest.approx((4 * 42 + 10) / (4 * 38.5 + 1.5))
    assert "accumulation of 4" in text and f"about {est:.2f}x" in text
    text = bench.render_released({"ours": ours, "official": official,
                                  "ours_unfrozen": _run("ours", 240, 90.0, 2, 900, 950, 0.02, 80.0, 6.0)}, {}, {},
                                 {"cpu": "cpu", "cores": 2, "memory": "", "torch": "2.11", "python": "3.11"}, args,
                                 (0.2, 0.2), {"rows": 24, "frames": 1400, "min_frames": 31, "max_frames": 93}, None, _SPLIT)
    assert "| ours, text embedding trained (`train.freeze_text_embedding=false`) | 2.67 |" in text
    assert "toggled in our own loop (`train.freeze_text_embedding=false`, one run) ours ran at 2.67 frames/s, 1.12x" in text
    # a failed official run: no ratio, the error shown
    text = bench.render_released({"ours": ours}, {"official": "boom"}, {}, {"cpu": "cpu", "cores": 2, "memory": "",
                                 "torch": "2.11", "python": "3.11"}, _args(shape="0.6b", layers=8, steps=3, sentences=2,
                                 argv=[]), (0.2, 0.2), {"rows": 4, "frames": 9, "min_frames": 1, "max_frames": 3})
    assert "| official loop, CPU port | failed |" in text and "boom" in text and "Ours / official" not in text
    assert "8 of the 28 talker layers (the ratio is per layer count)" in text


def test_the_fixed_costs_are_timed_on_a_model(bench, tiny_base, synthetic_prepared):
    """``released_fixed_costs`` on the tiny model: the text embedding's backward and AdamW steps (fused and
    for-loop) over it and over the rest of the talker, and their sizes."""
    import torch
    from qwen_tts import Qwen3TTSModel

    from qwen_tts_ext.train.data import SFTDataset, TextTokenizer, collate_examples, load_prepared
    from qwen_tts_ext.train.layout import SpecialIds

    model = Qwen3TTSModel.from_pretrained(str(tiny_base), dtype=torch.bfloat16).model
    model.talker.model.text_embedding.weight.requires_grad_(False)
    ds = load_prepared(str(synthetic_prepared))
    tts_tok = Qwen3TTSModel.from_pretrained(str(tiny_base)).processor.tokenizer
    data = SFTDataset(ds, TextTokenizer(tts_tok), SpecialIds.from_config(model.config), sorted(set(ds["speaker"])))
    costs = bench.released_fixed_costs(model, collate_examples([data[0], data[1]]))
    assert set(costs) == {"emb_backward", "emb_clip", "adamw_emb_fused", "adamw_emb_for_loop", "adamw_rest_fused",
                          "adamw_rest_for_loop", "emb_params", "rest_params"}
    assert all(costs[k] > 0 for k in costs)
    emb = model.talker.model.text_embedding.weight
    assert costs["emb_params"] == emb.numel()
    assert costs["rest_params"] == sum(p.numel() for p in model.talker.parameters()) - emb.numel()
