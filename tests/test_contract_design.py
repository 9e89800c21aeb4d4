"""`qwen-tts-ext design-voice` on bad input: exit 2, one line, nothing touched (see tests/_cli_contract.py).

Every refusal here happens in the checks, before the designer loads or a take is rendered.
"""

from __future__ import annotations

import pytest

from tests._cli_contract import refuse, user_files


@pytest.fixture(scope="module")
def tiny_vd(tmp_path_factory):
    from qwen_tts_ext.testing.voice_design import build_tiny_voice_design

    return build_tiny_voice_design(tmp_path_factory.mktemp("ckpt") / "tiny-vd", seed=0)


@pytest.fixture()
def world(tiny_vd, tiny_base, tiny_custom_voice, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n")
    extra = tmp_path / "extra.jsonl"
    extra.write_text('{"audio": "gone.wav", "text": "Hello."}\n')
    return {"vd": tiny_vd, "base": tiny_base, "cv": tiny_custom_voice, "empty": empty, "extra": extra,
            **user_files(tmp_path), "tmp": tmp_path}


def ok(w, *extra):
    """A complete, valid command line (refusals add one mistake to it)."""
    return ["--designer", w["vd"], "--model", w["base"], "--description", "A deep, raspy voice.", "--name", "cowboy",
            "--output", w["tmp"] / "o", *extra]


CASES = {
    "designer_is_base": (lambda w: [*ok(w)[:1], w["base"], *ok(w)[2:]], "needs a voice_design checkpoint"),
    "flag_and_override_disagree": (lambda w: ok(w, "render.takes=2", "--takes", "3"), "disagree"),
    "model_is_designer": (lambda w: [*ok(w)[:3], w["vd"], *ok(w)[4:]], "needs a base or custom_voice"),
    "custom_voice_without_encoder": (lambda w: [*ok(w)[:3], w["cv"], *ok(w)[4:]], "--speaker-encoder"),
    "name_is_builtin": (lambda w: [*ok(w)[:3], w["cv"], *ok(w)[4:7], "Vivian", *ok(w)[8:], "--speaker-encoder",
                                   w["base"]], "built-in speaker"),
    "encoder_not_base": (lambda w: ok(w, "--speaker-encoder", w["cv"]), "this needs a base checkpoint"),
    "bad_name": (lambda w: [*ok(w)[:7], "cow boy!", *ok(w)[8:]], "--name 'cow boy!'"),
    "missing_designer": (lambda w: ok(w)[2:], "missing --designer"),
    "missing_designer_folder": (lambda w: [*ok(w)[:1], w["tmp"] / "nope", *ok(w)[2:]], "--designer"),
    "user_folder_as_designer": (lambda w: [*ok(w)[:1], w["folder"], *ok(w)[2:]], "no config.json"),
    "output_is_user_folder": (lambda w: [*ok(w)[:-1], w["folder"]], "was not written by `qwen-tts-ext design-voice`"),
    "output_is_a_file": (lambda w: [*ok(w)[:-1], w["file"]], "is an existing file"),
    "output_under_a_file": (lambda w: [*ok(w)[:-1], w["file"] / "x"], "is a file"),
    "output_is_the_model": (lambda w: [*ok(w)[:-1], w["base"]], "is the --model checkpoint itself"),
    "misspelled_key": (lambda w: ok(w, "filter.max_distnce=0.1"), "did you mean 'max_distance'"),
    "unknown_flag": (lambda w: ok(w, "--descripton", "x"), "did you mean --description"),
    "sft_key_misspelled": (lambda w: ok(w, "sft.train.max_step=3"), "sft: unknown config key 'train.max_step'"),
    "prepare_bad_value": (lambda w: ok(w, "prepare.trim=maybe"), "prepare: trim"),
    "unknown_judge": (lambda w: ok(w, "filter.judges=[wisper]"), "unknown judge 'wisper'"),
    "speaker_as_quality_judge": (lambda w: ok(w, "filter.judges=[speaker]"), "always uses the speaker judge"),
    "missing_sentences": (lambda w: ok(w, "--sentences", w["tmp"] / "none.txt"), "does not exist"),
    "empty_sentences": (lambda w: ok(w, "--sentences", w["empty"]), "has no sentences"),
    "unknown_language_list": (lambda w: ok(w, "--language", "klingon"),
                              "no shipped sentence list for --language 'klingon' (shipped: chinese, english"),
    "extra_take_missing_audio": (lambda w: ok(w, "render.extra_takes=" + str(w["extra"])), "'gone.wav' not found"),
    "no_takes": (lambda w: ok(w, "--takes", "0"), "render.takes must be >= 1"),
    "one_report_sentence": (lambda w: ok(w, "report.sentences=1"), "report.sentences=1"),
    "max_distance_out_of_range": (lambda w: ok(w, "filter.max_distance=0"), "filter.max_distance"),
    "missing_sft_recipe": (lambda w: ok(w, "--sft-recipe", w["tmp"] / "none.yaml"), "sft_recipe"),
    "cuda_without_gpu": (lambda w: ok(w, "--device", "cuda:7"), "cuda:7"),
    "bad_dtype": (lambda w: ok(w, "--dtype", "int8"), "dtype must be"),
    "stray_word": (lambda w: ok(w, "please"), "unexpected argument"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_design_voice_refuses(case, world, capsys):
    from qwen_tts_ext.design.cli import main

    build, needle = CASES[case]
    if case == "cuda_without_gpu":
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count() > 7:
            pytest.skip("this machine has a cuda:7")
    refuse(main, build(world), needle, [world["tmp"], world["vd"], world["base"]], capsys)


def test_every_problem_is_reported_at_once(world, capsys):
    from qwen_tts_ext.design.cli import main

    argv = [*ok(world)[:3], world["vd"], *ok(world)[4:], "sft.train.max_step=3", "filter.judges=[wisper]",
            "--sentences", world["empty"]]
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert rc == 2 and len(lines) == 4, err
    assert "needs a base or custom_voice" in err and "max_step" in err and "wisper" in err and "no sentences" in err


def test_help_and_registration(capsys):
    from qwen_tts_ext.cli import main

    assert main(["design-voice", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--designer" in out and "--description" in out and "examples:" in out and "[render.takes]" in out
    assert main(["--help"]) == 0
    assert "design-voice" in capsys.readouterr().out


def test_shipped_config_and_sentence_lists_parse():
    from qwen_tts_ext.design.cli import COMMAND
    from qwen_tts_ext.design.config import SENTENCES_DIR
    from qwen_tts_ext.design.render import read_sentences

    cfg = COMMAND.parse(["--config", "configs/design_voice.yaml", "sft.train.max_steps=600"])
    assert cfg.render.takes == 3 and cfg.filter.max_distance == 0.12 and cfg.report.emotion_tags[0] == "Whispering"
    assert cfg.overrides("sft") == ["train.max_steps=600"] and cfg.overrides("prepare") == ["trim=vad"]
    langs = sorted(p.stem for p in SENTENCES_DIR.glob("*.txt"))
    assert {"english", "german", "french", "spanish", "chinese"} <= set(langs)
    for lang in langs:
        sentences = read_sentences(SENTENCES_DIR / f"{lang}.txt")
        assert len(sentences) >= 20 and len(set(sentences)) == len(sentences), lang
