"""`qwen-tts-ext evaluate` on bad input: exit 2, one line, nothing touched, no model loaded (see tests/_cli_contract.py).

Every refusal must come before the TTS model loads (that is the point: a wrong --llm used to be
found after minutes of alpha-0 synthesis), so the refusal table runs with ``Synthesizer.load``
replaced by a function that fails the test.
"""

from __future__ import annotations

import json

import pytest

from tests._cli_contract import refuse, user_files

FAST = ["--alphas", "0", "--script", "", "--judges", "", "sentences=[Hello there.]", "synthesis.cap_margin=0.5",
        "synthesis.cap_slack_seconds=0.2"]


@pytest.fixture(scope="module")
def incompatible_llm(tiny_base, tmp_path_factory):
    """A Qwen3 LLM whose FFN width differs from the tiny talker's (128 vs 96)."""
    from qwen_tts_ext.testing.tiny_checkpoint import build_tiny_llm

    return build_tiny_llm(tmp_path_factory.mktemp("llm") / "narrow", tiny_base, intermediate_size=96)


@pytest.fixture()
def world(tiny_base, tiny_llm, tiny_custom_voice, incompatible_llm, tmp_path):
    from _synthesis_helpers import write_reference_wav

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    ref = write_reference_wav(inputs / "ref.wav")
    (inputs / "empty.txt").write_text("# only a comment\n\n")
    return {"tts": tiny_base, "llm": tiny_llm, "cv": tiny_custom_voice, "narrow": incompatible_llm, "ref": ref,
            **user_files(tmp_path), "tmp": tmp_path, "inputs": inputs}


def forbid_model_load(monkeypatch) -> None:
    """Refusals must come before the model loads: loading fails the test."""
    from qwen_tts_ext.synthesis.engine import Synthesizer

    def load(*args, **kwargs):
        raise AssertionError("the TTS model was loaded before the input was checked")

    monkeypatch.setattr(Synthesizer, "load", load)


@pytest.fixture()
def no_model_load(monkeypatch):
    forbid_model_load(monkeypatch)


def ok(w, *extra):
    """A valid command line (tiny Base model, reference clip, LLM, a new report folder) changed by ``extra``:
    a flag of the valid line given again replaces its value, anything else is added."""
    base = {"--model": w["tts"], "--llm": w["llm"], "--ref-audio": w["ref"], "--out-dir": w["tmp"] / "report",
            "--alphas": "0,0.05"}
    rest, i = [], 0
    while i < len(extra):
        if extra[i] in base:
            base[extra[i]] = extra[i + 1]
            i += 2
        else:
            rest.append(extra[i])
            i += 1
    return [x for pair in base.items() for x in pair] + rest


def _cuda_device() -> str:
    import torch

    return f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda:0"


CASES = {
    # name: (argv builder, needle)
    "out_dir_is_user_folder": (lambda w: ok(w, "--out-dir", w["folder"]), "was not written by `qwen-tts-ext evaluate`"),
    "overwrite_user_folder": (lambda w: ok(w, "--out-dir", w["folder"], "--overwrite"), "was not written by"),
    "out_dir_is_a_file": (lambda w: ok(w, "--out-dir", w["file"]), "is an existing file"),
    "out_dir_under_a_file": (lambda w: ok(w, "--out-dir", w["file"] / "report"), "is a file, so nothing can be created"),
    "out_dir_is_the_model": (lambda w: ok(w, "--out-dir", w["tts"], "--overwrite"), "is the --model checkpoint itself"),
    "model_is_an_llm": (lambda w: ok(w, "--model", w["llm"]), "is a Qwen3 LLM, not a Qwen3-TTS checkpoint"),
    "model_missing": (lambda w: ok(w, "--model", w["tmp"] / "nope"), "no such folder"),
    "model_is_user_folder": (lambda w: ok(w, "--model", w["folder"]), "no config.json"),
    "no_model": (lambda w: ["--llm", w["llm"], "--out-dir", w["tmp"] / "report"], "no model: pass --model"),
    "llm_is_a_tts_checkpoint": (lambda w: ok(w, "--llm", w["cv"]), "not an LLM"),
    "llm_incompatible": (lambda w: ok(w, "--llm", w["narrow"]), "intermediate_size 128 (TTS talker) vs 96 (LLM)"),
    "llm_missing": (lambda w: ok(w, "--llm", w["tmp"] / "no-llm"), "no such folder"),
    "alphas_need_llm": (lambda w: ["--model", w["tts"], "--ref-audio", w["ref"], "--alphas", "0,0.03"], "need --llm"),
    "misspelled_key": (lambda w: ok(w, "alhpas=0"), "did you mean 'alphas'"),
    "misspelled_short_key": (lambda w: ok(w, "cap_margn=0.5"), "did you mean 'cap_margin'"),
    "short_key_and_flag_disagree": (lambda w: ok(w, "--seed", "3", "seed=4"), "disagree; give synthesis.seed once"),
    "bad_alpha_list": (lambda w: ok(w, "--alphas", "0,abc"), "alphas[1]: expected a number (a share like 0.03, or 3%), got 'abc'"),
    "alpha_out_of_range": (lambda w: ok(w, "--alphas", "0,1.5"),
                           "alphas[1]: 1.5 is outside [0, 1]; did you mean 1.5% (0.015)?"),
    "flag_and_override_disagree": (lambda w: ok(w, "--seed", "3", "synthesis.seed=4"), "disagree"),
    "greedy_and_sampling_disagree": (lambda w: ok(w, "--greedy", "synthesis.do_sample=true"), "disagree"),
    "missing_sentences_file": (lambda w: ok(w, "--sentences-file", w["tmp"] / "sentences.txt"),
                               "sentences.txt does not exist"),
    "empty_sentences_file": (lambda w: ok(w, "--sentences-file", w["inputs"] / "empty.txt"), "has no sentences"),
    "bad_script_tags": (lambda w: ok(w, "--script", "[Sad Bye."), "script:"),
    "device_without_cuda": (lambda w: ok(w, "--device", _cuda_device()), "--device cuda"),
    "unknown_flag": (lambda w: ok(w, "--alpahs", "0"), "did you mean --alphas"),
    "stray_word": (lambda w: ok(w, "please"), "unexpected argument 'please'"),
    "negative_tolerance": (lambda w: ok(w, "--stop-tolerance", "-0.1"), "tolerances.stop must be >= 0"),
    "speaker_encoder_not_base": (lambda w: ok(w, "--speaker-encoder", w["cv"]), "needs a base checkpoint"),
    "unknown_judge": (lambda w: ok(w, "--judges", "speaker,dnsmso"), "unknown judge 'dnsmso' (did you mean 'dnsmos'?)"),
    "asr_missing": (lambda w: ok(w, "--asr", w["tmp"] / "whisper"), "--asr"),
    "asr_not_a_model": (lambda w: ok(w, "--asr", w["folder"]), "not a transformers model folder"),
    "ref_audio_missing": (lambda w: ok(w, "--ref-audio", w["tmp"] / "none.wav"), "reference audio"),
    "base_without_voice": (lambda w: ["--model", w["tts"], "--alphas", "0", "--out-dir", w["tmp"] / "r"],
                           "a Base checkpoint needs a voice"),
    "unknown_speaker": (lambda w: ["--model", w["cv"], "--speaker", "bob", "--alphas", "0", "--out-dir", w["tmp"] / "r"],
                        "unknown speaker 'bob'"),
    "unsupported_language": (lambda w: ok(w, "--language", "klingon"), "unsupported language 'klingon'"),
    "missing_config_file": (lambda w: ok(w, "--config", w["tmp"] / "none.yaml"), "does not exist"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_evaluate_refuses(case, world, capsys, no_model_load):
    from qwen_tts_ext.evaluation.cli import main

    build, needle = CASES[case]
    line = refuse(main, build(world), needle, [world["tmp"], world["tts"], world["llm"], world["cv"]], capsys)
    if case.startswith("out_dir_is_user_folder"):
        assert (world["folder"] / "keep.txt").read_text() == "do not lose me"
    assert "Traceback" not in line


def test_every_problem_is_reported_at_once(world, capsys):
    from qwen_tts_ext.evaluation.cli import main

    rc = main(["--model", str(world["tts"]), "alhpas=0", "--alphas", "0,2", "--stop-tolerance", "-1",
               "--sentences-file", str(world["tmp"] / "none.txt"), "bogus=1"])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 5, err
    assert all(ln.startswith("error: ") for ln in lines)
    for needle in ("'alhpas'", "'bogus'", "2 is outside [0, 1]", "tolerances.stop", "none.txt does not exist"):
        assert needle in err


def test_flags_and_short_keys_map_to_the_groups(tmp_path):
    """Flags keep their names; the flat keys of before the groups still work, on the line and in a file."""
    from qwen_tts_ext.evaluation.cli import COMMAND

    cfg = COMMAND.parse(["--model", "m", "--seed", "3", "--greedy", "--alphas", "0,0.01", "--speaker", "alice",
                         "--stop-tolerance", "0.1", "--device", "cpu", "cap_margin=1.5"])
    assert (cfg.runtime.model, cfg.runtime.device, cfg.voice.speaker) == ("m", "cpu", "alice")
    assert (cfg.synthesis.seed, cfg.synthesis.do_sample, cfg.synthesis.cap_margin) == (3, False, 1.5)
    assert cfg.alphas == [0.0, 0.01] and cfg.tolerances.stop == 0.1
    old = tmp_path / "sweep.yaml"
    old.write_text("model: m\nseed: 5\nspeaker: bob\nmin_stop_rate: 0.5\nalphas: [0, 0.02]\n")
    cfg = COMMAND.parse(["--config", str(old), "synthesis.language=english"])
    assert (cfg.runtime.model, cfg.synthesis.seed, cfg.voice.speaker) == ("m", 5, "bob")
    assert cfg.tolerances.min_stop_rate == 0.5 and cfg.alphas == [0.0, 0.02]
    assert cfg.synthesis.language == "english"


# ----------------------------------------------------------------------------- the report folder


def _sweep(w, out, *extra):
    from qwen_tts_ext.evaluation.cli import main

    return main([str(a) for a in ["--model", w["tts"], "--ref-audio", w["ref"], "--out-dir", out, *FAST, *extra]])


def test_report_folder_is_ours_and_replaced_only_with_overwrite(world, capsys):
    from qwen_tts_ext.evaluation.cli import main
    from qwen_tts_ext.outputs import MARKER, owner

    out = world["tmp"] / "report"
    assert _sweep(world, out) == 0, capsys.readouterr().err
    cap = capsys.readouterr()
    assert owner(out) == "evaluate" and (out / MARKER).is_file()
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "sweep.json", "sweep.md", "sweep.png"]
    assert cap.out.strip().splitlines()[-1] == f"wrote {out / 'sweep.md'}, sweep.json, sweep.png"
    assert "| alpha |" in cap.out and "recommended alpha:" in cap.out  # results on stdout
    assert "| alpha |" not in cap.err

    # our own report, without --overwrite: refused before any work, nothing touched
    with pytest.MonkeyPatch.context() as mp:
        forbid_model_load(mp)
        refuse(main, ["--model", world["tts"], "--ref-audio", world["ref"], "--out-dir", out, *FAST],
               "pass --overwrite", [world["tmp"]], capsys)

    # with --overwrite: replaced as a whole, no temp folders left beside it
    (out / "stale.txt").write_text("from the previous report")
    assert _sweep(world, out, "--seed", "7", "--overwrite") == 0, capsys.readouterr().err
    assert not (out / "stale.txt").exists()
    assert json.loads((out / "sweep.json").read_text())["settings"]["seed"] == 7
    assert owner(out) == "evaluate"
    assert sorted(p.name for p in world["tmp"].iterdir() if p.name.startswith(".")) == []


def test_report_of_an_older_version_counts_as_ours(world, capsys, no_model_load):
    """Reports written before the marker existed (sweep.json + sweep.md) are replaced only with --overwrite."""
    from qwen_tts_ext.evaluation.cli import main

    old = world["tmp"] / "old-report"
    old.mkdir()
    for name in ("sweep.json", "sweep.md", "sweep.png"):
        (old / name).write_text("old")
    refuse(main, ["--model", world["tts"], "--ref-audio", world["ref"], "--out-dir", old, *FAST],
           "holds a previous `evaluate` output; pass --overwrite", [world["tmp"]], capsys)


def test_a_failed_sweep_leaves_no_report_and_no_temp_folder(world, capsys, monkeypatch):
    import qwen_tts_ext.evaluation.sweep as sweep

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep, "run_sweep", boom)
    out = world["tmp"] / "report"
    assert _sweep(world, out) == 130
    assert not out.exists()
    assert [p.name for p in world["tmp"].iterdir() if p.name.startswith(".")] == []
