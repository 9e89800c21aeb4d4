"""design-voice resumes rendering: takes live in a work folder beside --output until the run completes.

A stand-in designer (speech-like synthetic voice, one per seed; it counts its calls) replaces the model, so
the test measures what is rendered again, not how a tiny model sounds.
"""

from __future__ import annotations

import json

import numpy as np
import pytest


class CountingDesigner:
    """``generate_voice_design`` as the stock API, speaking a synthetic voice whose pitch follows the seed."""

    def __init__(self):
        self.calls = 0

    def generate_voice_design(self, text, instruct, language, max_new_tokens, **kwargs):
        import torch

        from qwen_tts_ext.testing.speech import synthetic_voice

        self.calls += 1
        f0 = 110.0 + (torch.initial_seed() % 7)
        return [synthetic_voice(text, sample_rate=24000, f0=f0, seed=0).astype(np.float32)], 24000


@pytest.mark.slow
def test_failed_run_keeps_its_takes_and_a_rerun_renders_only_what_changed(tiny_base, tmp_path, monkeypatch, capsys):
    from qwen_tts_ext.design import render
    from qwen_tts_ext.design.cli import main
    from qwen_tts_ext.design.pipeline import work_dir

    designer_dir = tmp_path / "vd"
    designer_dir.mkdir()
    (designer_dir / "config.json").write_text(json.dumps({"model_type": "qwen3_tts", "tts_model_type": "voice_design"}))
    fake = CountingDesigner()
    monkeypatch.setattr(render, "load_designer", lambda *a, **k: fake)
    out = tmp_path / "out"
    work = work_dir(out)

    def run(description, *extra):
        argv = ["--designer", designer_dir, "--model", tiny_base, "--description", description, "--name", "synth",
                "--output", out, "--num-sentences", "2", "--takes", "2", "--quiet", "report.sentences=0",
                "filter.judges=[]", "--sft-recipe", "configs/sft_tiny.yaml", "sft.train.max_steps=2",
                "sft.eval.judges=[]", *extra]
        fake.calls = 0
        return main([str(a) for a in argv])

    assert run("A calm voice.", "filter.min_kept=100") == 2  # stops after judging: nothing published
    assert "stay in" in capsys.readouterr().err and not out.exists()
    assert fake.calls == 4 and len(list((work / "takes").glob("*.wav"))) == 4
    # a crash in the middle of a take leaves no record for it: only that take is rendered again
    (work / "takes" / "s001-t1.json").unlink()
    assert run("A calm voice.", "filter.min_kept=100") == 2 and fake.calls == 1
    assert "resuming: 3 take(s)" in capsys.readouterr().err
    # another description shapes every take: all rendered again
    assert run("A bright voice.", "filter.min_kept=100") == 2 and fake.calls == 4
    # the same settings with a filter that passes: nothing rendered, the takes move into the output
    assert run("A bright voice.", "filter.min_kept=2") == 0 and fake.calls == 0
    assert not work.exists()
    takes = [json.loads(ln) for ln in (out / "takes" / "takes.jsonl").read_text().splitlines()]
    assert len(takes) == 4 and all((out / t["audio"]).is_file() for t in takes)
    assert json.loads((out / "design.json").read_text())["description"] == "A bright voice."
    assert (out / "run" / "export" / "config.json").is_file()


def test_a_foreign_folder_where_the_work_folder_goes_is_refused(tmp_path, tiny_base, capsys):
    from qwen_tts_ext.design.cli import main
    from qwen_tts_ext.design.pipeline import work_dir
    from tests._cli_contract import refuse

    designer_dir = tmp_path / "vd"
    designer_dir.mkdir()
    (designer_dir / "config.json").write_text(json.dumps({"model_type": "qwen3_tts", "tts_model_type": "voice_design"}))
    out = tmp_path / "out"
    work_dir(out).mkdir()
    (work_dir(out) / "mine.txt").write_text("not yours")
    argv = ["--designer", designer_dir, "--model", tiny_base, "--description", "x", "--name", "x", "--output", out]
    refuse(main, argv, "is in the way", [tmp_path], capsys)
