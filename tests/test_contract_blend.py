"""`qwen-tts-ext blend` on bad input: exit 2, one line, nothing touched (see tests/_cli_contract.py)."""

from __future__ import annotations

import pytest

from tests._cli_contract import refuse, user_files


@pytest.fixture()
def world(tiny_base, tiny_llm, tmp_path):
    return {"tts": tiny_base, "llm": tiny_llm, **user_files(tmp_path), "tmp": tmp_path}


CASES = {
    # name: (argv builder, needle)
    "output_is_user_folder": (lambda w: ["--tts", w["tts"], "--llm", w["llm"], "--output", w["folder"]],
                              "was not written by `qwen-tts-ext blend`"),
    "overwrite_user_folder": (lambda w: ["--tts", w["tts"], "--llm", w["llm"], "--output", w["folder"], "--overwrite"],
                              "was not written by"),
    "output_is_a_file": (lambda w: ["--tts", w["tts"], "--llm", w["llm"], "--output", w["file"]], "is an existing file"),
    "output_under_a_file": (lambda w: ["--tts", w["tts"], "--llm", w["llm"], "--output", w["file"] / "x"], "is a file"),
    "llm_as_tts": (lambda w: ["--tts", w["llm"], "--llm", w["llm"], "--output", w["tmp"] / "o"], "is a Qwen3 LLM"),
    "tts_as_llm": (lambda w: ["--tts", w["tts"], "--llm", w["tts"], "--output", w["tmp"] / "o"], "not an LLM"),
    "missing_tts": (lambda w: ["--tts", w["tmp"] / "nope", "--llm", w["llm"], "--output", w["tmp"] / "o"], "no such folder"),
    "user_folder_as_tts": (lambda w: ["--tts", w["folder"], "--llm", w["llm"], "--output", w["tmp"] / "o"], "no config.json"),
    "alpha_out_of_range": (lambda w: ["--tts", w["tts"], "--llm", w["llm"], "--output", w["tmp"] / "o", "--alpha", "1.5"], "alpha"),
    "alpha_not_a_number": (lambda w: ["--tts", w["tts"], "--llm", w["llm"], "--output", w["tmp"] / "o", "--alpha", "lots"], "expected a number"),
    "misspelled_key": (lambda w: ["--tts", w["tts"], "--llm", w["llm"], "--output", w["tmp"] / "o", "alhpa=0.1"], "did you mean 'alpha'"),
    "unknown_flag": (lambda w: ["--tts", w["tts"], "--llm", w["llm"], "--output", w["tmp"] / "o", "--alpah", "0.1"], "did you mean --alpha"),
    "flag_and_override_disagree": (lambda w: ["--tts", w["tts"], "--llm", w["llm"], "--alpha", "0.02", "alpha=0.05",
                                              "--output", w["tmp"] / "o"], "disagree"),
    "stray_word": (lambda w: ["--tts", w["tts"], "--llm", w["llm"], "--output", w["tmp"] / "o", "please"], "unexpected argument"),
    "missing_config_file": (lambda w: ["--config", w["tmp"] / "none.yaml", "--tts", w["tts"]], "does not exist"),
    "no_output": (lambda w: ["--tts", w["tts"], "--llm", w["llm"]], "pass --output"),
    "output_is_the_input": (lambda w: ["--tts", w["tts"], "--llm", w["llm"], "--output", w["tts"]], "is the --tts checkpoint itself"),
    "report_dir_is_user_folder": (lambda w: ["--tts", w["tts"], "--llm", w["llm"], "--report-dir", w["folder"]], "not written by"),
    "bad_shard_size": (lambda w: ["--tts", w["tts"], "--llm", w["llm"], "--output", w["tmp"] / "o", "--shard-size", "lots"], "shard_size"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_blend_refuses(case, world, capsys):
    from qwen_tts_ext.blend.cli import main

    build, needle = CASES[case]
    refuse(main, build(world), needle, [world["tmp"], world["tts"], world["llm"]], capsys)


def test_every_problem_is_reported_at_once(world, capsys):
    from qwen_tts_ext.blend.cli import main

    rc = main(["--tts", str(world["tts"]), "alhpa=0.1", "tensors=gate", "--dry-run", "shard_size=lots", "bogus=1"])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 3, err
    assert "'alhpa'" in err and "'bogus'" in err and "shard_size" in err


def test_options_and_overrides_mix_in_any_order(world, capsys):
    from qwen_tts_ext.blend.cli import main

    out = world["tmp"] / "o"
    rc = main(["alpha=0.05", "--tts", str(world["tts"]), "tensors=gate", "--llm", str(world["llm"]),
               "--output", str(out), "freeze_layers=[0]"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    import json

    prov = json.loads((out / "darwin_blend.json").read_text())
    assert prov["config"]["alpha"] == 0.05 and prov["config"]["tensors"] == ["gate"]
    assert cap.out.strip().splitlines()[-1] == f"wrote {out}"  # results on stdout, logs on stderr
