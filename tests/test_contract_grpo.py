"""`qwen-tts-ext grpo` on bad input: exit 2, one line, nothing touched (see tests/_cli_contract.py); and a tiny
run end to end through the command: metrics per step, checkpoints, an export keeping the built-in speakers."""

from __future__ import annotations

import json

import pytest

from tests._cli_contract import refuse, user_files


@pytest.fixture()
def world(tiny_custom_voice, tiny_llm, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"text": "Hello there.", "speaker": "vivian"}\n{"text": "A second line.", "speaker": "ryan"}\n')
    stranger = tmp_path / "stranger.jsonl"
    stranger.write_text('{"text": "Hello.", "speaker": "nobody"}\n')
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "Hello.", "speaker": "vivian"}\nnot json\n{"speaker": "vivian"}\n')
    return {"model": tiny_custom_voice, "llm": tiny_llm, "prompts": prompts, "stranger": stranger, "broken": broken,
            **user_files(tmp_path), "tmp": tmp_path}


def _base(w, out=None):
    return ["--model", w["model"], "--prompts", w["prompts"], "--output-dir", out or w["tmp"] / "run"]


CASES = {
    "no_model": (lambda w: ["--prompts", w["prompts"], "--output-dir", w["tmp"] / "o"], "pass --model"),
    "no_prompts": (lambda w: ["--model", w["model"], "--output-dir", w["tmp"] / "o"], "pass --prompts"),
    "no_output_dir": (lambda w: ["--model", w["model"], "--prompts", w["prompts"]], "pass --output-dir"),
    "missing_model": (lambda w: ["--model", w["tmp"] / "nope", "--prompts", w["prompts"], "--output-dir", w["tmp"] / "o"],
                      "no such folder"),
    "llm_as_model": (lambda w: ["--model", w["llm"], "--prompts", w["prompts"], "--output-dir", w["tmp"] / "o"],
                     "not a Qwen3-TTS checkpoint"),
    "llm_as_reference": (lambda w: _base(w) + ["--reference", w["llm"]], "--reference"),
    "missing_prompts": (lambda w: ["--model", w["model"], "--prompts", w["tmp"] / "none.jsonl", "--output-dir",
                                   w["tmp"] / "o"], "no such file"),
    "unknown_speaker": (lambda w: ["--model", w["model"], "--prompts", w["stranger"], "--output-dir", w["tmp"] / "o"],
                        "['nobody'] are not in"),
    "output_is_user_folder": (lambda w: _base(w, w["folder"]), "was not written by `qwen-tts-ext grpo`"),
    "output_is_a_file": (lambda w: _base(w, w["file"]), "is an existing file"),
    "output_is_the_model": (lambda w: _base(w, w["model"]), "is the --model checkpoint itself"),
    "resume_nothing": (lambda w: _base(w) + ["--resume"], "holds no checkpoint"),
    "resume_user_folder": (lambda w: _base(w, w["folder"]) + ["--resume"], "not a `qwen-tts-ext grpo` run folder"),
    "one_sample_per_prompt": (lambda w: _base(w) + ["rollout.samples_per_prompt=1"], "samples_per_prompt must be >= 2"),
    "unknown_reward_term": (lambda w: _base(w) + ["reward.weights={spk_similarity: 1}"], "no such term"),
    "target_metric_as_reward": (lambda w: _base(w) + ["reward.weights={speaking_rate: 1}"], "use 'duration'"),
    "clip_out_of_range": (lambda w: _base(w) + ["objective.clip_eps=1.5"], "clip_eps"),
    "code_predictor_without_subtalker": (lambda w: _base(w) + ["train.train_code_predictor=true"], "objective.subtalker"),
    "misspelled_key": (lambda w: _base(w) + ["rollout.temprature=0.5"], "did you mean 'temperature'"),
    "unknown_flag": (lambda w: _base(w) + ["--promts", "x"], "did you mean --prompts"),
    "bad_precision": (lambda w: _base(w) + ["train.precision=fp8"], "is not one of"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_grpo_refuses(case, world, capsys):
    from qwen_tts_ext.grpo.cli import main

    build, needle = CASES[case]
    refuse(main, build(world), needle, [world["tmp"], world["model"]], capsys)


def test_bad_prompt_rows_are_reported_at_once(world, capsys):
    from qwen_tts_ext.grpo.cli import main

    rc = main([str(a) for a in ["--model", world["model"], "--prompts", world["broken"], "--output-dir", world["tmp"] / "o"]])
    err = capsys.readouterr().err
    assert rc == 2 and "line 2: not JSON" in err and "line 3: needs a non-empty" in err, err


def tiny_run(model, prompts, out, *extra):
    """A fast tiny run's arguments; a key=value in ``extra`` replaces its default."""
    defaults = ["train.steps=2", "rollout.max_frames=6", "rollout.samples_per_prompt=2", "rollout.prompts_per_step=1",
                "reward.weights={duration: 1.0}", "train.precision=no", "checkpoint.every_steps=1",
                "export_dtype=float32", "train.lr=1e-3"]
    given = {e.split("=", 1)[0] for e in extra if "=" in e}
    return (["--model", str(model), "--prompts", str(prompts), "--output-dir", str(out)]
            + [d for d in defaults if d.split("=", 1)[0] not in given] + list(extra))


def test_tiny_run_end_to_end(world, capsys):
    from qwen_tts_ext.grpo.cli import main

    out = world["tmp"] / "run"
    rc = main(tiny_run(world["model"], world["prompts"], out, "log.samples_every=2"))
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert cap.out.strip() == f"export: {out / 'export'}"
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("reward/mean", "reward/std", "reward/duration", "reward/cap", "rollout/eos_rate", "rollout/mean_seconds",
                "train/kl", "train/loss"):
        assert key in rows[0], key
    assert rows[0]["rollout/eos_rate"] == 0.0 and rows[0]["reward/cap"] == -1.0  # tiny models run to the cap
    spk = json.loads((out / "export" / "config.json").read_text())["talker_config"]["spk_id"]
    assert spk == {"ryan": 3061, "vivian": 3065}  # the built-in speakers kept (and in their rows)
    assert (out / "export" / "README.md").is_file() and "grpo" in json.loads((out / "export" / "sft_export.json").read_text())
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000001", "step-00000002"]
    assert (out / "samples" / "step-00000002" / "rollouts.jsonl").is_file()
    # the run folder is now ours: a second run without --overwrite/--resume is refused
    refuse(main, tiny_run(world["model"], world["prompts"], out), "holds a previous `qwen-tts-ext grpo` run", [out], capsys)
    # resuming with another objective is refused, naming the keys; a longer run resumes
    refuse(main, tiny_run(world["model"], world["prompts"], out, "--resume", "train.lr=5e-3", "objective.kl_beta=0.5"),
           "differs from the run's config.json in objective.kl_beta, train.lr", [out], capsys)
    rc = main(tiny_run(world["model"], world["prompts"], out, "--resume", "train.steps=3"))
    assert rc == 0, capsys.readouterr().err
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    from qwen_tts import Qwen3TTSModel

    assert Qwen3TTSModel.from_pretrained(str(out / "export")).model.config.tts_model_type == "custom_voice"


def test_tiny_lora_run_exports_merged_weights(world, capsys):
    from safetensors import safe_open

    from qwen_tts_ext.grpo.cli import main

    out = world["tmp"] / "lora"
    rc = main(tiny_run(world["model"], world["prompts"], out, "train.lora_rank=4", "checkpoint.every_steps=0",
                       "train.steps=1"))
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "LoRA rank 4" in cap.err
    with safe_open(str(out / "export" / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and not [k for k in keys if "lora" in k.lower()]  # merged: the stock key names only
    assert json.loads((out / "export" / "sft_export.json").read_text())["lora"] is True


def test_tensorboard_gets_metrics_and_audio(world, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from qwen_tts_ext.grpo.cli import main

    out = world["tmp"] / "tb"
    rc = main(tiny_run(world["model"], world["prompts"], out, "log.tracker=tensorboard", "log.samples_every=1",
                       "checkpoint.every_steps=0"))
    assert rc == 0, capsys.readouterr().err
    ea = EventAccumulator(str(out / "logs" / "qwen-tts-ext-grpo"), size_guidance={"audio": 0})
    ea.Reload()
    tags = ea.Tags()
    assert {"samples/00", "samples/01"} <= set(tags["audio"])
    assert {"reward/mean", "rollout/eos_rate", "rollout/mean_seconds", "train/kl"} <= set(tags["scalars"])
