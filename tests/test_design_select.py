"""The identity filter and the quality gates of design-voice (select.py), the sentence split and the
consistency numbers (report.py), on controlled vectors and rows: no model, no audio."""

from __future__ import annotations

import numpy as np
import pytest

from qwen_tts_ext.design.config import FilterConfig
from qwen_tts_ext.design.report import spread, verdict
from qwen_tts_ext.design.render import split_sentences
from qwen_tts_ext.design.select import identity_filter, select


def _voice(rng, centre, n, noise):
    return [centre + noise * rng.standard_normal(centre.shape) for _ in range(n)]


def _records(n):
    return [{"id": f"t{i}", "audio": f"takes/t{i}.wav", "source": "designer"} for i in range(n)]


def test_off_voice_minority_dropped_even_when_it_would_pull_a_mean_centroid():
    rng = np.random.default_rng(0)
    a, b = np.abs(rng.standard_normal(64)), np.abs(rng.standard_normal(64))
    # 8 takes of voice a, 4 planted takes of voice b (a third: a plain mean would sit between them)
    emb = _voice(rng, a, 8, 0.05) + _voice(rng, b, 4, 0.05) + [None]
    ident = identity_filter(emb, max_distance=0.12, mad_k=3.0, rounds=2)
    assert ident.off_voice[:8] == [False] * 8 and ident.off_voice[8:12] == [True] * 4
    assert ident.similarity[12] is None and ident.off_voice[12] is False
    assert float(np.dot(ident.centroid, a / np.linalg.norm(a))) > 0.99
    kept, rejects, notes = select(_records(13), [{}] * 13, ident, FilterConfig(max_cer=None))
    assert [r["id"] for r in kept] == [f"t{i}" for i in range(8)]
    assert [r["reason"] for r in rejects] == ["off_voice"] * 4 + ["no_identity"]
    # data prep's rejects format: row, path, reason, message
    assert {"row", "path", "reason", "message"} <= set(rejects[0]) and rejects[0]["row"] == 8
    assert rejects[0]["path"] == "takes/t8.wav" and "centroid" in rejects[0]["message"]


def test_robust_threshold_catches_a_close_outlier_that_the_absolute_one_keeps():
    rng = np.random.default_rng(1)
    a = np.abs(rng.standard_normal(64)) + 1.0
    emb = _voice(rng, a, 10, 0.01)
    other = a.copy()
    other[:20] *= 2.2  # a different but close voice: cosine ~0.93, above 1 - max_distance (0.88)
    emb.append(other)
    loose = identity_filter(emb, max_distance=0.12, mad_k=0.0, rounds=2)
    tight = identity_filter(emb, max_distance=0.12, mad_k=3.0, rounds=2)
    assert loose.off_voice[-1] is False and loose.similarity[-1] > 0.88
    assert tight.off_voice[-1] is True and not any(tight.off_voice[:-1])


def test_quality_gates_in_order_and_none_lets_a_take_through():
    rng = np.random.default_rng(2)
    a = np.abs(rng.standard_normal(32))
    ident = identity_filter(_voice(rng, a, 6, 0.01), 0.12, 3.0, 2)
    rows = [
        {"cer": 0.9, "mos_distill": 1.0, "truncated": 1.0, "stopped_by_eos": 0.0},  # unintelligible first
        {"cer": 0.1, "mos_distill": 1.0, "truncated": 1.0, "stopped_by_eos": 0.0},  # then low MOS
        {"cer": 0.1, "mos_distill": 3.0, "truncated": 1.0, "stopped_by_eos": 0.0},  # then truncated
        {"cer": 0.1, "mos_distill": 3.0, "truncated": 0.0, "stopped_by_eos": 0.0},  # then no EOS
        {"cer": None, "mos_distill": None, "truncated": None, "stopped_by_eos": None},  # not judged: kept
        {"cer": 0.1, "mos_distill": 3.0, "truncated": 0.0, "stopped_by_eos": 1.0},  # clean
    ]
    filt = FilterConfig(max_cer=0.35, min_mos=2.0)
    kept, rejects, notes = select(_records(6), rows, ident, filt)
    assert [r["reason"] for r in rejects] == ["unintelligible", "low_mos", "truncated", "no_eos"]
    assert [r["id"] for r in kept] == ["t4", "t5"]
    assert len(notes) == 4 and all("1 of 6 takes" in n for n in notes)
    # gates switched off keep everything that agrees with the voice
    off = FilterConfig(max_cer=None, min_mos=None, drop_truncated=False, require_eos=False)
    assert len(select(_records(6), rows, ident, off)[0]) == 6


def test_sentence_split_holds_out_the_report_sentences():
    s = [f"s{i}" for i in range(10)]
    train, report, overlap = split_sentences(s, 4, 3)
    assert train == ["s0", "s1", "s2", "s3"] and report == ["s7", "s8", "s9"] and not overlap
    train, report, overlap = split_sentences(s, 0, 0)
    assert train == s and report == [] and not overlap
    train, report, overlap = split_sentences(s[:2], 0, 2)
    assert train == s[:2] and report == s[:2] and overlap


def test_consistency_numbers_and_verdict():
    u = lambda v: np.asarray(v, dtype=float) / np.linalg.norm(v)  # noqa: E731
    vecs = [u([1, 0.1]), u([1, 0.2]), u([1, 0.5]), u([1, 0.0])]
    sims = [[0.9, 0.8], [0.7, None]]
    got = spread(sims, vecs)
    assert got["clips"] == 4 and got["embedded"] == 3
    assert got["across_sentences_sd"] == pytest.approx(0.1, abs=1e-4)  # untagged 0.9, 0.7
    assert got["across_tags_sd"] == pytest.approx(0.05, abs=1e-4)  # only sentence 0 has two values
    tighter = {"across_sentences_sd": 0.01, "across_tags_sd": 0.2, "pairwise_mean": 0.999}
    assert verdict(got, tighter) == {"across_sentences_sd": True, "across_tags_sd": False, "pairwise_mean": True}
    assert verdict(got, {"across_sentences_sd": None})["across_sentences_sd"] is None


def test_measure_and_report_flag_tags_that_change_nothing(tmp_path):
    from qwen_tts_ext.design.report import measure, write_report

    rng = np.random.default_rng(3)
    base = {j: rng.standard_normal(24000).astype(np.float32) * 0.1 for j in range(2)}

    def deaf(j, tag, text):  # a model that ignores its instruction: the same audio for every tag
        return base[j]

    def hearing(j, tag, text):
        return base[j] * (1.0 if tag is None else 0.5)

    centroid = np.ones(4) / 2.0
    embed = lambda audio: np.abs(np.asarray([audio[:100].sum(), 1.0, 1.0, audio.std() * 10]))  # noqa: E731
    a, clips_a = measure(hearing, ["one", "two"], [None, "Angry"], embed, centroid, tmp_path / "a")
    b, clips_b = measure(deaf, ["one", "two"], [None, "Angry"], embed, centroid, tmp_path / "b")
    assert a["tagged_identical_to_untagged"] == 0 and b["tagged_identical_to_untagged"] == 2
    assert b["across_tags_sd"] == 0.0 and len(list((tmp_path / "b").glob("*.wav"))) == 4
    doc = write_report(tmp_path, a, b, {"designer": clips_a, "locked": clips_b},
                       {"name": "x", "description": "d", "sentences": 2, "tags": ["Angry"], "seed": 0, "notes": []})
    md = (tmp_path / "consistency.md").read_text()
    assert "(b): 2 tagged clip(s) are sample-identical" in md and "(a): " not in md
    assert doc["locked_tighter"]["across_tags_sd"] is True  # the verdict alone would call it tighter: the note says why
