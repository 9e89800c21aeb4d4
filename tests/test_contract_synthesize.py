"""`qwen-tts-ext synthesize` on bad input: exit 2, one line, nothing touched, no model loaded
(see tests/_cli_contract.py); and the new behaviours: flat keys, --overwrite of our own output, stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests._cli_contract import refuse, user_files

REPO = Path(__file__).resolve().parents[1]


def _copy_with_config(src: Path, dst: Path, **changes) -> Path:
    """A checkpoint folder whose files link to ``src`` except config.json, with ``changes`` applied."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.name != "config.json":
            (dst / f.name).symlink_to(f)
    config = json.loads((src / "config.json").read_text())
    config.update(changes)
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def _llm_with_other_ffn_shapes(llm: Path, dst: Path) -> Path:
    """Same config.json as ``llm`` (so only the safetensors headers tell), FFN weights of another width."""
    from safetensors.torch import save_file

    dst.mkdir(parents=True)
    (dst / "config.json").write_text((llm / "config.json").read_text())
    cfg = json.loads((llm / "config.json").read_text())
    h, inter = cfg["hidden_size"], cfg["intermediate_size"] + 8
    tensors = {}
    for layer in range(cfg["num_hidden_layers"]):
        for proj, shape in (("gate", (inter, h)), ("up", (inter, h)), ("down", (h, inter))):
            tensors[f"model.layers.{layer}.mlp.{proj}_proj.weight"] = torch.zeros(shape)
    save_file(tensors, str(dst / "model.safetensors"))
    return dst


@pytest.fixture()
def world(tiny_base, tiny_custom_voice, tiny_llm, tmp_path):
    from safetensors.torch import save_file

    from _synthesis_helpers import write_reference_wav

    w = {"base": tiny_base, "cv": tiny_custom_voice, "llm": tiny_llm, **user_files(tmp_path), "tmp": tmp_path}
    w["llm_wide"] = _copy_with_config(tiny_llm, tmp_path / "llm-wide",
                                      intermediate_size=json.loads((tiny_llm / "config.json").read_text())[
                                          "intermediate_size"] * 2)
    w["llm_shapes"] = _llm_with_other_ffn_shapes(tiny_llm, tmp_path / "llm-shapes")
    hidden = json.loads((tiny_base / "config.json").read_text())["talker_config"]["hidden_size"]
    w["speakers"] = tmp_path / "speakers.safetensors"
    save_file({"alice": torch.zeros(hidden)}, str(w["speakers"]))
    w["ref"] = write_reference_wav(tmp_path / "ref.wav")
    w["user_wav"] = tmp_path / "take1.wav"
    w["user_wav"].write_bytes(b"RIFF....WAVE not ours")
    (tmp_path / "notes.json").write_text('{"mine": true}')  # the sidecar name of notes.wav
    own = tmp_path / "own.wav"  # a previous output of this command: WAV + sidecar that says so
    own.write_bytes(b"RIFF....WAVE ours")
    own.with_suffix(".json").write_text(json.dumps({"written_by": "qwen-tts-ext synthesize", "audio": "own.wav"}))
    w["own"] = own
    (tmp_path / "takes.wav").mkdir()  # a folder with a WAV's name
    w["script"] = tmp_path / "story.txt"
    w["script"].write_text("[Happy] Hello there.")
    return w


def cv(w, *more):
    return ["--model", w["cv"], "--speaker", "ryan", "--out", w["tmp"] / "new.wav", *more]


def base(w, *more):
    return ["--model", w["base"], "--ref-audio", w["ref"], "--out", w["tmp"] / "new.wav", *more]


CASES = {
    # name: (argv builder, needle)
    "llm_as_model": (lambda w: ["--model", w["llm"], "--out", w["tmp"] / "n.wav", "Hi."],
                     "is a Qwen3 LLM, not a Qwen3-TTS checkpoint; pass it as --llm"),
    "user_folder_as_model": (lambda w: ["--model", w["folder"], "Hi."], "no config.json"),
    "missing_model": (lambda w: ["--model", w["tmp"] / "nope", "Hi."], "no such folder"),
    "no_model": (lambda w: ["Hi."], "no model: pass --model"),
    "device_index_out_of_range": (lambda w: cv(w, "--device", "cuda:99", "Hi."), "--device cuda:99"),
    "device_garbage": (lambda w: cv(w, "--device", "gpu0", "Hi."), "is not a device"),
    "bad_dtype": (lambda w: cv(w, "--dtype", "int8", "Hi."), "dtype 'int8' is not one of"),
    "out_under_a_file": (lambda w: ["--model", w["cv"], "--speaker", "ryan", "--out", w["file"] / "x.wav", "Hi."],
                         "is a file, so nothing can be created under it"),
    "out_not_wav": (lambda w: ["--model", w["cv"], "--speaker", "ryan", "--out", w["tmp"] / "a.txt", "Hi."],
                    "must end in .wav"),
    "out_is_a_folder": (lambda w: ["--model", w["cv"], "--speaker", "ryan", "--out", w["tmp"] / "takes.wav", "Hi."],
                        "is a folder"),
    "out_is_user_wav": (lambda w: ["--model", w["cv"], "--speaker", "ryan", "--out", w["user_wav"], "Hi."],
                        "was not written by this command"),
    "overwrite_user_wav": (lambda w: ["--model", w["cv"], "--speaker", "ryan", "--out", w["user_wav"],
                                      "--overwrite", "Hi."], "was not written by this command"),
    "sidecar_is_user_json": (lambda w: ["--model", w["cv"], "--speaker", "ryan", "--out", w["tmp"] / "notes.wav",
                                        "--overwrite", "Hi."], "sidecar"),
    "own_output_without_overwrite": (lambda w: ["--model", w["cv"], "--speaker", "ryan", "--out", w["own"], "Hi."],
                                     "pass --overwrite"),
    "out_dir_is_a_file": (lambda w: ["--model", w["cv"], "--speaker", "ryan", "--out-dir", w["file"], "Hi."],
                          "--out-dir"),
    "alpha_without_llm": (lambda w: cv(w, "--alpha", "0.03", "Hi."), "needs --llm"),
    "alpha_out_of_range": (lambda w: cv(w, "--alpha", "2", "--llm", w["llm"], "Hi."), "alpha: 2 is outside [0, 1]; did you mean 2% (0.02)?"),
    "alpha_llm_missing": (lambda w: base(w, "--alpha", "0.03", "--llm", w["tmp"] / "no-llm", "Hi."), "no such folder"),
    "alpha_llm_is_tts": (lambda w: base(w, "--alpha", "0.03", "--llm", w["cv"], "Hi."), "not an LLM"),
    "alpha_llm_other_config": (lambda w: base(w, "--alpha", "0.03", "--llm", w["llm_wide"], "Hi."),
                               "not the same backbone"),
    "alpha_llm_other_ffn_shapes": (lambda w: base(w, "--alpha", "0.03", "--llm", w["llm_shapes"], "Hi."),
                                   "FFN shapes differ"),
    "unknown_speaker": (lambda w: ["--model", w["cv"], "--speaker", "bob", "--out", w["tmp"] / "n.wav", "Hi."],
                        "unknown speaker 'bob'; this checkpoint has: ryan, vivian"),
    "no_speaker_of_two": (lambda w: ["--model", w["cv"], "--out", w["tmp"] / "n.wav", "Hi."],
                          "choose a speaker with --speaker: ryan, vivian"),
    "ref_audio_with_custom_voice": (lambda w: cv(w, "--ref-audio", w["ref"], "Hi."), "drop the reference audio"),
    "speaker_not_in_speakers_file": (lambda w: ["--model", w["base"], "--speaker", "zed", "--speakers-file",
                                                w["speakers"], "--out", w["tmp"] / "n.wav", "Hi."],
                                     "unknown speaker 'zed'"),
    "base_without_voice": (lambda w: ["--model", w["base"], "--out", w["tmp"] / "n.wav", "Hi."], "needs a voice"),
    "ref_audio_not_audio": (lambda w: ["--model", w["base"], "--ref-audio", w["file"], "--out", w["tmp"] / "n.wav",
                                       "Hi."], "cannot read reference audio"),
    "ref_audio_missing": (lambda w: ["--model", w["base"], "--ref-audio", w["tmp"] / "none.wav", "Hi."],
                          "reference audio"),
    "script_unbalanced_tag": (lambda w: cv(w, "[Angry Hi."), "unbalanced '['"),
    "script_empty": (lambda w: cv(w, ""), "the script is empty"),
    "script_file_missing": (lambda w: cv(w, "--script-file", w["tmp"] / "none.txt"), "does not exist"),
    "text_and_script_file": (lambda w: cv(w, "--script-file", w["script"], "Hi."), "not both"),
    "unsupported_language": (lambda w: cv(w, "--language", "klingon", "Hi."), "unsupported language"),
    "strict_unknown_tag": (lambda w: cv(w, "--strict", "[zorg] Hi."), "not in the emotions file"),
    "seed_flag_and_override_disagree": (lambda w: cv(w, "--seed", "1", "seed=abc", "Hi."), "disagree"),
    "speaker_flag_and_override_disagree": (lambda w: ["--model", w["cv"], "--speaker", "alice", "speaker=zed",
                                                      "Hi."], "disagree"),
    "text_twice": (lambda w: cv(w, "--text", "Hi.", "Bye."), "disagree"),
    "misspelled_short_key": (lambda w: cv(w, "tempreature=0.5", "Hi."), "did you mean 'temperature'"),
    "unknown_flag": (lambda w: cv(w, "--sead", "3", "Hi."), "did you mean --seed"),
    "bad_value": (lambda w: cv(w, "--top-p", "2", "Hi."), "top_p must be in (0, 1]"),
    "missing_emotions_file": (lambda w: cv(w, "--emotions", w["tmp"] / "none.yaml", "Hi."), "does not exist"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_synthesize_refuses(case, world, capsys, monkeypatch):
    from qwen_tts_ext.synthesis import cli
    from qwen_tts_ext.synthesis.engine import Synthesizer

    def no_load(*a, **k):
        raise AssertionError("a refused command must fail before any model loads")

    monkeypatch.setattr(Synthesizer, "load", no_load)
    build, needle = CASES[case]
    refuse(cli.main, build(world), needle, [world["tmp"], world["cv"], world["base"], world["llm"]], capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_one_line_before_loading(world, capsys):
    from qwen_tts_ext.synthesis.cli import main

    refuse(main, cv(world, "--device", "cuda:0", "Hi."), "use --device cpu", [world["tmp"]], capsys)


def test_flat_keys_of_the_groups_still_work(tmp_path):
    """``seed=3`` and a YAML file with flat keys (the shape before the groups) set the nested keys."""
    from qwen_tts_ext.synthesis.cli import COMMAND

    y = tmp_path / "s.yaml"
    y.write_text("model: m\nspeaker: alice\ncap_margin: 3\nsynthesis:\n  crossfade_ms: 10\n")
    cfg = COMMAND.parse(["--config", str(y), "seed=3", "device=cpu", "--greedy", "Hello", "there"])
    assert (cfg.runtime.model, cfg.voice.speaker, cfg.synthesis.seed) == ("m", "alice", 3)
    assert cfg.synthesis.cap_margin == 3 and cfg.synthesis.crossfade_ms == 10 and cfg.synthesis.do_sample is False
    assert cfg.text == "Hello there" and cfg.synthesis.max_segment_seconds == 120
    assert COMMAND.parse(["--model", "m", "--seed", "4", "synthesis.seed=4"]).synthesis.seed == 4  # agreeing is fine


def test_sidecar_ownership(tmp_path):
    from qwen_tts_ext.synthesis.output import is_own_sidecar, is_own_wav

    (tmp_path / "a.json").write_text(json.dumps({"written_by": "qwen-tts-ext studio"}))
    (tmp_path / "old.json").write_text(json.dumps({"audio": "old.wav", "segments": [], "sample_rate": 24000}))
    (tmp_path / "user.json").write_text(json.dumps({"audio": "other.wav", "segments": [], "sample_rate": 1}))
    (tmp_path / "bad.json").write_text("{not json")
    assert is_own_wav(tmp_path / "a.wav") and is_own_sidecar(tmp_path / "old.json")  # written before written_by
    assert not is_own_sidecar(tmp_path / "user.json") and not is_own_sidecar(tmp_path / "bad.json")
    assert not is_own_wav(tmp_path / "none.wav")


def test_overwrite_replaces_only_our_own_output(tiny_custom_voice, tmp_path, capsys):
    from qwen_tts_ext.synthesis.cli import main

    out = tmp_path / "speech.wav"
    args = ["--model", str(tiny_custom_voice), "--speaker", "ryan", "-o", str(out), "--allow-cap-hits",
            "--max-segment-seconds", "1", "cap_margin=0.5", "cap_slack_seconds=0.2"]
    assert main(args + ["--seed", "1", "Hello."]) == 0
    first = json.loads(out.with_suffix(".json").read_text())
    assert first["written_by"] == "qwen-tts-ext synthesize" and first["seed"] == 1
    capsys.readouterr()
    assert main(args + ["--seed", "2", "Hello."]) == 2  # ours, but no --overwrite
    assert "pass --overwrite" in capsys.readouterr().err
    assert main(args + ["--seed", "2", "--overwrite", "Hello."]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["seed"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["speech.json", "speech.wav"]  # no temp files left


def test_script_prints_only_the_result_on_stdout(tiny_custom_voice, tmp_path):
    """``out=$(python scripts/synthesize.py ...)`` gets the result line: banners and progress go to stderr."""
    out = tmp_path / "s.wav"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "scripts/synthesize.py", "--model", str(tiny_custom_voice), "--speaker", "vivian",
         "--out", str(out), "--allow-cap-hits", "--max-segment-seconds", "1", "cap_margin=0.5",
         "cap_slack_seconds=0.2", "[Happy] Hi. [Sad] Bye."],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"wrote {out} (") and lines[0].endswith("and s.json"), proc.stdout
    assert "segments" in proc.stderr  # the progress bar went to stderr
    assert out.is_file() and out.with_suffix(".json").is_file()


def test_library_load_identifies_the_folder_first(tiny_llm):
    """Studio and evaluate load through ``Synthesizer.load``: an LLM there is one UserError, not a TypeError."""
    from qwen_tts_ext.errors import UserError
    from qwen_tts_ext.synthesis.engine import Synthesizer

    with pytest.raises(UserError, match="is a Qwen3 LLM, not a Qwen3-TTS checkpoint"):
        Synthesizer.load(tiny_llm)
