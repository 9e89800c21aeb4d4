"""`qwen-tts-ext prepare` on bad input: exit 2, one line, nothing touched (see tests/_cli_contract.py);
and the new behaviours: the output path alone on stdout, the output marker, legacy outputs, --merge."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from tests._cli_contract import refuse, user_files


def _tone(path, seconds=1.0):
    t = np.arange(int(24000 * seconds)) / 24000
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 24000)


@pytest.fixture()
def world(tiny_base, tiny_llm, tiny_custom_voice, tmp_path):
    """A manifest with its audio folder, two slice-like folders, an old `prepare` output holding a clip."""
    corpus = tmp_path / "corpus"
    (corpus / "wavs").mkdir(parents=True)
    _tone(corpus / "wavs" / "a.wav")
    manifest = corpus / "manifest.jsonl"
    manifest.write_text(json.dumps({"audio": "wavs/a.wav", "text": "A tone.", "speaker": "alice"}) + "\n")
    parts = []
    for i in range(2):
        part = tmp_path / f"part{i}"
        part.mkdir()
        (part / "prepare_config.json").write_text("{}")
        parts.append(part)
    ours = tmp_path / "ours"  # a previous `prepare` output (marker) whose clip a new manifest reads
    ours.mkdir()
    (ours / ".qwen-tts-ext.json").write_text(json.dumps({"command": "prepare"}))
    _tone(ours / "row0000000.flac")
    reuse = tmp_path / "reuse.jsonl"
    reuse.write_text(json.dumps({"audio": str(ours / "row0000000.flac"), "text": "Again."}) + "\n")
    return {"base": tiny_base, "llm": tiny_llm, "cv": tiny_custom_voice, "manifest": manifest, "corpus": corpus,
            "parts": parts, "ours": ours, "reuse": reuse, **user_files(tmp_path), "tmp": tmp_path}


def _args(w, **kw):
    """A valid command line, with some flags replaced (value None drops the flag)."""
    args = {"--manifest": w["manifest"], "--model": w["base"], "--output": w["tmp"] / "out"}
    args.update(kw)
    return [str(x) for k, v in args.items() if v is not None for x in (k, v)]


CASES = {
    # name: (argv builder, needle)
    "output_is_a_file": (lambda w: _args(w, **{"--output": w["file"]}), "is an existing file"),
    "output_is_user_folder": (lambda w: _args(w, **{"--output": w["folder"]}), "not written by `qwen-tts-ext prepare`"),
    "overwrite_user_folder": (lambda w: _args(w, **{"--output": w["folder"]}) + ["--overwrite"], "not written by"),
    "output_under_a_file": (lambda w: _args(w, **{"--output": w["file"] / "out"}), "is a file"),
    "output_is_the_audio_folder": (lambda w: _args(w, **{"--output": w["corpus"] / "wavs"}), "holds input audio"),
    "output_is_the_manifest_folder": (lambda w: _args(w, **{"--output": w["corpus"]}), "contains the --manifest"),
    "overwrite_own_output_holding_input_audio": (
        lambda w: _args(w, **{"--manifest": w["reuse"], "--output": w["ours"]}) + ["--overwrite"], "holds input audio"),
    "output_is_the_model": (lambda w: _args(w, **{"--output": w["base"]}), "is the --model checkpoint itself"),
    "model_is_an_llm": (lambda w: _args(w, **{"--model": w["llm"]}), "is a Qwen3 LLM, not a Qwen3-TTS checkpoint"),
    "model_missing": (lambda w: _args(w, **{"--model": w["tmp"] / "nope"}), "no such folder"),
    "model_without_config": (lambda w: _args(w, **{"--model": w["folder"]}), "no config.json"),
    "no_model": (lambda w: _args(w, **{"--model": None}), "pass --model"),
    "custom_voice_without_speaker_encoder": (lambda w: _args(w, **{"--model": w["cv"]}), "--speaker-encoder BASE"),
    "speaker_encoder_is_an_llm": (lambda w: _args(w, **{"--speaker-encoder": w["llm"]}), "is a Qwen3 LLM"),
    "tokenizer_is_not_a_tokenizer": (lambda w: _args(w, **{"--tokenizer": w["base"]}), "12 Hz tokenizer"),
    "manifest_missing": (lambda w: _args(w, **{"--manifest": w["tmp"] / "nope.jsonl"}), "does not exist"),
    "manifest_missing_column": (lambda w: _args(w, **{"--text-column": "transcript"}), "no column 'transcript'"),
    "misspelled_key": (lambda w: _args(w) + ["max_second=10"], "did you mean 'max_seconds'"),
    "bad_type": (lambda w: _args(w) + ["max_seconds=abc"], "max_seconds: expected a number"),
    "min_not_below_max": (lambda w: _args(w) + ["min_seconds=5", "max_seconds=5"], "min_seconds < max_seconds"),
    "unknown_flag": (lambda w: _args(w) + ["--max-second", "10"], "did you mean --max-seconds"),
    "flag_and_override_disagree": (lambda w: _args(w) + ["--trim", "vad", "trim=energy"], "disagree"),
    "bad_trim": (lambda w: _args(w) + ["--trim", "loud"], "trim"),
    "shard_out_of_range": (lambda w: _args(w) + ["--shard", "4/4"], "0 <= i < n"),
    "shard_not_i_of_n": (lambda w: _args(w) + ["--shard", "half"], "must look like i/n"),
    "bad_device": (lambda w: _args(w) + ["--device", "gpu0"], "is not a device"),
    "stray_word": (lambda w: _args(w) + ["please"], "unexpected argument"),
    "merge_into_a_part": (lambda w: ["--merge", *w["parts"], "--output", w["parts"][0]], "is one of the --merge folders"),
    "merge_inside_a_part": (lambda w: ["--merge", *w["parts"], "--output", w["parts"][1] / "all"], "is inside the --merge"),
    "merge_into_user_folder": (lambda w: ["--merge", *w["parts"], "--output", w["folder"], "--overwrite"],
                               "not written by"),
    "merge_needs_two": (lambda w: ["--merge", w["parts"][0], "--output", w["tmp"] / "all"], "at least two"),
    "merge_without_output": (lambda w: ["--merge", *w["parts"]], "needs --output"),
    "merge_without_folders": (lambda w: ["--merge", "--output", w["tmp"] / "all"], "--merge needs one or more"),
    "merge_of_non_slices": (lambda w: ["--merge", *w["parts"], "--output", w["tmp"] / "all"],
                            "not a readable prepare_config.json"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_prepare_refuses(case, world, capsys):
    from qwen_tts_ext.prep.cli import main

    build, needle = CASES[case]
    refuse(main, build(world), needle, [world["tmp"], world["base"], world["llm"], world["cv"]], capsys)


def test_refusals_load_no_model(world, capsys, monkeypatch):
    """Every refusal above comes before a model (tokenizer or speaker encoder) is loaded."""
    from qwen_tts_ext.prep import encode, speakers
    from qwen_tts_ext.prep.cli import main

    def boom(*a, **k):
        raise AssertionError("a model was loaded before the input checks finished")

    monkeypatch.setattr(encode, "load_tokenizer", boom)
    monkeypatch.setattr(speakers.SpeakerEncoder, "from_checkpoint", classmethod(boom))
    for case, (build, _) in CASES.items():
        assert main([str(a) for a in build(world)]) == 2, case
    capsys.readouterr()


def test_every_problem_is_reported_at_once(world, capsys):
    from qwen_tts_ext.prep.cli import main

    rc = main(_args(world) + ["max_second=10", "max_seconds=abc", "--trim", "loud"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(lines) == 3 and all(ln.startswith("error: ") for ln in lines), lines


def test_merge_takes_many_folders_repeated_or_as_a_list():
    from qwen_tts_ext.errors import UserError
    from qwen_tts_ext.prep.cli import COMMAND

    assert COMMAND.parse(["--merge", "a", "b c", "--output", "o"]).merge == ["a", "b c"]
    assert COMMAND.parse(["--merge", "a", "--quiet", "--merge", "b"]).merge == ["a", "b"]
    assert COMMAND.parse(["--merge", "a", "b", "overwrite=true"]).merge == ["a", "b"]  # an override ends the list
    assert COMMAND.parse(["--merge=a", "--merge=b"]).merge == ["a", "b"]
    assert COMMAND.parse(["merge=[a, b]"]).merge == ["a", "b"]
    assert COMMAND.parse(["--output", "o", "--shard", "1/2"]).merge == []
    with pytest.raises(UserError, match="disagree"):
        COMMAND.parse(["--merge", "a", "b", "merge=[a, c]"])
    with pytest.raises(UserError, match="needs one or more values"):
        COMMAND.parse(["--output", "o", "--merge"])


def test_results_on_stdout_marker_and_reruns(espeak_corpus, tiny_base, tmp_path, capsys):
    """stdout is the output path alone (logs on stderr); the output carries the `prepare` marker; a rerun
    of the same job leaves it as it is, also when it predates the marker (legacy); a dry run refuses it."""
    from qwen_tts_ext.outputs import MARKER, owner
    from qwen_tts_ext.prep.cli import main

    out = tmp_path / "prepared"
    argv = ["--manifest", str(espeak_corpus), "--model", str(tiny_base), "--output", str(out)]
    assert main(argv) == 0
    cap = capsys.readouterr()
    assert cap.out == f"{out}\n"
    assert "prepared" in cap.err  # the summary goes to stderr
    assert owner(out) == "prepare" and json.loads((out / MARKER).read_text())["command"] == "prepare"
    assert not any(p.name.startswith(".prepared.") for p in tmp_path.iterdir())  # no temp or work folder left

    (out / MARKER).unlink()  # an output written before markers existed
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(argv + ["--quiet"]) == 0
    cap = capsys.readouterr()
    assert cap.out == f"{out}\n" and cap.err == ""
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # same job: nothing redone

    line = refuse(main, argv + ["--dry-run"], "give the dry run another --output", [tmp_path], capsys)
    assert str(out) in line
