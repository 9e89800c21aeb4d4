"""`qwen-tts-ext quantize` on bad input: exit 2, one line, nothing touched, no model loaded (see tests/_cli_contract.py)."""

from __future__ import annotations

import json

import pytest

from _score_helpers import fake_checkpoint
from tests._cli_contract import refuse, user_files


def _forbid(*args, **kwargs):
    raise AssertionError("a model was loaded before the input was checked")


@pytest.fixture()
def no_model_load(monkeypatch):
    import qwen_tts

    monkeypatch.setattr(qwen_tts.Qwen3TTSModel, "from_pretrained", _forbid)


@pytest.fixture()
def world(tiny_base, synthetic_prepared, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    llm = fake_checkpoint(inputs / "Qwen3-1.7B", "llm")
    no_talker = fake_checkpoint(inputs / "bare", "base")
    quantized = tmp_path / "already-int4"
    quantized.mkdir()
    (quantized / "config.json").write_text((tiny_base / "config.json").read_text())
    (quantized / "quantization.json").write_text("{}")
    (quantized / "int4.safetensors").write_bytes(b"")
    (inputs / "not-prepared").mkdir()
    (inputs / "not-prepared" / "x.txt").write_text("x")
    previous = tmp_path / "previous"
    previous.mkdir()
    (previous / "quantization.json").write_text("{}")
    (previous / ".qwen-tts-ext.json").write_text(json.dumps({"command": "quantize"}))
    return {"model": tiny_base, "calib": synthetic_prepared, "llm": llm, "bare": no_talker, "quantized": quantized,
            "not_prepared": inputs / "not-prepared", "previous": previous, "tmp": tmp_path, **user_files(tmp_path)}


def ok(w, *extra):
    """A valid command line changed by ``extra`` (a flag of the valid line given again replaces its value)."""
    base = {"--model": w["model"], "--calib": w["calib"], "--output": w["tmp"] / "out", "--group-size": "32"}
    rest, i = [], 0
    while i < len(extra):
        if extra[i] in base:
            base[extra[i]] = extra[i + 1]
            i += 2
        else:
            rest.append(extra[i])
            i += 1
    return [x for k, v in base.items() if v is not None for x in (k, v)] + rest  # None: the flag is left out


CASES = [
    # (id, argv from the world, what the one error line must say)
    ("no-model", lambda w: ["--calib", w["calib"], "--output", w["tmp"] / "o"], "pass --model"),
    ("no-calib", lambda w: ["--model", w["model"], "--output", w["tmp"] / "o"], "pass --calib PREPARED_DIR"),
    ("no-output", lambda w: ["--model", w["model"], "--calib", w["calib"]], "pass --output"),
    ("unknown-key", lambda w: ok(w, "group_sise=64"), "group_size"),
    ("bad-method", lambda w: ok(w, "--method", "gptq"), "method must be one of awq, rtn"),
    ("odd-group", lambda w: ok(w, "--group-size", "33"), "group_size must be an even number"),
    ("group-not-dividing", lambda w: ok(w, "--group-size", "256"), "does not divide"),
    ("bad-dtype", lambda w: ok(w, "--dtype", "int4"), "dtype must be one of"),
    ("unknown-judge", lambda w: ok(w, "--judges", "speaker,utmos"), "unknown judge(s) utmos"),
    ("zero-rows", lambda w: ok(w, "--calib-rows", "0"), "calib_rows must be >= 1"),
    ("model-missing", lambda w: ok(w, "--model", w["tmp"] / "nope"), "nope"),
    ("model-is-llm", lambda w: ok(w, "--model", w["llm"]), "not a Qwen3-TTS checkpoint"),
    ("model-without-talker", lambda w: ok(w, "--model", w["bare"]), "talker_config"),
    ("model-already-int4", lambda w: ok(w, "--model", w["quantized"]), "already quantized"),
    ("calib-not-prepared", lambda w: ok(w, "--calib", w["not_prepared"]), "prepare"),
    ("calib-missing", lambda w: ok(w, "--calib", w["tmp"] / "nothing"), "not found"),
    ("calib-and-sentences", lambda w: ok(w, "--sentences", "A.", "B.", "--speaker", "x"), "give one"),
    ("sentences-no-speaker", lambda w: ok(w, "--calib", None, "--sentences", "A.", "B."), "needs --speaker"),
    ("sentences-unknown-speaker", lambda w: ok(w, "--calib", None, "--sentences", "A.", "B.", "--speaker", "zed"),
     "not a speaker of the checkpoint"),
    ("one-sentence", lambda w: ok(w, "--calib", None, "--sentences", "A.", "--speaker", "zed"), "at least 2"),
    ("sentences-file-missing", lambda w: ok(w, "--calib", None, "--sentences", w["tmp"] / "p.txt", "--speaker", "z"),
     "no such file"),
    ("output-is-file", lambda w: ok(w, "--output", w["file"]), "existing file"),
    ("output-under-file", lambda w: ok(w, "--output", w["file"] / "sub"), "is a file"),
    ("output-not-ours", lambda w: ok(w, "--output", w["folder"]), "not empty"),
    ("output-previous-no-overwrite", lambda w: ok(w, "--output", w["previous"]), "--overwrite"),
    ("output-is-model", lambda w: ok(w, "--output", w["model"]), "checkpoint itself"),
    ("output-inside-model", lambda w: ok(w, "--output", w["model"] / "int4"), "inside"),
    ("no-cuda", lambda w: ok(w, "--device", "cuda:7"), "cuda"),
]


@pytest.mark.parametrize("case_id,argv,needle", CASES, ids=[c[0] for c in CASES])
def test_refusals(case_id, argv, needle, world, capsys, no_model_load, monkeypatch):
    import torch

    from qwen_tts_ext.quantize.cli import main

    if case_id == "no-cuda":
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    roots = [world["tmp"], world["model"], world["calib"]]
    refuse(main, argv(world), needle, roots, capsys)


def test_help_says_what_it_does(capsys):
    from qwen_tts_ext.quantize.cli import main

    try:
        rc = main(["--help"])
    except SystemExit as exc:
        rc = exc.code
    assert rc == 0
    out = capsys.readouterr().out
    for word in ("--calib", "--sentences", "--speaker", "--group-size", "--method", "--embed-8bit", "awq", "rtn", "examples:", "[group_size]"):
        assert word in out, word


def test_registered_in_the_suite_cli():
    from qwen_tts_ext import cli

    cli._optional_commands()
    assert cli.COMMANDS["quantize"][0] == "qwen_tts_ext.quantize.cli"


def test_quantize_yaml_loads_and_names_every_key():
    from dataclasses import fields
    from pathlib import Path

    import yaml

    from qwen_tts_ext.config import load_config
    from qwen_tts_ext.quantize.config import QuantizeConfig

    path = Path(__file__).resolve().parents[1] / "configs" / "quantize.yaml"
    cfg = load_config(QuantizeConfig, path, ["model=/a", "calib=/p", "output=/b"])
    cfg.check()
    assert cfg.group_size == 128 and cfg.method == "awq" and cfg.calib_rows == 128
    assert set(yaml.safe_load(path.read_text())) == {f.name for f in fields(QuantizeConfig)}
