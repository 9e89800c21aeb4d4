"""``qwen-tts-ext score``: inputs (folders, sidecars, manifests), rows, summary, the three report files, streams.

Most tests run the command over espeak-ng clips with a stand-in judge registry (tests/_score_helpers.py,
numpy only) so they test the command, not the judges; the ``real`` tests at the end run the installed
judges end to end.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from _score_helpers import SENTENCES, espeak_clips, install_registry
from qwen_tts_ext.testing.speech import espeak_available

pytestmark = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")


def score_main(*argv) -> int:
    from qwen_tts_ext.evaluation.score_cli import main

    return main([str(a) for a in argv])


@pytest.fixture()
def stub(monkeypatch):
    return install_registry(monkeypatch)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Three espeak clips with NAME.txt, one of our synthesis WAVs with its sidecar, one broken file."""
    folder = tmp_path_factory.mktemp("score") / "clips"
    espeak_clips(folder, 3)
    from qwen_tts_ext.testing.speech import espeak_to_wav

    sub = folder / "synth"
    espeak_to_wav("Don't wake him. Why would you do that?", sub / "ours.wav", voice="en-us+f3")
    (sub / "ours.json").write_text(json.dumps({
        "written_by": "qwen-tts-ext synthesize", "text": "[Whispering] Don't wake him. [Angry] Why would you do that?",
        "language": "english", "audio": "ours.wav", "sample_rate": 24000, "all_stopped_by_eos": False,
        "segments": [{"text": "Don't wake him.", "frames": 30, "frame_cap": 80, "stopped_by_eos": True},
                     {"text": "Why would you do that?", "frames": 90, "frame_cap": 90, "stopped_by_eos": False}],
    }), encoding="utf-8")
    (folder / "broken.wav").write_bytes(b"RIFF this is not a wav file at all")
    (folder / ".hidden.wav").write_bytes(b"never listed")
    return folder


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_folder_writes_three_files_rows_summary_and_marker(clips, stub, tmp_path, capsys):
    from qwen_tts_ext.outputs import MARKER, owner

    out = tmp_path / "report"
    ref = clips / "clip_000.wav"
    assert score_main("--audio", clips, "--ref-audio", ref, "--out-dir", out) == 0, capsys.readouterr().err
    cap = capsys.readouterr()
    assert owner(out) == "score"
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, "scores.csv", "scores.json", "scores.md"])

    # stdout: the summary table and the wrote line, nothing else
    lines = cap.out.strip().splitlines()
    assert lines[0].startswith("| metric | better | mean | std | min | max | n |")
    assert all(ln.startswith("|") for ln in lines[:-1])
    assert lines[-1] == f"wrote {out / 'scores.md'}, scores.json, scores.csv"
    assert "| spk_sim | ↑ higher |" in cap.out and "| speaking_rate | ◎ target |" in cap.out
    # stderr: the skipped judges (one line each, with the install line) and the unreadable clip
    assert "note: dnsmos not installed: pip install speechmos==0.0.1.1" in cap.err
    assert "1 of 5 clip(s) could not be scored" in cap.err and "| metric |" not in cap.err

    report = json.loads((out / "scores.json").read_text())
    ids = [r["id"] for r in report["rows"]]
    assert ids == ["broken.wav", "clip_000.wav", "clip_001.wav", "clip_002.wav", "synth/ours.wav"]  # sorted, no hidden
    rows = {r["id"]: r for r in report["rows"]}
    assert rows["broken.wav"]["status"] == "unreadable" and rows["broken.wav"]["mos_distill"] is None
    assert rows["clip_001.wav"]["status"] == "ok" and rows["clip_001.wav"]["text"] == SENTENCES[1]
    assert rows["clip_000.wav"]["spk_sim"] == pytest.approx(1.0, abs=1e-5)  # the reference itself
    assert 0 < rows["clip_001.wav"]["spk_sim"] < 1
    ours = rows["synth/ours.wav"]
    assert ours["text"] == "Don't wake him. Why would you do that?"  # the sidecar's segments, without the tags
    assert ours["language"] == "english" and ours["stopped_by_eos"] == 0  # the sidecar's meta reaches the judges
    assert rows["clip_001.wav"]["stopped_by_eos"] is None
    assert ours["seconds"] > 1

    s = report["summary"]["mos_distill"]
    vals = [r["mos_distill"] for r in report["rows"] if r["mos_distill"] is not None]
    assert s["n"] == 4 and s["mean"] == pytest.approx(sum(vals) / 4)
    assert s["min"] == pytest.approx(min(vals)) and s["max"] == pytest.approx(max(vals))
    assert [j["name"] for j in report["judges"]["ran"]] == ["speaker", "distillmos", "timing"]
    skipped = {j["name"]: j["note"] for j in report["judges"]["skipped"]}
    assert "pip install speechmos" in skipped["dnsmos"] and "pip install pocketsphinx" in skipped["asr"]
    assert report["metrics"]["spk_sim"]["direction"] == "higher"
    assert report["settings"]["clips"] == 5 and "NAME.txt" in report["settings"]["text_source"]
    t = report["timing"]
    assert t["clips"] == 4 and t["clips_per_second"] > 0 and set(t["per_judge_seconds"]) == {"speaker", "distillmos",
                                                                                             "timing"}

    table = read_csv(out / "scores.csv")
    assert [r["id"] for r in table] == ids
    assert list(table[0])[:8] == ["id", "path", "seconds", "language", "speaker", "text", "status", "message"]
    assert {"spk_sim", "mos_distill", "speech_seconds", "speaking_rate", "stopped_by_eos"} <= set(table[0])
    assert table[0]["status"] == "unreadable" and table[0]["mos_distill"] == ""

    md = (out / "scores.md").read_text()
    assert "## Summary" in md and "## Clips" in md and "| broken.wav |" in md and "skipped: dnsmos not installed" in md
    assert "↑ higher is better" in md


def test_texts_file_and_one_text(stub, tmp_path, capsys):
    folder = tmp_path / "clips"
    espeak_clips(folder, 2, transcripts=False)
    (tmp_path / "t.txt").write_text("first line\nsecond line\n\n")
    assert score_main("--audio", folder, "--texts", tmp_path / "t.txt", "--out-dir", tmp_path / "a",
                      "--judges", "timing", "--quiet") == 0, capsys.readouterr().err
    rows = json.loads((tmp_path / "a" / "scores.json").read_text())["rows"]
    assert [r["text"] for r in rows] == ["first line", "second line"]
    assert score_main("--audio", folder, "--text", "Same  for\tall.", "--out-dir", tmp_path / "b",
                      "--judges", "timing", "--quiet") == 0
    report = json.loads((tmp_path / "b" / "scores.json").read_text())
    assert [r["text"] for r in report["rows"]] == ["Same for all."] * 2
    assert [j["name"] for j in report["judges"]["ran"]] == ["timing"] and report["judges"]["skipped"] == []
    err = capsys.readouterr().err
    assert "score:" not in err  # --quiet: no progress bar
    # no transcript at all: text-based metrics are empty, not made up
    assert score_main("--audio", folder, "--out-dir", tmp_path / "c", "--judges", "timing", "--quiet") == 0
    rows = json.loads((tmp_path / "c" / "scores.json").read_text())["rows"]
    assert all(r["text"] is None and r["speaking_rate"] is None and r["speech_seconds"] > 0 for r in rows)


def test_manifest_with_per_row_reference_and_language(stub, tmp_path, capsys):
    wavs = espeak_clips(tmp_path / "wavs", 3)
    (tmp_path / "bad_ref.wav").write_bytes(b"not audio")
    manifest = tmp_path / "eval.csv"
    manifest.write_text("audio,text,ref_audio,speaker,language\n"
                        f"wavs/{wavs[0].name},{SENTENCES[0]},wavs/{wavs[0].name},bob,en\n"
                        f"wavs/{wavs[1].name},{SENTENCES[1]},,alice,klingon\n"
                        f"wavs/{wavs[2].name},{SENTENCES[2]},bad_ref.wav,carol,\n"
                        f"wavs/missing.wav,Nothing here.,,dave,en\n")
    out = tmp_path / "r"
    assert score_main("--audio", manifest, "--out-dir", out, "--ref-audio", wavs[2], "--quiet") == 0, \
        capsys.readouterr().err
    rows = json.loads((out / "scores.json").read_text())["rows"]
    assert [r["id"] for r in rows] == [f"wavs/{w.name}" for w in wavs] + ["wavs/missing.wav"]
    assert [r["speaker"] for r in rows] == ["bob", "alice", "carol", "dave"]
    assert rows[0]["language"] == "english"
    assert rows[0]["spk_sim"] == pytest.approx(1.0, abs=1e-5)  # the row's own reference (itself), not --ref-audio
    assert 0 < rows[1]["spk_sim"] < 1  # no ref_audio in the row: --ref-audio (clip 2)
    assert rows[1]["language"] is None and "klingon" in rows[1]["message"]
    assert rows[2]["status"] == "ok" and rows[2]["spk_sim"] is None and "ref_audio unreadable" in rows[2]["message"]
    assert rows[2]["mos_distill"] is not None
    assert rows[3]["status"] == "missing_file" and rows[3]["mos_distill"] is None


def test_manifest_jsonl_and_a_single_file(stub, tmp_path, capsys):
    wavs = espeak_clips(tmp_path / "w", 2)
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"audio": str(wavs[0]), "text": "Hello."}) + "\nnot json\n"
                 + json.dumps({"audio": str(wavs[1]), "text": "Hi."}) + "\n")
    assert score_main("--audio", m, "--out-dir", tmp_path / "a", "--judges", "timing", "--quiet") == 0
    rows = json.loads((tmp_path / "a" / "scores.json").read_text())["rows"]
    assert [r["status"] for r in rows] == ["ok", "bad_row", "ok"]
    assert score_main("--audio", wavs[1], "--out-dir", tmp_path / "b", "--judges", "timing", "--quiet") == 0
    rows = json.loads((tmp_path / "b" / "scores.json").read_text())["rows"]
    assert [(r["id"], r["text"]) for r in rows] == [(wavs[1].name, SENTENCES[1])]


def test_a_judge_that_breaks_on_one_clip_does_not_stop_the_run(stub, tmp_path, capsys):
    import numpy as np
    import soundfile as sf

    folder = tmp_path / "c"
    espeak_clips(folder, 2)
    sf.write(folder / "blip.wav", np.zeros(1600, dtype=np.float32), 16000)
    assert score_main("--audio", folder, "--out-dir", tmp_path / "r", "--judges", "broken,timing", "--quiet") == 0
    rows = {r["id"]: r for r in json.loads((tmp_path / "r" / "scores.json").read_text())["rows"]}
    assert rows["blip.wav"]["broken_metric"] is None and "judge broken failed: too short" in rows["blip.wav"]["message"]
    assert rows["blip.wav"]["speech_seconds"] == pytest.approx(0.1)
    assert rows["clip_000.wav"]["broken_metric"] == 1.0


def test_judges_side_by_side_give_the_same_rows(clips, stub, tmp_path, capsys):
    ref = clips / "clip_000.wav"
    for jobs in (1, 3):
        assert score_main("--audio", clips, "--ref-audio", ref, "--out-dir", tmp_path / f"j{jobs}", "--jobs", jobs,
                          "--quiet") == 0
    one, three = (json.loads((tmp_path / f"j{j}" / "scores.json").read_text()) for j in (1, 3))
    assert one["rows"] == three["rows"]
    assert (one["timing"]["jobs"], three["timing"]["jobs"]) == (1, 3)
    assert list(one["rows"][0]) == list(three["rows"][0])  # the columns keep the judges' order


def test_options_reach_the_registry(tmp_path, monkeypatch, capsys):
    from _score_helpers import fake_checkpoint

    tiny_base = fake_checkpoint(tmp_path / "base", "base")
    loads: list = []
    install_registry(monkeypatch, loads=loads)
    folder = tmp_path / "c"
    espeak_clips(folder, 1)
    assert score_main("--audio", folder, "--out-dir", tmp_path / "r", "--speaker-encoder", tiny_base,
                      "--judges", "timing", "--ref-audio", folder / "clip_000.wav", "--quiet") == 0
    names, options = loads[-1]
    assert names == ["timing", "speaker_ecapa"] and options == {"checkpoint": str(Path(tiny_base).resolve())}
    rows = json.loads((tmp_path / "r" / "scores.json").read_text())["rows"]
    assert rows[0]["spk_sim_ecapa"] == 0.5
    # the default (every installed judge) is the registry's default: names=None
    assert score_main("--audio", folder, "--out-dir", tmp_path / "r2", "--quiet") == 0
    assert loads[-1] == (None, {})


def test_overwrite_replaces_only_our_report(stub, tmp_path, capsys):
    folder = tmp_path / "c"
    espeak_clips(folder, 1)
    out = tmp_path / "r"
    assert score_main("--audio", folder, "--out-dir", out, "--judges", "timing", "--quiet") == 0
    (out / "stale.txt").write_text("old")
    assert score_main("--audio", folder, "--out-dir", out, "--judges", "timing", "--quiet", "--overwrite") == 0
    assert not (out / "stale.txt").exists() and (out / "scores.csv").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_summary_statistics():
    from qwen_tts_ext.evaluation.score_report import summarize

    rows = [{"a": 1.0, "b": None}, {"a": 3.0, "b": 2.0}, {"a": 2.0, "b": float("nan")}]
    s = summarize(rows, ["a", "b"])
    assert s["a"] == {"mean": 2.0, "std": 1.0, "min": 1.0, "max": 3.0, "n": 3}
    assert s["b"] == {"mean": 2.0, "std": 0.0, "min": 2.0, "max": 2.0, "n": 1}
    assert summarize([{"c": None}], ["c"])["c"]["n"] == 0 and math.isfinite(s["a"]["std"])


def test_md_lists_at_most_50_clips(stub, tmp_path, capsys):
    import numpy as np
    import soundfile as sf

    folder = tmp_path / "many"
    folder.mkdir()
    tone = (0.1 * np.sin(np.arange(8000) / 5)).astype(np.float32)
    for i in range(53):
        sf.write(folder / f"t{i:02d}.wav", tone, 16000)
    assert score_main("--audio", folder, "--out-dir", tmp_path / "r", "--judges", "distillmos", "--quiet") == 0
    md = (tmp_path / "r" / "scores.md").read_text()
    assert "first 50 of 53" in md and "| t49.wav |" in md and "| t50.wav |" not in md
    assert len(read_csv(tmp_path / "r" / "scores.csv")) == 53


# ----------------------------------------------------------------------------- the real judges


@pytest.fixture(scope="module")
def two_clips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("score-real") / "clips"
    espeak_clips(folder, 2, voices=("en-us+m3", "en-us+f2"))
    return folder


def test_real_judges_end_to_end(two_clips, tmp_path, capsys):
    """The installed judges (default: every one whose package imports) through the command."""
    from qwen_tts_ext.evaluation.judges import metric_info

    out = tmp_path / "r"
    rc = score_main("--audio", two_clips, "--ref-audio", two_clips / "clip_000.wav", "--out-dir", out, "--quiet")
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    report = json.loads((out / "scores.json").read_text())
    ran = {j["name"] for j in report["judges"]["ran"]}
    assert {"speaker", "distillmos", "dnsmos", "asr", "timing"} <= ran
    skipped = {j["name"]: j["note"] for j in report["judges"]["skipped"]}
    assert "--speaker-encoder" in skipped["speaker_ecapa"]  # needs a Base checkpoint: one line says so
    info = metric_info()
    for name, meta in report["metrics"].items():
        assert meta["direction"] == info[name].direction
    for m in ("spk_sim", "mos_distill", "dnsmos_ovrl", "wer", "speaking_rate", "truncated"):
        assert f"| {m} | " in cap.out
    rows = report["rows"]
    assert rows[0]["spk_sim"] == pytest.approx(1.0, abs=1e-3) and rows[1]["spk_sim"] < 0.99  # the reference itself
    assert all(1 <= r["mos_distill"] <= 5 and 1 <= r["dnsmos_ovrl"] <= 5 and r["wer"] >= 0 for r in rows)
    assert all(r["truncated"] == 0 and r["stopped_by_eos"] is None for r in rows)
    assert set(report["timing"]["per_judge_seconds"]) == ran


def test_real_missing_judge_is_skipped_with_its_install_line(two_clips, tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "distillmos", None)  # as if `pip install distillmos` had never run
    out = tmp_path / "r"
    assert score_main("--audio", two_clips, "--judges", "distillmos,timing", "--out-dir", out, "--quiet") == 0
    cap = capsys.readouterr()
    assert "note: distillmos not installed: pip install distillmos" in cap.err
    report = json.loads((out / "scores.json").read_text())
    assert [j["name"] for j in report["judges"]["ran"]] == ["timing"]
    assert report["judges"]["skipped"][0]["name"] == "distillmos"
    assert "pip install distillmos" in report["judges"]["skipped"][0]["note"]
    assert "mos_distill" not in report["rows"][0] and "| mos_distill |" not in cap.out
    assert "skipped: distillmos not installed" in (out / "scores.md").read_text()
