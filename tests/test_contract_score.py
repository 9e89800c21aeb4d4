"""`qwen-tts-ext score` on bad input: exit 2, one line, nothing touched, no judge loaded (see tests/_cli_contract.py).

Every refusal comes before a judge loads: the real registry's loaders are replaced by a function that fails
the test (judge names and the did-you-mean come from the real ``JUDGES``).
"""

from __future__ import annotations

import json

import pytest

from _score_helpers import espeak_clips, fake_checkpoint, install_registry
from tests._cli_contract import refuse, user_files
from qwen_tts_ext.testing.speech import espeak_available

pytestmark = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")


def _forbid(*args, **kwargs):
    raise AssertionError("a judge was loaded before the input was checked")


@pytest.fixture()
def no_judge_load(monkeypatch):
    import qwen_tts_ext.evaluation.judges as registry

    monkeypatch.setattr(registry, "load_judge", _forbid)
    monkeypatch.setattr(registry, "load_judges", _forbid)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("score-inputs") / "clips"
    espeak_clips(folder, 2)
    return folder


@pytest.fixture()
def world(clips, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "empty").mkdir()
    (inputs / "one_line.txt").write_text("only one line\n")
    (inputs / "garbage.wav").write_bytes(b"RIFF not really")
    (inputs / "no_text.csv").write_text(f"audio,speaker\n{clips / 'clip_000.wav'},bob\n")
    (inputs / "m.jsonl").write_text(json.dumps({"audio": str(clips / "clip_000.wav"), "text": "Hi."}) + "\n")
    (inputs / "words.docx").write_bytes(b"PK")
    llm = fake_checkpoint(inputs / "Qwen3-1.7B", "llm")
    cv = fake_checkpoint(inputs / "cv", "custom_voice")
    base = fake_checkpoint(inputs / "base", "base")
    previous = tmp_path / "previous"
    previous.mkdir()
    (previous / "scores.json").write_text("{}")
    (previous / ".qwen-tts-ext.json").write_text(json.dumps({"command": "score"}))
    return {"clips": clips, "ref": clips / "clip_001.wav", "inputs": inputs, "llm": llm, "cv": cv, "base": base,
            "previous": previous, "tmp": tmp_path, **user_files(tmp_path)}


def ok(w, *extra):
    """A valid command line (the espeak folder, a reference, a new report folder) changed by ``extra``: a flag
    of the valid line given again replaces its value, anything else is added."""
    base = {"--audio": w["clips"], "--ref-audio": w["ref"], "--out-dir": w["tmp"] / "report"}
    rest, i = [], 0
    while i < len(extra):
        if extra[i] in base:
            base[extra[i]] = extra[i + 1]
            i += 2
        else:
            rest.append(extra[i])
            i += 1
    return [x for pair in base.items() for x in pair if x is not None] + rest


def _cuda_device() -> str:
    import torch

    return f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda:0"


CASES = {
    # name: (argv builder, needle)
    "no_audio": (lambda w: ["--out-dir", w["tmp"] / "r"], "no audio: pass --audio"),
    "audio_missing": (lambda w: ok(w, "--audio", w["tmp"] / "nowhere"), "nowhere does not exist"),
    "audio_empty_folder": (lambda w: ok(w, "--audio", w["inputs"] / "empty"), "holds no audio files"),
    "audio_unknown_file_type": (lambda w: ok(w, "--audio", w["inputs"] / "words.docx"), "unknown file type '.docx'"),
    "manifest_without_text_column": (lambda w: ok(w, "--audio", w["inputs"] / "no_text.csv"), "has no column 'text'"),
    "text_with_a_manifest": (lambda w: ok(w, "--audio", w["inputs"] / "m.jsonl", "--text", "Hi."), "drop --text"),
    "out_dir_is_user_folder": (lambda w: ok(w, "--out-dir", w["folder"]), "was not written by `qwen-tts-ext score`"),
    "overwrite_user_folder": (lambda w: ok(w, "--out-dir", w["folder"], "--overwrite"), "was not written by"),
    "out_dir_is_a_file": (lambda w: ok(w, "--out-dir", w["file"]), "is an existing file"),
    "out_dir_under_a_file": (lambda w: ok(w, "--out-dir", w["file"] / "report"),
                             "is a file, so nothing can be created"),
    "out_dir_is_the_audio_folder": (lambda w: ok(w, "--out-dir", w["clips"]), "was not written by"),
    "previous_report_without_overwrite": (lambda w: ok(w, "--out-dir", w["previous"]), "pass --overwrite"),
    "unknown_judge": (lambda w: ok(w, "--judges", "speeker,timing"),
                      "unknown judge 'speeker' (did you mean 'speaker'?)"),
    "ecapa_without_encoder": (lambda w: ok(w, "--judges", "speaker_ecapa"), "needs --speaker-encoder"),
    "ref_audio_missing": (lambda w: ok(w, "--ref-audio", w["tmp"] / "none.wav"), "--ref-audio"),
    "ref_audio_unreadable": (lambda w: ok(w, "--ref-audio", w["inputs"] / "garbage.wav"), "cannot be used"),
    "asr_missing": (lambda w: ok(w, "--asr", w["tmp"] / "whisper"), "--asr"),
    "asr_not_a_model": (lambda w: ok(w, "--asr", w["folder"]), "not a transformers model folder"),
    "speaker_encoder_is_an_llm": (lambda w: ok(w, "--speaker-encoder", w["llm"]),
                                  "is a Qwen3 LLM, not a Qwen3-TTS checkpoint"),
    "speaker_encoder_not_base": (lambda w: ok(w, "--speaker-encoder", w["cv"]), "needs a base checkpoint"),
    "speaker_encoder_missing": (lambda w: ok(w, "--speaker-encoder", w["tmp"] / "no-ckpt"), "--speaker-encoder"),
    "texts_wrong_count": (lambda w: ok(w, "--texts", w["inputs"] / "one_line.txt"), "has 1 line(s) but --audio"),
    "texts_missing": (lambda w: ok(w, "--texts", w["tmp"] / "t.txt"), "t.txt does not exist"),
    "text_and_texts": (lambda w: ok(w, "--text", "Hi.", "--texts", w["inputs"] / "one_line.txt"), "give one"),
    "unknown_language": (lambda w: ok(w, "--language", "klingon"), "--language 'klingon' is not one of"),
    "misspelled_key": (lambda w: ok(w, "ref_audoi=x.wav"), "did you mean 'ref_audio'"),
    "flag_and_override_disagree": (lambda w: ok(w, "--language", "english", "language=german"), "disagree"),
    "unknown_flag": (lambda w: ok(w, "--judge", "timing"), "did you mean --judges"),
    "stray_word": (lambda w: ok(w, "please"), "unexpected argument 'please'"),
    "device_without_cuda": (lambda w: ok(w, "--device", _cuda_device()), "--device cuda"),
    "negative_threads": (lambda w: ok(w, "--threads", "-1"), "threads must be >= 0"),
    "negative_jobs": (lambda w: ok(w, "--jobs", "-2"), "jobs must be >= 0"),
    "missing_config_file": (lambda w: ok(w, "--config", w["tmp"] / "none.yaml"), "does not exist"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_score_refuses(case, world, capsys, no_judge_load):
    from qwen_tts_ext.evaluation.score_cli import main

    build, needle = CASES[case]
    refuse(main, build(world), needle, [world["tmp"], world["clips"]], capsys)
    assert (world["folder"] / "keep.txt").read_text() == "do not lose me"


def test_every_problem_is_reported_at_once(world, capsys, no_judge_load):
    from qwen_tts_ext.evaluation.score_cli import main

    rc = main([str(a) for a in ["--audio", world["tmp"] / "nowhere", "--ref-audio", world["tmp"] / "none.wav",
                                "--judges", "distilmos", "--out-dir", world["file"], "--language", "klingon"]])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 5, err
    assert all(ln.startswith("error: ") for ln in lines)
    for needle in ("nowhere does not exist", "none.wav does not exist", "'distilmos'", "is an existing file",
                   "'klingon'"):
        assert needle in err


def test_help_and_errors_answer_without_torch():
    """--help and input errors answer before torch is imported (a fresh interpreter)."""
    import subprocess
    import sys

    code = ("import sys; from qwen_tts_ext.evaluation.score_cli import main; "
            "rc = main(['--audio', '/nonexistent/x']); assert rc == 2; "
            "assert 'torch' not in sys.modules, 'torch imported'; main(['--help'])")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "--audio" in res.stdout


def test_the_suite_entry_point_lists_score():
    from qwen_tts_ext.cli import COMMANDS, _optional_commands

    _optional_commands()
    assert COMMANDS["score"][0] == "qwen_tts_ext.evaluation.score_cli"


def test_speaker_encoder_and_asr_are_accepted(world, monkeypatch, capsys):
    """The valid counterparts of the refusals: a Base checkpoint and an ASR folder pass the checks."""
    loads: list = []
    install_registry(monkeypatch, loads=loads)
    asr = world["inputs"] / "whisper"
    asr.mkdir()
    (asr / "config.json").write_text("{}")
    from qwen_tts_ext.evaluation.score_cli import main

    rc = main([str(a) for a in ok(world, "--speaker-encoder", world["base"], "--asr", asr, "--judges", "timing",
                                  "--quiet")])
    assert rc == 0, capsys.readouterr().err
    names, options = loads[-1]
    assert names == ["timing", "speaker_ecapa", "asr"]
    assert options == {"checkpoint": str(world["base"].resolve()), "asr": str(asr.resolve())}
