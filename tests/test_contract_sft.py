"""`qwen-tts-ext sft` on bad input: exit 2, one line, nothing touched, before any model loads
(see tests/_cli_contract.py); and the run-folder policy that replaces it on good input: a new run marks
its folder, a resume continues only this suite's own run, --overwrite starts our own run over."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest

from _sft_helpers import make_prepared
from qwen_tts_ext.config import load_config
from qwen_tts_ext.train.config import RESUME_MAY_CHANGE, SFTConfig, recipe_record, resume_changes
from tests._cli_contract import refuse, user_files

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "sft_tiny.yaml")
FAST = ["train.batch_size=2", "log.every_steps=1", "export.dtype=float32"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_base, espeak_corpus):
    return make_prepared(tmp_path_factory.mktemp("sftc") / "prep", tiny_base, espeak_corpus)


def _fake_run(folder: Path, *, marker: bool, state: dict | None = None) -> Path:
    """A run-looking folder: a checkpoint whose trainer_state.json is ``state`` (and a pickle beside it)."""
    step = folder / "checkpoints" / "step-00000001"
    step.mkdir(parents=True)
    (step / "trainer_state.json").write_text(json.dumps(state or {"global_step": 1, "epoch": 0, "batch_in_epoch": 1}))
    (step / "custom_checkpoint_0.pkl").write_bytes(b"not to be unpickled")
    (folder / "metrics.jsonl").write_text("{}\n")
    if marker:
        (folder / ".qwen-tts-ext.json").write_text(json.dumps({"command": "sft"}))
    return folder


@pytest.fixture()
def world(tiny_base, tiny_llm, prepared, tmp_path):
    import qwen_tts_ext.train.loop  # noqa: F401  (imported once: the timing below is of the checks alone)

    w = {"model": tiny_base, "llm": tiny_llm, "data": prepared, **user_files(tmp_path), "tmp": tmp_path}
    w["foreign_run"] = _fake_run(tmp_path / "downloaded-run", marker=False)
    w["marked_foreign_ckpt"] = _fake_run(tmp_path / "marked-run", marker=True)
    own = tmp_path / "own-run"
    own.mkdir()
    (own / ".qwen-tts-ext.json").write_text(json.dumps({"command": "sft"}))
    (own / "metrics.jsonl").write_text("{}\n")
    w["own_no_ckpt"] = own
    export = tmp_path / "an-export"
    export.mkdir()
    (export / ".qwen-tts-ext.json").write_text(json.dumps({"command": "sft-export"}))
    (export / "model.safetensors").write_bytes(b"weights")
    w["export"] = export
    # our own run with a checkpoint, whose saved recipe had another lr and sub-talker weight
    changed = _fake_run(tmp_path / "changed-run", marker=True,
                        state={"global_step": 1, "epoch": 0, "batch_in_epoch": 1, "written_by": "qwen-tts-ext"})
    saved = recipe_record(load_config(SFTConfig, TINY, [f"model={tiny_base}", f"data.path={prepared}",
                                                        f"output_dir={changed}"]))
    saved["train"].update(lr=1e-4, subtalker_weight=0.5)
    (changed / "config.json").write_text(json.dumps(saved))
    w["changed_run"] = changed
    w["unsaved_run"] = _fake_run(tmp_path / "unsaved-run", marker=True,
                                 state={"global_step": 1, "epoch": 0, "batch_in_epoch": 1, "written_by": "qwen-tts-ext"})
    w["unprepared"] = tmp_path / "recordings"
    w["unprepared"].mkdir()
    (w["unprepared"] / "clip.wav").write_bytes(b"RIFF")
    return w


def _args(w, out=None, *extra):
    return ["--config", TINY, "--model", w["model"], "--data", w["data"],
            "--output-dir", out if out is not None else w["tmp"] / "run", *extra]


CASES = {
    # name: (argv builder, needle)
    "output_is_a_file": (lambda w: _args(w, w["file"]), "is an existing file"),
    "output_under_a_file": (lambda w: _args(w, w["file"] / "run"), "is a file"),
    "output_is_user_folder": (lambda w: _args(w, w["folder"]), "was not written by `qwen-tts-ext sft`"),
    "overwrite_user_folder": (lambda w: _args(w, w["folder"], "--overwrite"), "was not written by"),
    "output_is_an_export": (lambda w: _args(w, w["export"], "--overwrite"), "was not written by"),
    "output_is_the_model": (lambda w: _args(w, w["model"]), "is the --model checkpoint itself"),
    "output_inside_the_data": (lambda w: _args(w, w["data"] / "run"), "is inside the --data input"),
    "output_is_the_data": (lambda w: _args(w, w["data"], "--overwrite"), "is the --data input itself"),
    "output_holds_the_data": (lambda w: _args(w, w["data"].parent, "--overwrite"), "contains the --data input"),
    "own_run_without_resume": (lambda w: _args(w, w["own_no_ckpt"]),
                               "add checkpoint.resume=true to continue it, or --overwrite to start over"),
    "resume_user_folder": (lambda w: _args(w, w["folder"], "checkpoint.resume=true"), "would unpickle"),
    "resume_foreign_run": (lambda w: _args(w, w["foreign_run"], "--resume"), "resuming would unpickle files from it"),
    "resume_foreign_checkpoint": (lambda w: _args(w, w["marked_foreign_ckpt"], "checkpoint.resume=true"),
                                  "trainer_state.json was not written by qwen-tts-ext"),
    "resume_without_checkpoint": (lambda w: _args(w, w["own_no_ckpt"], "--resume"), "holds no checkpoint"),
    "resume_absent_folder": (lambda w: _args(w, w["tmp"] / "never", "--resume"), "holds no run to resume"),
    "resume_and_overwrite": (lambda w: _args(w, w["own_no_ckpt"], "--resume", "--overwrite"), "choose one"),
    "resume_changed_objective": (lambda w: _args(w, w["changed_run"], "--resume"),
                                 "the objective or data changed (train.lr 0.0001 -> 0.003; "
                                 "train.subtalker_weight 0.5 -> 0.3); resume with the saved settings, pass --force"),
    "resume_without_saved_recipe": (lambda w: _args(w, w["unsaved_run"], "--resume"),
                                    "config.json (the recipe it trained with) is missing or unreadable"),
    "force_without_resume": (lambda w: _args(w, None, "--force"), "--force only applies to a resume"),
    "flag_and_override_disagree": (lambda w: [*_args(w), f"model={w['llm']}"], "disagree"),
    "resume_flag_and_override_disagree": (lambda w: [*_args(w), "--resume", "checkpoint.resume=false"], "disagree"),
    "misspelled_key": (lambda w: [*_args(w), "train.lrr=1e-4"], "did you mean 'lr'"),
    "bad_value_type": (lambda w: [*_args(w), "train.lr=abc"], "expected a number"),
    "bad_choice": (lambda w: [*_args(w), "train.precision=fp8"], "is not one of"),
    "model_is_an_llm": (lambda w: ["--config", TINY, "--model", w["llm"], "--data", w["data"],
                                   "--output-dir", w["tmp"] / "run"], "is a Qwen3 LLM, not a Qwen3-TTS checkpoint"),
    "model_missing": (lambda w: ["--config", TINY, "--model", w["tmp"] / "nope", "--data", w["data"],
                                 "--output-dir", w["tmp"] / "run"], "no such folder"),
    "model_is_user_folder": (lambda w: ["--config", TINY, "--model", w["folder"], "--data", w["data"],
                                        "--output-dir", w["tmp"] / "run"], "no config.json"),
    "no_model": (lambda w: ["--config", TINY, "--data", w["data"], "--output-dir", w["tmp"] / "run"], "no model given"),
    "data_missing": (lambda w: ["--config", TINY, "--model", w["model"], "--data", w["tmp"] / "nope",
                                "--output-dir", w["tmp"] / "run"], "no such folder"),
    "data_is_a_file": (lambda w: ["--config", TINY, "--model", w["model"], "--data", w["file"],
                                  "--output-dir", w["tmp"] / "run"], "is a file"),
    "data_not_prepared": (lambda w: ["--config", TINY, "--model", w["model"], "--data", w["unprepared"],
                                     "--output-dir", w["tmp"] / "run"], "is not a prepared dataset"),
    "unknown_flag": (lambda w: [*_args(w), "--resum"], "did you mean --resume"),
    "stray_word": (lambda w: [*_args(w), "please"], "unexpected argument"),
    "flash_attention_without_flash_attn": (lambda w: [*_args(w), "train.attn_implementation=flash_attention_2"],
                                           "flash-attn is not installed"),
    "missing_config_file": (lambda w: ["--config", w["tmp"] / "none.yaml", "--model", w["model"]], "does not exist"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_sft_refuses(case, world, capsys):
    from qwen_tts_ext.train.cli import main

    build, needle = CASES[case]
    if case == "flash_attention_without_flash_attn" and importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn is installed here")
    t0 = time.perf_counter()
    refuse(main, build(world), needle, [world["tmp"], world["model"], world["llm"], world["data"]], capsys)
    assert time.perf_counter() - t0 < 1.0, "a refusal must come before any model loads"
    assert not (world["tmp"] / "run").exists()


def test_every_problem_is_reported_at_once(world, capsys):
    from qwen_tts_ext.train.cli import main

    rc = main(["--model", str(world["llm"]), "--data", str(world["tmp"] / "nope"), "--output-dir",
               str(world["tmp"] / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 2, err
    assert "Qwen3 LLM" in err[0] and "no such folder" in err[1]


def test_help_explains_resume_trust(capsys):
    from qwen_tts_ext.train.cli import main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "resume:" in out and "unpickles" in out and '"written_by": "qwen-tts-ext"' in out and "--overwrite" in out


# ----------------------------------------------------------------------------- good input


def _steps(run: Path) -> list[int]:
    return [json.loads(l)["step"] for l in (run / "metrics.jsonl").read_text().splitlines() if "train/loss" in l]


def _sft(argv, capsys):
    from qwen_tts_ext.train.cli import main

    capsys.readouterr()
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    assert rc == 0, cap.err[-3000:]
    return cap


def test_resume_recipe_with_overrides_anywhere(world, capsys):
    """The README's recipe: `... train.max_steps=2 --output-dir D checkpoint.resume=true` continues the run."""
    run = world["tmp"] / "run"
    base = ["--config", TINY, "--model", world["model"], "--data", world["data"], *FAST, "checkpoint.every_steps=1"]
    cap = _sft([*base, "train.max_steps=2", "--output-dir", run], capsys)
    assert cap.out == f"export: {run / 'export'}\n"  # stdout: the result only
    assert json.loads((run / ".qwen-tts-ext.json").read_text())["command"] == "sft"
    state = json.loads((run / "checkpoints" / "step-00000002" / "trainer_state.json").read_text())
    assert state["written_by"] == "qwen-tts-ext" and state["global_step"] == 2
    assert _steps(run) == [1, 2]

    cap = _sft([*base, "train.max_steps=4", "--output-dir", run, "checkpoint.resume=true"], capsys)
    assert cap.out == f"export: {run / 'export'}\n"
    assert "resumed from" in cap.err and "step-00000002" in cap.err
    assert _steps(run) == [1, 2, 3, 4]  # continued at step 3, not started over
    assert json.loads((run / "summary.json").read_text())["global_step"] == 4
    assert json.loads((run / "export" / ".qwen-tts-ext.json").read_text())["command"] == "sft-export"

    # the same folder again without resume is refused: it is a run of ours
    refuse(__import__("qwen_tts_ext.train.cli", fromlist=["main"]).main,
           [*base, "train.max_steps=4", "--output-dir", run], "add checkpoint.resume=true", [run], capsys)


def test_overwrite_starts_our_own_run_over_and_keeps_other_files(world, capsys):
    run = world["tmp"] / "run"
    run.mkdir()  # an empty folder is fine
    base = ["--config", TINY, "--model", world["model"], "--data", world["data"], *FAST, "--output-dir", run]
    _sft([*base, "train.max_steps=2", "checkpoint.every_steps=1"], capsys)
    (run / "my-notes.txt").write_text("mine")  # the user dropped a file into the run folder
    cap = _sft([*base, "train.max_steps=1", "--overwrite"], capsys)
    assert cap.out == f"export: {run / 'export'}\n"
    assert _steps(run) == [1]  # metrics start over
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-00000001"]
    assert (run / "my-notes.txt").read_text() == "mine" and "my-notes.txt" in cap.err


def test_a_failed_start_leaves_a_folder_a_new_run_may_take(world, capsys, monkeypatch):
    """A run that dies before writing anything but the marker does not need --overwrite to start again."""
    from qwen_tts_ext.errors import UserError
    from qwen_tts_ext.train import setup
    from qwen_tts_ext.train.cli import main

    def broken(*a, **k):
        raise UserError("model failed to load")

    monkeypatch.setattr(setup, "load_model", broken)
    run = world["tmp"] / "run"
    assert main(["--config", TINY, "--model", str(world["model"]), "--data", str(world["data"]),
                 "--output-dir", str(run)]) == 2
    assert [p.name for p in run.iterdir()] == [".qwen-tts-ext.json"]
    monkeypatch.undo()
    _sft(["--config", TINY, "--model", world["model"], "--data", world["data"], *FAST, "--output-dir", run,
          "train.max_steps=1"], capsys)


def test_resume_refuses_a_changed_objective_unless_forced(world, capsys):
    """A resume continues the saved optimizer and data order: a new lr is refused (nothing touched), a longer
    run and other logging/checkpoint/export settings resume, and --force resumes with the change said."""
    from qwen_tts_ext.train.cli import main

    run = world["tmp"] / "run"
    base = ["--config", TINY, "--model", world["model"], "--data", world["data"], "train.batch_size=2", "--output-dir", run]
    _sft([*base, "train.max_steps=2", "checkpoint.every_steps=1", "log.every_steps=1", "export.dtype=float32"], capsys)
    line = refuse(main, [*base, "train.max_steps=3", "train.lr=1e-3", "--resume"],
                  "the objective or data changed (train.lr 0.003 -> 0.001)", [run, world["data"]], capsys)
    assert "train.max_steps" not in line  # extending the run is not a change of objective

    cap = _sft([*base, "train.max_steps=3", "log.every_steps=3", "checkpoint.every_steps=3", "export.dtype=bfloat16",
                "train.gradient_checkpointing=true", "--resume"], capsys)
    assert "resumed from" in cap.err and "--force" not in cap.err
    assert _steps(run) == [1, 2, 3]

    cap = _sft([*base, "train.max_steps=4", "train.lr=1e-3", "log.every_steps=1", "--resume", "--force"], capsys)
    assert "--force: resuming although the objective or data changed: train.lr 0.003 -> 0.001" in cap.err
    assert _steps(run) == [1, 2, 3, 4]
    assert json.loads((run / "config.json").read_text())["train"]["lr"] == 1e-3  # the next resume compares with it


def test_resume_comparison_keys(tmp_path):
    """Which keys count as objective or data (config.RESUME_MAY_CHANGE says which do not)."""
    (tmp_path / "data").mkdir()
    cfg = load_config(SFTConfig, None, [f"data.path={tmp_path / 'data'}", "model=Org/hub-id", "train.lr=1e-5"])
    saved = json.loads(json.dumps(recipe_record(cfg)))
    assert resume_changes(saved, cfg) == []
    harmless = ["output_dir=elsewhere", "checkpoint.keep_last=9", "log.every_steps=3", "export.dtype=float16",
                "train.max_steps=99", "train.epochs=9", "train.gradient_checkpointing=true", "train.adamw_impl=for-loop",
                "train.attn_implementation=eager", "data.num_workers=2", "log.tracker=none"]
    assert resume_changes(saved, load_config(SFTConfig, None, [f"data.path={tmp_path / 'data'}", "model=Org/hub-id",
                                                                "train.lr=1e-5", *harmless])) == []
    objective = {"model": "model=Org/other", "data.path": f"data.path={tmp_path}", "data.speakers": "data.speakers=s",
                 "data.eval_fraction": "data.eval_fraction=0.1", "data.use_instruct": "data.use_instruct=false",
                 "train.lr": "train.lr=2e-5", "train.schedule": "train.schedule=linear",
                 "train.warmup_steps": "train.warmup_steps=3", "train.batch_size": "train.batch_size=8",
                 "train.grad_accum": "train.grad_accum=2", "train.seed": "train.seed=1",
                 "train.subtalker_weight": "train.subtalker_weight=0.5",
                 "train.subtalker_frame_fraction": "train.subtalker_frame_fraction=0.5",
                 "train.precision": "train.precision=bf16", "train.lora_rank": "train.lora_rank=8",
                 "train.lora_targets": "train.lora_targets=[q_proj]", "train.freeze_text_embedding":
                 "train.freeze_text_embedding=false", "train.adam_betas": "train.adam_betas=[0.9,0.95]"}
    for key, override in objective.items():
        new = load_config(SFTConfig, None, [f"data.path={tmp_path / 'data'}", "model=Org/hub-id", "train.lr=1e-5",
                                            override])
        assert [k for k, _, _ in resume_changes(saved, new)] == [key], key
    # the same folder named another way is no change; a key an older run did not save compares with its default
    same = load_config(SFTConfig, None, [f"data.path={tmp_path}/./data/", "model=Org/hub-id", "train.lr=1e-5"])
    assert resume_changes(saved, same) == []
    del saved["train"]["subtalker_frame_fraction"]
    assert resume_changes(saved, cfg) == []
    assert "train.lr" not in RESUME_MAY_CHANGE and "train.max_steps" in RESUME_MAY_CHANGE
