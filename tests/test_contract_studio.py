"""`qwen-tts-ext studio` on bad input: exit 2, one line, nothing touched, and no server started
(see tests/_cli_contract.py); and what it hands the app when the input is good."""

from __future__ import annotations

import json
import socket

import pytest

from tests._cli_contract import refuse, user_files


@pytest.fixture()
def world(tiny_base, tiny_custom_voice, tiny_llm, tmp_path):
    w = {"base": tiny_base, "cv": tiny_custom_voice, "llm": tiny_llm, **user_files(tmp_path), "tmp": tmp_path}
    empty_models = tmp_path / "models"
    (empty_models / "an-llm").mkdir(parents=True)
    (empty_models / "an-llm" / "config.json").write_text(json.dumps({"model_type": "qwen3"}))
    w["empty_models"] = empty_models
    design = tmp_path / "design"
    design.mkdir()
    config = json.loads((tiny_base / "config.json").read_text())
    (design / "config.json").write_text(json.dumps({**config, "tts_model_type": "voice_design"}))
    w["design"] = design
    return w


@pytest.fixture()
def launched(monkeypatch):
    """Stand in for the Gradio server: records the config it would serve (never a real server in tests)."""
    from qwen_tts_ext import studio

    calls = []
    monkeypatch.setattr(studio, "launch", calls.append)
    return calls


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cv(w, *more):
    return ["--model", w["cv"], "--output-dir", w["tmp"] / "out", "--port", str(free_port()), *more]


CASES = {
    # name: (argv builder, needle)
    "no_checkpoints": (lambda w: ["--output-dir", w["tmp"] / "out"], "no checkpoints"),
    "missing_model": (lambda w: ["--model", w["tmp"] / "nope"], "no such folder"),
    "llm_as_model": (lambda w: ["--model", w["llm"]], "is a Qwen3 LLM, not a Qwen3-TTS checkpoint"),
    "user_folder_as_model": (lambda w: ["--model", w["folder"]], "no config.json"),
    "second_model_bad": (lambda w: ["--model", w["cv"], "--model", w["folder"]], "no config.json"),
    "voice_design_model": (lambda w: ["--model", w["design"]], "needs a custom_voice or base checkpoint"),
    "models_dir_missing": (lambda w: ["--models-dir", w["tmp"] / "nope"], "does not exist"),
    "models_dir_is_a_file": (lambda w: ["--models-dir", w["file"]], "is a file"),
    "models_dir_without_checkpoints": (lambda w: ["--models-dir", w["empty_models"]], "none under --models-dir"),
    "port_out_of_range": (lambda w: ["--model", w["cv"], "--port", "70000"], "port must be 1-65535"),
    "port_not_a_number": (lambda w: ["--model", w["cv"], "--port", "http"], "expected an integer"),
    "device_garbage": (lambda w: cv(w, "--device", "gpu"), "is not a device"),
    "device_index_out_of_range": (lambda w: cv(w, "--device", "cuda:99"), "--device cuda:99"),
    "bad_dtype": (lambda w: cv(w, "--dtype", "int4"), "dtype 'int4' is not one of"),
    "output_dir_is_a_file": (lambda w: ["--model", w["cv"], "--output-dir", w["file"]], "is a file"),
    "output_dir_under_a_file": (lambda w: ["--model", w["cv"], "--output-dir", w["file"] / "out"],
                                "nothing can be created under it"),
    "llm_missing": (lambda w: cv(w, "--llm", w["tmp"] / "no-llm"), "no such folder"),
    "llm_is_tts": (lambda w: cv(w, "--llm", w["base"]), "not an LLM"),
    "bad_max_segment_seconds": (lambda w: cv(w, "--max-segment-seconds", "0"), "max_segment_seconds must be > 0"),
    "misspelled_short_key": (lambda w: cv(w, "crossfade=10"), "did you mean 'crossfade_ms'"),
    "model_override_is_not_a_key": (lambda w: cv(w, "model=x"), "did you mean 'models'"),
    "unknown_flag": (lambda w: cv(w, "--prot", "7860"), "did you mean --port"),
    "flag_and_override_disagree": (lambda w: cv(w, "--device", "cpu", "device=cuda"), "disagree"),
    "stray_word": (lambda w: ["--output-dir", w["tmp"] / "out", "please", "--model", w["cv"]], "unexpected argument"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_studio_refuses(case, world, capsys, launched):
    from qwen_tts_ext.studio import main

    build, needle = CASES[case]
    refuse(main, build(world), needle, [world["tmp"], world["cv"], world["base"], world["llm"]], capsys)
    assert launched == []


def test_port_in_use_is_refused_before_the_server_starts(world, capsys, launched):
    from qwen_tts_ext.studio import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        refuse(main, ["--model", world["cv"], "--port", port], f"port {port} on 127.0.0.1 is in use",
               [world["tmp"]], capsys)
    assert launched == []


def test_good_input_reaches_the_app_with_every_model_and_one_set_of_defaults(world, capsys, launched):
    from qwen_tts_ext.studio import find_checkpoints, main

    models = world["tmp"] / "checkpoints"
    models.mkdir()
    (models / "b").symlink_to(world["base"])
    port = free_port()
    rc = main(["--model", str(world["cv"]), "--model", str(world["base"]), "--models-dir", str(models),
               "--port", str(port), "--output-dir", str(world["tmp"] / "out"), "seed=7", "--crossfade-ms", "20",
               "--llm", str(world["llm"])])
    cap = capsys.readouterr()
    assert rc == 0 and cap.out == "", cap.err
    (cfg,) = launched
    assert cfg.models == [str(world["cv"]), str(world["base"])]  # --model repeated
    assert find_checkpoints(cfg) == [str(world["cv"]), str(world["base"]), str(models / "b")]
    assert (cfg.port, cfg.synthesis.seed, cfg.synthesis.crossfade_ms) == (port, 7, 20)
    assert cfg.synthesis.max_segment_seconds == 120  # the SynthesisOptions default, as in synthesize
    assert cfg.runtime.device == "cpu" and cfg.runtime.dtype == "float32"  # resolved once, before the app
    assert not (world["tmp"] / "out").exists()  # created on the first save, not at start


def test_one_model_flag_may_name_several_folders(world, launched):
    from qwen_tts_ext.studio import main

    assert main(["--model", str(world["cv"]), str(world["base"]), "--port", str(free_port())]) == 0
    assert launched[0].models == [str(world["cv"]), str(world["base"])]
