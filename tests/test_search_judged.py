"""`qwen-tts-ext search` in process with offline judges, per-projection genes and the MRI prior (tiny model,
forced EOS): the judges' numbers reach the fitness, spk_sim is measured against the alpha-0 rendering, and the
per-projection best genome is a schedule darwin_blend.py --config accepts."""

from __future__ import annotations

import json

import pytest
import yaml

from _synthesis_helpers import force_eos_after, single_thread, write_reference_wav

pytestmark = pytest.mark.slow


@pytest.fixture()
def forced_eos(monkeypatch):
    from qwen_tts_ext.synthesis import engine

    load = engine.Synthesizer.load.__func__
    keep = []

    def patched(cls, *a, **k):
        s = load(cls, *a, **k)
        cm = force_eos_after(s.model, 20)  # 1.6 s: long enough for resemblyzer and silero-vad
        cm.__enter__()
        keep.append(cm)
        return s

    monkeypatch.setattr(engine.Synthesizer, "load", classmethod(patched))
    yield
    for cm in keep:
        cm.__exit__(None, None, None)


def test_judged_search_with_mri_prior_and_per_projection_genes(tiny_base, tiny_llm, tmp_path, forced_eos, capsys):
    from qwen_tts_ext.blend.cli import main as blend_main
    from qwen_tts_ext.blend.search_cli import main

    ref = write_reference_wav(tmp_path / "ref.wav")
    out = tmp_path / "run"
    with single_thread():
        rc = main(["--model", str(tiny_base), "--llm", str(tiny_llm), "--ref-audio", str(ref), "--output", str(out),
                   "--budget", "4", "--population", "4", "--per-projection", "--mri-prior", "--judges", "speaker,timing",
                   "sentences=[Hello there how are you]", "emotions=[happy, sad]", "contrast_sentence=Hi there.",
                   "fitness.weights={spk_sim: 1.0, contrast: 1.0, duration: 1.0, speech_seconds: 0.5}"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    report = json.loads((out / "search.json").read_text())
    base = report["baseline"]["metrics"]
    assert base["spk_sim"] == pytest.approx(1.0, abs=1e-4)  # alpha 0 against itself
    assert base["speech_seconds"] is not None and "speech_seconds" in report["settings"]["weights"]
    assert report["settings"]["genes"] == 2 * 3 + 1  # 2 layers x gate/up/down + trust
    assert len(report["mri_prior"]) == 2 and all(0 <= v <= 0.08 for row in report["mri_prior"] for v in row)
    flat = report["flat"]
    assert flat["trust"] == 0.0 and set(flat["scores"]) == {"spk_sim", "contrast", "duration", "speech_seconds"}
    for r in report["evaluations"]:
        assert r["metrics"]["spk_sim"] is not None and 0 <= r["trust"] <= 1
        prior = report["mri_prior"]
        for i, p in enumerate(("gate", "up", "down")):
            for layer in range(2):
                gene = r["genes"][layer * 3 + i]
                assert r["ratios"][p][layer] == pytest.approx(r["trust"] * prior[layer][i] + (1 - r["trust"]) * gene)
        if r["trust"] < 1:  # per-projection genes: a {gate, up, down} schedule
            assert set(r["schedule"]) == {"gate", "up", "down"}
    genome = yaml.safe_load((out / "best_genome.yaml").read_text())
    assert genome["alpha_per_layer"] == report["best"]["schedule"]
    assert blend_main(["--config", str(out / "best_genome.yaml"), "--dry-run"]) == 0
    plan = capsys.readouterr().out
    best = report["best"]["ratios"]
    assert f"{best['down'][1]:7.4f}" in plan
