"""design-voice end to end on tiny checkpoints: render -> judge -> prep -> SFT -> export -> tagged synthesis.

The tiny random designer speaks noise and need not change its voice with the description, so a second
description cannot plant off-voice takes here. Planted takes come through ``render.extra_takes``
instead: espeak-ng clips of another voice, which truly differ from the designer's audio. The filter must
drop exactly those (off_voice) and keep the designer's takes (with a wider identity threshold than the
shipped one: random-noise takes differ from each other more than one speaker's takes do). The designer
is made to stop by EOS after 24 frames (tests/_synthesis_helpers.force_eos_after), so the stop gate stays on.

What the tiny run can show: every stage runs through the suite's own code; resemblyzer separates the
planted voice from the designer's noise; the numbers of the consistency report come from the judge.
What it cannot show: that a described voice is locked, or that (b) is tighter than (a) on real speech.
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests._synthesis_helpers import force_eos_after, single_thread


@pytest.fixture(scope="module")
def tiny_vd(tmp_path_factory):
    from qwen_tts_ext.testing.voice_design import build_tiny_voice_design

    return build_tiny_voice_design(tmp_path_factory.mktemp("ckpt") / "tiny-vd", seed=0)


@pytest.fixture()
def planted(tmp_path):
    """Three espeak-ng clips of a high female voice (en-us+f4, pitch 80) as extra takes."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is needed for real off-voice takes")
    from qwen_tts_ext.testing.speech import espeak_to_wav

    folder = tmp_path / "planted"
    folder.mkdir()
    texts = ["Glue the sheet to the dark blue background.", "Rice is often served in round bowls.",
             "The birch canoe slid on the smooth planks."]
    for i, text in enumerate(texts):
        espeak_to_wav(text, folder / f"p{i}.wav", voice="en-us+f4", pitch=80)
    (folder / "extra.jsonl").write_text("".join(json.dumps({"audio": f"p{i}.wav", "text": t}) + "\n"
                                                for i, t in enumerate(texts)))
    return folder / "extra.jsonl"


@pytest.mark.slow
def test_design_voice_end_to_end_drops_planted_takes_and_locks_the_rest(tiny_vd, tiny_custom_voice, tiny_base,
                                                                          planted, tmp_path, monkeypatch, capsys):
    from qwen_tts import Qwen3TTSModel

    from qwen_tts_ext.design import render
    from qwen_tts_ext.design.cli import main

    load = render.load_designer

    def load_forced(*a, **k):
        tts = load(*a, **k)
        tts.forced_eos = force_eos_after(tts.model, 24)  # kept on the model: a collected context would undo it
        tts.forced_eos.__enter__()
        return tts

    monkeypatch.setattr(render, "load_designer", load_forced)
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("The birch canoe slid on the smooth planks.\nGlue the sheet to the dark blue background.\n"
                         "Rice is often served in round bowls.\nFour hours of steady work faced us.\n"
                         "A rod is used to catch pink salmon.\n")
    out = tmp_path / "cowboy"
    argv = ["--designer", tiny_vd, "--model", tiny_custom_voice, "--speaker-encoder", tiny_base,
            "--description", "A deep, raspy voice of a tired cowboy.", "--name", "Cowboy", "--output", out,
            "--sentences", sentences, "--num-sentences", "3", "--takes", "2", "--quiet",
            "render.max_segment_seconds=3", f"render.extra_takes={planted}",
            "filter.judges=[timing]", "filter.max_cer=null", "filter.min_kept=4",
            # random noise takes vary more than one speaker does (one measured at 0.876 to the others' centroid):
            # a wide absolute threshold (cosine 0.75) and no robust one; the planted voice sits near 0.5
            "filter.max_distance=0.25", "filter.mad_k=0",
            "--sft-recipe", "configs/sft_tiny.yaml", "sft.train.max_steps=3", "sft.eval.judges=[]",
            "report.sentences=2", "report.emotion_tags=[Angry]"]
    capsys.readouterr()
    with single_thread():
        assert main([str(a) for a in argv]) == 0
    stdout = capsys.readouterr().out.splitlines()
    assert stdout[0] == f"export: {out / 'run' / 'export'}" and stdout[-1].startswith("report: ")

    takes = [json.loads(ln) for ln in (out / "takes" / "takes.jsonl").read_text().splitlines()]
    kept = [json.loads(ln) for ln in (out / "selection" / "kept.jsonl").read_text().splitlines()]
    rejects = [json.loads(ln) for ln in (out / "selection" / "rejects.jsonl").read_text().splitlines()]
    assert len(takes) == 3 * 2 + 3 and all((out / t["audio"]).is_file() for t in takes if t["source"] == "designer")
    planted_rejects = [r for r in rejects if r["source"] == "extra"]
    assert [r["reason"] for r in planted_rejects] == ["off_voice"] * 3  # every planted take dropped, as off-voice
    others = [r for r in rejects if r["source"] != "extra"]
    assert all(r["reason"] == "no_identity" for r in others), others  # too short to embed is the only other reason
    assert {k["source"] for k in kept} == {"designer"} and len(kept) >= 4  # the rest kept
    assert all(t["stopped_by_eos"] for t in takes if t["source"] == "designer")  # the stop gate was on and passed

    # data prep and SFT: a custom_voice checkpoint with the new speaker next to the built-in ones
    stats = json.loads((out / "prepared" / "stats.json").read_text())
    assert stats["kept"] == len(kept) and list(stats["speakers"]) == ["cowboy"]
    export = out / "run" / "export"
    spk = json.loads((export / "config.json").read_text())["talker_config"]["spk_id"]
    assert {"vivian", "ryan", "cowboy"} <= set(spk)
    card = (export / "README.md").read_text()
    assert "A deep, raspy voice of a tired cowboy." in card and str(tiny_vd) in card and "max_distance 0.25" in card
    design = json.loads((export / "design.json").read_text())
    assert design["designer"] == str(tiny_vd) and design["config"]["filter"]["max_distance"] == 0.25

    # the tagged synthesis of the report, and its numbers from the judge
    report = json.loads((out / "report" / "consistency.json").read_text())
    assert len(list((out / "report" / "locked").glob("*.wav"))) == 2 * 2
    assert len(list((out / "report" / "designer").glob("*.wav"))) == 2 * 2
    for side in ("designer_redescribed", "locked_speaker"):
        assert report[side]["clips"] == 4 and report[side]["embedded"] >= 2
        assert report[side]["pairwise_mean"] is not None and 0 < report[side]["pairwise_mean"] <= 1
        assert report[side]["tagged_identical_to_untagged"] in (0, 1, 2)
    assert set(report["locked_tighter"]) == {"across_sentences_sd", "across_tags_sd", "pairwise_mean"}

    # the stock loader speaks the locked voice with an instruction
    tts = Qwen3TTSModel.from_pretrained(str(export))
    wavs, _ = tts.generate_custom_voice(text="Hello.", speaker="cowboy", instruct="Speak angrily.", max_new_tokens=6)
    assert wavs[0].size > 0

    # a second run into the same folder needs --overwrite
    assert main([str(a) for a in argv]) == 2
    assert "--overwrite" in capsys.readouterr().err
