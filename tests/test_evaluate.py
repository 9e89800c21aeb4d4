"""Alpha sweep: the recommender on synthetic metrics, metrics, report files, and a tiny end-to-end sweep."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from qwen_tts_ext.errors import UserError
from qwen_tts_ext.evaluation.metrics import cer, cosine, edit_distance, identity_drift, normalize_transcript
from qwen_tts_ext.evaluation.recommend import Tolerances, recommend_alpha
from qwen_tts_ext.evaluation.report import markdown_table, write_report


def rows(stops, sims=None, cers=None, alphas=(0.0, 0.01, 0.03, 0.05, 0.10)):
    out = []
    for i, a in enumerate(alphas):
        r = {"alpha": a, "stop_rate": stops[i]}
        r["similarity"] = sims[i] if sims else None
        r["cer"] = cers[i] if cers else None
        out.append(r)
    return out


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    from _synthesis_helpers import single_thread

    with single_thread():
        yield


# ----------------------------------------------------------------------------- recommender


def test_recommends_largest_alpha_within_tolerance_darwin_shape():
    """The model-card picture: fine up to 5 %, the stop signal breaks at 10 %."""
    rec = recommend_alpha(rows([1.0, 1.0, 0.98, 0.96, 0.30], [0.90, 0.90, 0.89, 0.87, 0.80]))
    assert rec.alpha == 0.05 and rec.status == "ok"
    assert rec.ok(0.03) and not rec.ok(0.10)
    assert "stop rate 0.30 < 1.00 - 0.05" in rec.verdicts[0.10][0]


def test_similarity_drop_limits_the_alpha():
    rec = recommend_alpha(rows([1.0] * 5, [0.90, 0.89, 0.86, 0.84, 0.80]))
    assert rec.alpha == 0.03
    assert any("similarity 0.840 < 0.900 - 0.050" in r for r in rec.verdicts[0.05])


def test_tolerances_are_configurable():
    data = rows([1.0] * 5, [0.90, 0.89, 0.86, 0.84, 0.80])
    assert recommend_alpha(data, Tolerances(similarity=0.2)).alpha == 0.10
    assert recommend_alpha(data, Tolerances(similarity=0.0)).alpha == 0.0


def test_a_pass_after_a_failure_is_not_recommended():
    rec = recommend_alpha(rows([1.0, 1.0, 0.6, 1.0, 1.0], [0.9] * 5))
    assert rec.alpha == 0.01
    assert any("0.03 fails but larger alpha(s) 0.05, 0.1 pass" in n for n in rec.notes)


def test_input_order_does_not_matter():
    data = rows([1.0, 1.0, 0.98, 0.96, 0.30], [0.90, 0.90, 0.89, 0.87, 0.80])
    random.Random(0).shuffle(data)
    assert recommend_alpha(data).alpha == 0.05


def test_cer_counts_only_when_measured():
    stops, sims = [1.0] * 5, [0.9] * 5
    assert recommend_alpha(rows(stops, sims, [0.05, 0.05, 0.07, 0.20, 0.5])).alpha == 0.03
    assert recommend_alpha(rows(stops, sims)).alpha == 0.10


def test_without_similarity_the_stop_rate_decides_and_it_is_noted():
    rec = recommend_alpha(rows([1.0, 1.0, 1.0, 0.5, 0.0]))
    assert rec.alpha == 0.03
    assert any("similarity was not measured" in n for n in rec.notes)


def test_independent_spk_sim_is_judged_instead_of_ecapa_and_noted():
    """The ECAPA similarity holds (the model's own encoder), the independent spk_sim drops beyond tolerance at 0.05."""
    data = rows([1.0] * 5, [0.90, 0.90, 0.90, 0.90, 0.90])
    for r, s in zip(data, [0.85, 0.84, 0.83, 0.78, 0.70]):
        r["spk_sim"] = s
    rec = recommend_alpha(data)
    assert rec.alpha == 0.03
    assert rec.verdicts[0.05] == ["spk_sim 0.780 < 0.850 - 0.050"]
    assert any("independent spk_sim" in n and "ECAPA" in n for n in rec.notes)
    # without spk_sim at alpha 0 (too-short clips), ECAPA decides as before
    for r in data:
        r["spk_sim"] = None
    assert recommend_alpha(data).alpha == 0.10


def test_unstable_baseline_recommends_no_blend():
    """Tiny random models never emit EOS: nothing can be recommended."""
    rec = recommend_alpha(rows([0.0] * 5, [0.9] * 5))
    assert rec.status == "baseline-unstable" and rec.alpha == 0.0
    assert "no blend is recommended" in rec.notes[0]


def test_absolute_minimum_stop_rate():
    rec = recommend_alpha(rows([0.85, 0.85, 0.84, 0.78, 0.5], [0.9] * 5), Tolerances(stop=0.1, min_stop_rate=0.8))
    assert rec.alpha == 0.03
    assert "minimum 0.80" in rec.verdicts[0.05][0]


def test_baseline_is_required():
    with pytest.raises(UserError, match="alpha 0"):
        recommend_alpha([{"alpha": 0.03, "stop_rate": 1.0}])
    with pytest.raises(UserError):
        recommend_alpha([])


# ----------------------------------------------------------------------------- metrics


def test_metrics():
    assert cosine(np.array([1.0, 0]), np.array([0, 2.0])) == pytest.approx(0.0)
    assert cosine(np.array([1.0, 1]), np.array([2.0, 2])) == pytest.approx(1.0)
    v = np.array([1.0, 0.0])
    assert identity_drift([v, v, v]) == pytest.approx(0.0)
    assert identity_drift([v, np.array([0.0, 1.0])]) == pytest.approx(1.0)
    assert identity_drift([v]) is None
    assert edit_distance("kitten", "sitting") == 3
    assert normalize_transcript("[Angry] Why, WHY?!  ") == "why why"
    assert cer("Hello world.", "hello world") == 0.0
    assert cer("abcd", "abxd") == pytest.approx(0.25)
    assert cer("", "") == 0.0


# ----------------------------------------------------------------------------- report files


def _report(status="ok", alpha=0.03):
    data = rows([1.0, 1.0, 0.98, 0.96, 0.30], [0.90, 0.90, 0.89, 0.87, 0.80])
    for r in data:
        r.update(cap_hits=0, duration_ratio=1.0, mean_seconds=2.0, drift=0.01, rtf=0.5, n=10)
    rec = recommend_alpha(data)
    return {
        "settings": {"model": "/x/model", "llm": "/x/llm", "voice": {"name": "alice", "kind": "speaker", "source": "t"},
                     "num_sentences": 10, "num_script_segments": 3, "seed": 0, "similarity_reference": "ref",
                     "tolerances": {"stop": 0.05, "similarity": 0.05, "cer": 0.05, "min_stop_rate": 0.8}, "asr": False},
        "rows": data,
        "recommendation": rec.as_dict(),
    }


def test_report_writes_table_json_and_plot(tmp_path):
    report = _report()
    paths = write_report(report, tmp_path / "sweep")
    md = paths["md"].read_text()
    table = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert len(table) == 2 + 5  # header, separator, one row per alpha
    assert "| 0.05 | 96% |" in md and "**recommended**" in table[5]
    assert "**Recommended alpha: 0.05**" in md
    assert "stop rate 0.30 < 1.00 - 0.05" in table[6]
    data = json.loads(paths["json"].read_text())
    assert data["recommendation"]["alpha"] == 0.05 and len(data["rows"]) == 5
    png = paths["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert (tmp_path / "sweep" / ".qwen-tts-ext.json").is_file()  # ours: a later run may replace it
    # a second report into the same folder needs overwrite; then it replaces the folder atomically
    with pytest.raises(UserError, match="pass --overwrite"):
        write_report(report, tmp_path / "sweep")
    write_report(report, tmp_path / "sweep", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep"]  # no temp folders left behind


def test_markdown_shows_na_for_unmeasured_metrics():
    table = markdown_table([{"alpha": 0.0, "stop_rate": 0.0, "similarity": None}], None, {})
    assert "n/a" in table and "recommended" not in table


# ----------------------------------------------------------------------------- end to end on tiny models

FAST = dict(cap_margin=0.5, cap_slack_seconds=0.2)


@pytest.mark.filterwarnings("ignore:alpha up to")
def test_sweep_blends_each_alpha_from_the_original_and_restores(tiny_base, tiny_llm, tmp_path):
    from qwen_tts_ext.evaluation.sweep import Embedder, run_sweep
    from qwen_tts_ext.synthesis.engine import SynthesisOptions, Synthesizer
    from _synthesis_helpers import write_reference_wav

    synth = Synthesizer.load(tiny_base)
    voice = synth.voice(ref_audio=write_reference_wav(tmp_path / "ref.wav"))
    w = synth.model.talker.model.layers[0].mlp.up_proj.weight
    original = w.detach().clone()
    seen = []
    real = synth.synthesize

    def spy(script, v, options, progress=None):
        seen.append((synth.blend.alpha, (w - original).abs().max().item()))
        return real(script, v, options, progress)

    synth.synthesize = spy
    embedder = Embedder.from_checkpoint(tiny_base)
    rows_, ref = run_sweep(synth, voice, SynthesisOptions(**FAST), alphas=[0.1, 0.03], llm=str(tiny_llm),
                           sentences=["Hello there.", "Good night."], script="[Sad] Bye. [Happy] Hi!",
                           embedder=embedder, transcribe=lambda audio, sr: "hello there", progress=False)
    assert [r.alpha for r in rows_] == [0.0, 0.03, 0.1]  # baseline added, sorted
    by_alpha = {}
    for a, diff in seen:
        by_alpha.setdefault(a, set()).add(round(diff, 6))
    assert by_alpha[0.0] == {0.0}
    # each alpha is blended from the original weights: the deviation is proportional to alpha
    (d03,), (d10,) = by_alpha[0.03], by_alpha[0.1]
    assert d03 > 0 and d10 / d03 == pytest.approx(0.1 / 0.03, rel=1e-3)
    assert torch.equal(w, original)  # restored after the sweep
    for r in rows_:
        assert r.n == 2 and r.stop_rate == 0.0 and r.cap_hits == 2  # tiny random models never emit EOS
        assert r.similarity is not None and -1 <= r.similarity <= 1
        assert r.drift is not None and r.rtf > 0
        assert len(r.script_segments) == 2
    assert rows_[0].duration_ratio == pytest.approx(1.0)
    # CER from the transcriber: "hello there" is perfect for sentence 1 and all wrong for "good night"
    assert [s["cer"] for s in rows_[0].per_sentence] == [0.0, cer("Good night.", "hello there")]
    assert rows_[0].cer == pytest.approx(cer("Good night.", "hello there") / 2) and rows_[0].cer > 0.3
    assert "| CER |" in markdown_table([r.as_dict() for r in rows_], None, {})
    assert ref == "alpha-0 outputs"


def test_evaluate_cli_writes_report(tiny_base, tiny_llm, tmp_path, capsys):
    from qwen_tts_ext.evaluation.cli import main
    from _synthesis_helpers import write_reference_wav

    ref = write_reference_wav(tmp_path / "ref.wav")
    out = tmp_path / "report"
    code = main(["--model", str(tiny_base), "--llm", str(tiny_llm), "--ref-audio", str(ref), "--alphas", "0,0.05",
                 "--out-dir", str(out), "--script", "[Sad] Bye. [Happy] Hi!", "--save-audio",
                 "sentences=[Hello there.]", "synthesis.cap_margin=0.5", "synthesis.cap_slack_seconds=0.2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert sorted(p.name for p in out.iterdir()) == [".qwen-tts-ext.json", "audio", "sweep.json", "sweep.md",
                                                     "sweep.png"]
    assert sorted(p.name for p in (out / "audio").iterdir()) == [
        "alpha0.05_s00.wav", "alpha0.05_script.wav", "alpha0_s00.wav", "alpha0_script.wav"]
    data = json.loads((out / "sweep.json").read_text())
    assert [r["alpha"] for r in data["rows"]] == [0.0, 0.05]
    for key in ("stop_rate", "duration_ratio", "similarity", "drift", "rtf", "cap_hits", "per_sentence"):
        assert key in data["rows"][0]
    # the offline judges (default set): their columns on every alpha, numbers or None (the tiny model's short
    # noise is too short for most judges); the stop flag reaches the timing judge through Clip.meta
    from qwen_tts_ext.evaluation.judges import load_judges

    ran = data["settings"]["judges"]
    assert set(ran) <= {"speaker", "distillmos", "dnsmos", "asr", "timing"} and "timing" in ran
    expected = {m.name.replace("duration_ratio", "duration_ratio_text") for j in load_judges(ran)[0] for m in j.metrics}
    for row in data["rows"]:
        assert expected <= set(row), expected - set(row)
        for key in expected:
            assert row[key] is None or isinstance(row[key], (int, float)), (key, row[key])
        assert row["stopped_by_eos"] == row["stop_rate"] == 0.0
        assert row["duration_ratio_text"] is not None and row["duration_ratio_text"] > 0
        assert "speaking_rate" in row["per_sentence"][0]
    if "speaker" in ran:
        assert all(-1 <= r["spk_sim"] <= 1 for r in data["rows"] if r["spk_sim"] is not None)
    md = (out / "sweep.md").read_text()
    assert "duration vs text ◎" in md and "truncated ↓" in md and "Offline judges" in md
    assert data["settings"]["similarity_reference"].startswith("reference clip")
    assert data["recommendation"]["status"] == "baseline-unstable"  # tiny models never stop by EOS
    assert "No blend recommended" in (out / "sweep.md").read_text()
    assert "recommended alpha: none" in captured.out
    assert captured.out.strip().splitlines()[-1] == f"wrote {out / 'sweep.md'}, sweep.json, sweep.png, audio/"
    assert "alpha sweep" not in captured.out  # progress goes to stderr


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--alphas", "0,0.03"], "need --llm"),
        (["--alphas", "0,abc"], "alphas[1]: expected a number (a share like 0.03, or 3%), got 'abc'"),
        (["--alphas", "0,1.5", "--llm", "x"], "alphas[1]: 1.5 is outside [0, 1]"),
        (["--alphas", "0", "--ref-audio", "/nope.wav"], "reference audio /nope.wav does not exist"),
        (["--alphas", "0,0.03", "--llm", "/no/such/llm"], "no such folder"),
    ],
)
def test_evaluate_cli_user_errors(tiny_base, capsys, args, fragment):
    from qwen_tts_ext.evaluation.cli import main

    assert main(["--model", str(tiny_base)] + args) == 2
    assert fragment in capsys.readouterr().err


def test_evaluate_custom_voice_with_borrowed_speaker_encoder(tiny_custom_voice, tiny_base, tmp_path, capsys):
    from qwen_tts_ext.evaluation.cli import main

    out = tmp_path / "cv-report"
    code = main(["--model", str(tiny_custom_voice), "--speaker", "vivian", "--speaker-encoder", str(tiny_base),
                 "--alphas", "0", "--out-dir", str(out), "script=", "sentences=[Hello there., Good night.]", "--judges", "",
                 "synthesis.cap_margin=0.5", "synthesis.cap_slack_seconds=0.2"])
    assert code == 0, capsys.readouterr().err
    data = json.loads((out / "sweep.json").read_text())
    (row,) = data["rows"]
    assert row["n"] == 2 and row["similarity"] is not None and row["drift"] is None
    assert data["settings"]["similarity_reference"] == "alpha-0 outputs"
    assert data["settings"]["voice"]["id"] == "speaker:vivian"
    # judges: [] gives the sweep's own columns only
    from qwen_tts_ext.evaluation.report import JUDGE_COLUMNS

    assert data["settings"]["judges"] == []
    assert not {k for k, _, _ in JUDGE_COLUMNS} & set(row) and "wer" not in row and "speaking_rate" not in row
    assert set(row) == {"alpha", "n", "stop_rate", "cap_hits", "mean_seconds", "duration_ratio", "similarity",
                        "similarity_min", "drift", "rtf", "cer", "per_sentence", "script_segments"}
    assert "Offline judges" not in (out / "sweep.md").read_text()


def test_evaluate_base_speakers_file_voice_is_the_similarity_reference(tiny_base, tmp_path):
    from safetensors.torch import save_file

    from qwen_tts_ext.evaluation.cli import main

    spk = tmp_path / "speakers.safetensors"
    save_file({"alice": torch.randn(64, generator=torch.Generator().manual_seed(0))}, str(spk))
    out = tmp_path / "r"
    assert main(["--model", str(tiny_base), "--speaker", "alice", "--speakers-file", str(spk), "--alphas", "0",
                 "--out-dir", str(out), "script=", "judges=[timing]", "sentences=[Hello there.]", "synthesis.cap_margin=0.5",
                 "synthesis.cap_slack_seconds=0.2"]) == 0
    data = json.loads((out / "sweep.json").read_text())
    assert data["settings"]["similarity_reference"].startswith("x-vector of alice")
    assert data["rows"][0]["similarity"] is not None
    assert data["settings"]["judges"] == ["timing"] and "speaking_rate" in data["rows"][0]


def test_a_missing_judge_is_skipped_with_its_install_line(monkeypatch, tmp_path):
    """No distillmos: the sweep still loads the other judges; the note is the registry's one install line."""
    from types import SimpleNamespace

    from qwen_tts_ext.evaluation.config import EvaluateConfig
    from qwen_tts_ext.evaluation.pipeline import load_sweep_judges

    monkeypatch.setitem(__import__("sys").modules, "distillmos", None)
    cfg = EvaluateConfig()
    notes: list[str] = []
    judges, ref = load_sweep_judges(cfg, SimpleNamespace(judges=["speaker", "distillmos", "timing"], asr_dir=None,
                                                         encoder_dir=None), notes)
    assert [j.name for j in judges] == ["timing"] and ref is None
    assert any(n.startswith("distillmos not installed: pip install distillmos") for n in notes), notes
    assert any("spk_sim" in n and "--ref-audio" in n for n in notes), notes
