"""`qwen-tts-ext search` on bad input: exit 2, one line, nothing touched (see tests/_cli_contract.py)."""

from __future__ import annotations

import json

import pytest

from tests._cli_contract import refuse, user_files


@pytest.fixture()
def world(tiny_base, tiny_llm, tmp_path):
    from _synthesis_helpers import write_reference_wav

    w = {"tts": tiny_base, "llm": tiny_llm, **user_files(tmp_path), "tmp": tmp_path}
    w["ref"] = write_reference_wav(tmp_path / "ref.wav")
    prev = tmp_path / "prev-search"  # a previous search's run folder
    prev.mkdir()
    (prev / ".qwen-tts-ext.json").write_text(json.dumps({"command": "search"}))
    (prev / "journal.jsonl").write_text(json.dumps({"kind": "header", "format": 1, "settings": {}}) + "\n")
    w["prev"] = prev
    empty = tmp_path / "empty-search"
    empty.mkdir()
    (empty / ".qwen-tts-ext.json").write_text(json.dumps({"command": "search"}))
    w["no_journal"] = empty
    return w


def base(w, out=None):
    return ["--model", w["tts"], "--llm", w["llm"], "--ref-audio", w["ref"], "--output", out or (w["tmp"] / "o")]


CASES = {
    "output_is_user_folder": (lambda w: base(w, w["folder"]), "was not written by `qwen-tts-ext search`"),
    "overwrite_user_folder": (lambda w: base(w, w["folder"]) + ["--overwrite"], "was not written by"),
    "output_is_a_file": (lambda w: base(w, w["file"]), "is an existing file"),
    "output_under_a_file": (lambda w: base(w, w["file"] / "x"), "is a file"),
    "output_is_the_model": (lambda w: base(w, w["tts"]), "is the --model checkpoint itself"),
    "previous_search_without_resume": (lambda w: base(w, w["prev"]), "pass --resume to continue"),
    "resume_without_journal": (lambda w: base(w, w["no_journal"]) + ["--resume"], "holds no search journal"),
    "resume_and_overwrite": (lambda w: base(w) + ["--resume", "--overwrite"], "give one"),
    "blend_into_user_folder": (lambda w: base(w) + ["--blend", w["folder"]], "was not written by `qwen-tts-ext blend`"),
    "llm_as_model": (lambda w: ["--model", w["llm"], "--llm", w["llm"], "--output", w["tmp"] / "o"], "is a Qwen3 LLM"),
    "model_as_llm": (lambda w: ["--model", w["tts"], "--llm", w["tts"], "--ref-audio", w["ref"], "--output",
                                w["tmp"] / "o"], "not an LLM"),
    "missing_model": (lambda w: ["--model", w["tmp"] / "nope", "--llm", w["llm"], "--output", w["tmp"] / "o"],
                      "no such folder"),
    "no_llm": (lambda w: ["--model", w["tts"], "--output", w["tmp"] / "o"], "no LLM"),
    "no_output": (lambda w: ["--model", w["tts"], "--llm", w["llm"]], "pass --output"),
    "no_voice_for_base": (lambda w: ["--model", w["tts"], "--llm", w["llm"], "--output", w["tmp"] / "o"],
                          "needs a voice"),
    "frozen_layer_missing": (lambda w: base(w) + ["--freeze-layers", "0-5"], "do not exist"),
    "too_few_genes": (lambda w: base(w) + ["--freeze-layers", "0"], "CMA-ES needs at least 2"),
    "alpha_max_out_of_range": (lambda w: base(w) + ["--alpha-max", "1.5"], "alpha_max"),
    "start_above_alpha_max": (lambda w: base(w) + ["--alpha-max", "0.02"], "genome.start"),
    "budget_below_population": (lambda w: base(w) + ["--budget", "3", "--population", "8"], "at least one generation"),
    "population_one": (lambda w: base(w) + ["--population", "1", "--budget", "4"], "population must be >= 2"),
    "unknown_weight": (lambda w: base(w) + ["fitness.weights={spk_simm: 1}"], "did you mean 'spk_sim'"),
    "unknown_judge": (lambda w: base(w) + ["--judges", "speakr"], "did you mean 'speaker'"),
    "unbalanced_tag_in_sentence": (lambda w: base(w) + ["sentences=[[Happy hello]"], "fitness.sentences"),
    "missing_asr_folder": (lambda w: base(w) + ["fitness.asr=" + str(w["tmp"] / "whisper")], "no such folder"),
    "one_emotion": (lambda w: base(w) + ["emotions=[happy]"], "at least two tags"),
    "ambiguous_seed": (lambda w: base(w) + ["seed=3"], "unknown config key 'seed'"),
    "misspelled_key": (lambda w: base(w) + ["budgt=10"], "did you mean 'budget'"),
    "unknown_flag": (lambda w: base(w) + ["--budgett", "10"], "did you mean --budget"),
    "flag_and_override_disagree": (lambda w: base(w) + ["--budget", "16", "optimizer.budget=24"], "disagree"),
    "stray_word": (lambda w: base(w) + ["please"], "unexpected argument"),
    "missing_config_file": (lambda w: ["--config", w["tmp"] / "none.yaml"], "does not exist"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_search_refuses(case, world, capsys):
    from qwen_tts_ext.blend.search_cli import main

    build, needle = CASES[case]
    refuse(main, build(world), needle, [world["tmp"], world["tts"], world["llm"]], capsys)


def test_every_problem_is_reported_at_once(world, capsys):
    from qwen_tts_ext.blend.search_cli import main

    rc = main(["--model", str(world["tts"]), "--alpha-max", "2", "--population", "1", "bogus=1",
               "fitness.seeds=[]"])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 4, err
    assert "'bogus'" in err and "alpha_max" in err and "population" in err and "seeds" in err


def test_help_explains_with_examples(capsys):
    from qwen_tts_ext.blend.search_cli import main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for needle in ("CMA-ES", "--resume", "best_genome.yaml", "examples:", "[optimizer.budget]", "frame cap"):
        assert needle in out, needle


def test_registered_as_a_subcommand_and_the_config_file_parses(capsys):
    from qwen_tts_ext.blend.search_cli import COMMAND
    from qwen_tts_ext.cli import main

    assert main(["search", "--help"]) == 0
    assert "genome search" in capsys.readouterr().out
    cfg = COMMAND.parse(["--config", "configs/search.yaml", "budget=16", "--population", "4", "synthesis.seed=2",
                         "top_k=30", "--seed", "5"])
    assert cfg.optimizer.budget == 16 and cfg.optimizer.population == 4 and cfg.synthesis.seed == 2
    assert cfg.synthesis.top_k == 30 and cfg.optimizer.seed == 5  # short keys go to the one group that has them
    assert cfg.genome.alpha_max == 0.08 and cfg.fitness.weights["contrast"] == 1.0
