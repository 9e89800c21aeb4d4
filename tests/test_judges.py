"""The offline judges, validated on real speech (espeak-ng voices generated here, never committed).

Each claim of the issue is one assertion with a margin measured to hold for every clip (the judges
are deterministic, so the margins do not move between runs; they move only with the espeak-ng
version): same voice > other voice (resemblyzer), clean > noisy / clipped (DistillMOS, DNSMOS), right
transcript < wrong transcript (pocketsphinx WER/CER), cut mid-word -> truncated, faster speech -> higher
speaking rate. Models load once for the module, with the network blocked.
"""

from __future__ import annotations

import socket
import sys

import numpy as np
import pytest

from qwen_tts_ext.testing.speech import SENTENCES, espeak_available

NO_ESPEAK = ("espeak-ng is not installed (apt-get install espeak-ng): the judges are validated on real speech "
             "only, so these tests skip")

TEXTS = SENTENCES["english"]  # 6 sentences, ~3 s each
VOICES = {"A": ("en-us+m3", 35), "B": ("en-us+f2", 60)}  # clearly different voices (male low / female high)


def _espeak(tmp, text, voice, pitch, speed=160):
    import soundfile as sf

    from qwen_tts_ext.testing.speech import espeak_to_wav

    path = espeak_to_wav(text, tmp / f"{voice}_p{pitch}_s{speed}_{TEXTS.index(text)}.wav", voice=voice, speed=speed,
                         pitch=pitch)
    audio, sr = sf.read(path, dtype="float32")
    return audio, sr


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """(voice, sentence) -> (audio, sr) for voices A and B at 160 wpm, plus ("slow"|"fast", i) at 120/240 wpm."""
    if not espeak_available():
        pytest.skip(NO_ESPEAK)
    tmp = tmp_path_factory.mktemp("judges")
    out = {}
    for v, (voice, pitch) in VOICES.items():
        for i, text in enumerate(TEXTS):
            out[v, i] = _espeak(tmp, text, voice, pitch)
    for i in range(3):
        out["slow", i] = _espeak(tmp, TEXTS[i], "en-us", 50, speed=120)
        out["fast", i] = _espeak(tmp, TEXTS[i], "en-us", 50, speed=240)
    return out


def _block_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access attempted by a judge (blocked in tests)")

    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def judges():
    """Every installed default judge, loaded from scratch (process caches cleared) with the network blocked."""
    from qwen_tts_ext.evaluation.judges import asr, load_judges, naturalness, speaker

    for cached in (speaker._voice_encoder, naturalness._distillmos, naturalness._dnsmos_session, asr._pocketsphinx):
        cached.cache_clear()
    mp = pytest.MonkeyPatch()
    _block_network(mp)
    try:
        loaded, notes = load_judges()
    finally:
        mp.undo()
    return {j.name: j for j in loaded}, notes


def need(judges, name):
    loaded, notes = judges
    if name not in loaded:
        pytest.skip(next((n for n in notes if n.startswith(name)), f"judge {name} not loaded"))
    return loaded[name]


def clip(audio_sr, **kw):
    from qwen_tts_ext.evaluation.judges import Clip

    audio, sr = audio_sr
    return Clip(audio=np.asarray(audio, dtype=np.float32), sample_rate=sr, **kw)


def noisy(audio, snr_db, seed=0):
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(len(audio)).astype(np.float32) * np.sqrt(np.mean(audio ** 2) / 10 ** (snr_db / 10))
    x = audio + noise
    return (x / max(1.0, float(np.abs(x).max()))).astype(np.float32)


def clipped(audio, gain=100.0):
    return np.clip(audio * gain / np.abs(audio).max(), -1, 1).astype(np.float32)


# --------------------------------------------------------------------------- registry


def test_registry_names_metrics_and_directions():
    from qwen_tts_ext.evaluation.judges import JUDGES, judge_class, metric_info

    assert list(JUDGES) == ["speaker", "speaker_ecapa", "distillmos", "dnsmos", "asr", "timing"]
    directions = {name: m.direction for name, m in metric_info().items()}
    assert directions == {
        "spk_sim": "higher", "spk_sim_ecapa": "higher", "mos_distill": "higher", "dnsmos_ovrl": "higher",
        "dnsmos_sig": "higher", "dnsmos_bak": "higher", "wer": "lower", "cer": "lower",
        "speech_seconds": "target", "speaking_rate": "target", "lead_silence": "lower", "trail_silence": "target",
        "truncated": "lower", "duration_ratio": "target", "stopped_by_eos": "higher",
    }
    for name in JUDGES:
        cls = judge_class(name)
        assert cls.name == name and cls.metrics and all(m.description and m.typical for m in cls.metrics)
        doc = sys.modules[cls.__module__].__doc__
        assert "espeak" in doc and ("spread" in doc or "Deterministic" in doc)  # measured ranges are documented


def test_missing_judge_is_skipped_with_one_install_line(monkeypatch):
    from qwen_tts_ext.evaluation.judges import load_judge, load_judges

    lines = {
        "speaker": ("resemblyzer", "speaker not installed: pip install webrtcvad-wheels==2.0.14.post1 && "
                                   "pip install --no-deps resemblyzer==0.1.4 (speaker similarity skipped)"),
        "distillmos": ("distillmos", "distillmos not installed: pip install distillmos==0.9.1 (MOS skipped)"),
        "dnsmos": ("speechmos", "dnsmos not installed: pip install speechmos==0.0.1.1 (DNSMOS skipped)"),
        "asr": ("pocketsphinx", "asr not installed: pip install pocketsphinx==5.1.1 (WER/CER skipped)"),
    }
    for name, (module, line) in lines.items():
        with monkeypatch.context() as m:
            m.setitem(sys.modules, module, None)  # `import module` now raises ImportError
            assert load_judge(name) is None
            got, notes = load_judges([name, "timing"])
            assert [j.name for j in got] == ["timing"] and notes == [line]
    # the ECAPA judge needs a checkpoint, asr= needs no pocketsphinx
    assert load_judge("speaker_ecapa") is None
    assert load_judges(["speaker_ecapa"])[1] == [
        "speaker_ecapa needs checkpoint=BASE_CKPT (a Qwen3-TTS Base checkpoint: --speaker-encoder) "
        "(spk_sim_ecapa skipped)"]
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "pocketsphinx", None)
        from qwen_tts_ext.evaluation.judges import judge_class

        assert judge_class("asr").unavailable(asr="/some/whisper") is None
    with pytest.raises(KeyError, match="unknown judge 'mos'"):
        load_judges(["mos"])
    with pytest.raises(TypeError, match="unknown judge option"):
        load_judges(["timing"], checkpiont="x")


def test_a_judge_that_cannot_load_is_a_note_not_a_crash(tmp_path):
    from qwen_tts_ext.evaluation.judges import load_judges

    got, notes = load_judges(["speaker_ecapa", "timing"], checkpoint=tmp_path / "nothing-here")
    assert [j.name for j in got] == ["timing"]
    assert len(notes) == 1 and notes[0].startswith("speaker_ecapa could not be loaded (") and "skipped" in notes[0]


def test_default_judges_load_offline(judges):
    loaded, notes = judges
    installed = [n for n in ("speaker", "distillmos", "dnsmos", "asr", "timing") if n in loaded]
    assert "timing" in installed  # silero-vad is a core dependency
    assert all(n.count("\n") == 0 for n in notes)
    assert len(installed) + len(notes) == 6  # + speaker_ecapa, which needs checkpoint=


def test_score_clips_rows_progress_and_a_failing_judge(speech, judges):
    from qwen_tts_ext.evaluation.judges import Judge, Metric, score_clips

    class Fails(Judge):
        name = "fails"
        metrics = (Metric("boom", "lower", "x", "x"),)

        def _score(self, c):
            if c.id == "b":
                raise RuntimeError("no")
            return {"boom": 1}

    timing = need(judges, "timing")
    clips = [clip(speech["A", i % 6], id=k, text=TEXTS[i % 6]) for i, k in enumerate("abcdefghij")]
    done = []
    rows = score_clips(clips, [Fails(), timing], progress=done.append)
    assert done == [8, 2] and [r["id"] for r in rows] == list("abcdefghij")
    assert list(rows[0])[:2] == ["id", "boom"] and set(rows[0]) == {"id", "boom"} | {m.name for m in timing.metrics}
    assert rows[1]["boom"] is None and rows[0]["boom"] == 1.0 and rows[1]["speech_seconds"] > 1
    assert all(v is None or isinstance(v, float) for r in rows for k, v in r.items() if k != "id")


def test_too_short_silent_and_empty_clips_score_none_without_crashing(judges):
    import torch

    from qwen_tts_ext.evaluation.judges import score_clips

    loaded, _ = judges
    sr = 22050
    rng = np.random.default_rng(0)
    short = (0.1 * rng.standard_normal(int(0.05 * sr))).astype(np.float32)
    clips = [clip((np.zeros(0, np.float32), sr), id="empty", text="Hello.", ref=short, ref_sample_rate=sr),
             clip((short, sr), id="short", text="Hello.", ref=short, ref_sample_rate=sr),
             clip((np.zeros(sr, np.float32), sr), id="silent", text="Hello.", ref=np.zeros(sr, np.float32),
                  ref_sample_rate=sr, meta={"stopped_by_eos": True})]
    threads = torch.get_num_threads()
    rows = score_clips(clips, list(loaded.values()))
    assert torch.get_num_threads() == threads  # the judges put the thread count back
    empty, short_row, silent = rows
    for row in (empty, short_row):
        assert all(row[k] is None for k in row if k not in ("id", "duration_ratio")), row
    assert silent.get("spk_sim", None) is None and silent["speech_seconds"] == 0.0
    assert silent["speaking_rate"] is None and silent["truncated"] is None and silent["stopped_by_eos"] == 1.0
    if "asr" in loaded:
        assert silent["wer"] == 1.0  # nothing recognised: every word missed


# --------------------------------------------------------------------------- speaker


def test_same_voice_scores_higher_similarity_than_a_different_voice(speech, judges):
    judge = need(judges, "speaker")
    sims = {}
    for ref_voice in VOICES:
        ref = np.concatenate([speech[ref_voice, i][0] for i in range(3)])  # ~10 s reference, 3 sentences
        sr = speech[ref_voice, 0][1]
        for voice in VOICES:
            rows = judge.score([clip(speech[voice, i], ref=ref, ref_sample_rate=sr) for i in range(3, 6)])
            sims[ref_voice, voice] = [r["spk_sim"] for r in rows]
    for ref_voice, other in (("A", "B"), ("B", "A")):
        same, diff = sims[ref_voice, ref_voice], sims[ref_voice, other]
        assert min(same) > 0.85 and max(diff) < 0.78, sims  # measured: same 0.89-0.95, other 0.62-0.70
        assert min(same) - max(diff) > 0.15, sims  # every held-out sentence, both directions
    # the reference itself scores ~1; no reference -> None
    a = speech["A", 0]
    assert judge.score([clip(a, ref=a[0], ref_sample_rate=a[1])])[0]["spk_sim"] == pytest.approx(1.0, abs=1e-5)
    assert judge.score([clip(a)])[0]["spk_sim"] is None


def test_ecapa_similarity_uses_the_checkpoint_encoder(speech, tiny_base):
    from qwen_tts_ext.evaluation.judges import load_judge

    judge = load_judge("speaker_ecapa", checkpoint=tiny_base)
    a, b = speech["A", 0], speech["B", 1]
    rows = judge.score([clip(a, ref=a[0], ref_sample_rate=a[1]), clip(b, ref=a[0], ref_sample_rate=a[1]), clip(b)])
    assert rows[0]["spk_sim_ecapa"] == pytest.approx(1.0, abs=1e-4)  # random tiny weights: only plumbing here
    assert -1 <= rows[1]["spk_sim_ecapa"] < 1 and rows[2]["spk_sim_ecapa"] is None


# --------------------------------------------------------------------------- naturalness


@pytest.fixture(scope="module")
def degraded(speech):
    """Clean, white noise at -5 dB SNR, hard-clipped x100 (40 dB of gain into the rails): two clips, one per voice."""
    picks = [speech["A", 0], speech["B", 4]]
    return {"clean": [clip(p) for p in picks],
            "noise": [clip((noisy(a, -5, seed=i), sr)) for i, (a, sr) in enumerate(picks)],
            "clipped": [clip((clipped(a), sr)) for a, sr in picks]}


def test_clean_speech_scores_higher_distillmos_than_noisy_or_clipped(degraded, judges):
    judge = need(judges, "distillmos")
    mos = {k: [r["mos_distill"] for r in judge.score(v)] for k, v in degraded.items()}
    for bad in ("noise", "clipped"):
        assert all(c - d > 0.15 for c, d in zip(mos["clean"], mos[bad])), mos
    assert all(1.5 < m < 3.5 for m in mos["clean"]), mos  # espeak-ng: 2.0-3.3


def test_clean_speech_scores_higher_dnsmos_than_noisy_or_clipped(degraded, judges, speech):
    judge = need(judges, "dnsmos")
    rows = {k: judge.score(v) for k, v in degraded.items()}
    ovrl = {k: [r["dnsmos_ovrl"] for r in v] for k, v in rows.items()}
    for bad in ("noise", "clipped"):
        assert all(c - d > 0.3 for c, d in zip(ovrl["clean"], ovrl[bad])), ovrl
    # noise is a background problem: bak falls far more than sig
    for c, n in zip(rows["clean"], rows["noise"]):
        assert c["dnsmos_bak"] - n["dnsmos_bak"] > 1.0 and c["dnsmos_bak"] - n["dnsmos_bak"] > c["dnsmos_sig"] - n["dnsmos_sig"]
    # the same numbers as the package's own entry point (which also runs the P.808 model we skip)
    from speechmos import dnsmos

    from qwen_tts_ext.evaluation.judges.base import resample

    c = degraded["clean"][0]
    ref = dnsmos.run(np.clip(resample(c.audio, c.sample_rate, 16000), -1, 1), 16000)
    assert rows["clean"][0]["dnsmos_ovrl"] == pytest.approx(float(ref["ovrl_mos"]), abs=1e-4)
    assert rows["clean"][0]["dnsmos_bak"] == pytest.approx(float(ref["bak_mos"]), abs=1e-4)
    # speechmos's windows: a 1 s clip tiles into 7 identical windows (scored once, weight 7); a 30 s clip
    # keeps the reference's quirk of skipping the windows that start at 7-23 s
    from qwen_tts_ext.evaluation.judges.naturalness import dnsmos_windows

    w, n = dnsmos_windows(np.resize(resample(c.audio, c.sample_rate, 16000), 16000))
    assert len(w) == 1 and n.tolist() == [7.0]
    w, n = dnsmos_windows(np.zeros(30 * 16000, np.float32))
    assert len(w) == 7 and n.sum() == 7


# --------------------------------------------------------------------------- intelligibility


def test_right_transcript_scores_lower_wer_than_a_wrong_one(speech, judges):
    judge = need(judges, "asr")
    right = judge.score([clip(speech["B", i], text=TEXTS[i], language="english") for i in range(4)])
    wrong = judge.score([clip(speech["B", i], text=TEXTS[(i + 3) % 6], language="english") for i in range(4)])
    # measured (en-us+f2 pitch 60, 160 wpm): WER 0.50-0.83 right vs 1.0-1.5 wrong (per clip >= 0.22 apart),
    # CER 0.30-0.58 vs 0.76-1.05 (>= 0.18 apart); means 0.68 vs 1.2 and 0.43 vs 0.93
    for metric, gap in (("wer", 0.1), ("cer", 0.1)):
        r, w = [x[metric] for x in right], [x[metric] for x in wrong]
        assert all(b - a > gap for a, b in zip(r, w)), (metric, r, w)
        assert np.mean(w) - np.mean(r) > 0.3, (metric, r, w)
    # pocketsphinx is English only: another language, or no text, is None (not a made-up number)
    de = judge.score([clip(speech["B", 0], text="Guten Morgen, wie geht es dir heute?", language="german"),
                      clip(speech["B", 0], text="Ünïcode text, language unknown"), clip(speech["B", 0])])
    assert all(r["wer"] is None and r["cer"] is None for r in de)


def test_asr_folder_transcribes_every_language(speech, monkeypatch):
    """``asr=DIR`` goes through evaluation.sweep.asr_transcriber (stand-in here: no model folder in tests)."""
    import qwen_tts_ext.evaluation.sweep as sweep
    from qwen_tts_ext.evaluation.judges import asr, load_judge

    said = {"value": ""}
    monkeypatch.setattr(sweep, "asr_transcriber", lambda d, device="cpu": (lambda audio, sr: said["value"], None))
    asr._transformers_asr.cache_clear()
    try:
        judge = load_judge("asr", asr="/models/whisper-small")
        said["value"] = "Guten Morgen, wie geht es dir?"
        de = judge.score([clip(speech["A", 0], text="Guten Morgen, wie geht es dir heute?", language="german")])[0]
        assert de["wer"] == pytest.approx(1 / 7) and 0 < de["cer"] < 0.2
        said["value"] = "你好今天天气很好"
        zh = judge.score([clip(speech["A", 0], text="你好，今天天气很好。", language="chinese")])[0]
        assert zh["wer"] is None and zh["cer"] == 0.0  # no word boundaries in Chinese: CER only
    finally:
        asr._transformers_asr.cache_clear()


# --------------------------------------------------------------------------- timing


def _cut_mid_word(audio, sr):
    """Cut at the centre of the loudest 50 ms window between 40% and 70% of the clip (inside a vowel)."""
    win = int(0.05 * sr)
    lo, hi = int(0.4 * len(audio)), int(0.7 * len(audio))
    energy = [float(np.mean(audio[s:s + win] ** 2)) for s in range(lo, hi - win, win // 2)]
    start = lo + int(np.argmax(energy)) * (win // 2)
    return audio[: start + win // 2]


def test_a_clip_cut_mid_word_is_flagged_truncated(speech, judges):
    judge = need(judges, "timing")
    picks = [speech[v, i] for v in VOICES for i in (0, 2, 4)]
    whole = judge.score([clip(p, text="x") for p in picks])
    cut = judge.score([clip((_cut_mid_word(a, sr), sr)) for a, sr in picks])
    assert [r["truncated"] for r in whole] == [0.0] * 6, whole
    assert [r["truncated"] for r in cut] == [1.0] * 6, cut
    assert all(r["trail_silence"] > 0.1 for r in whole) and all(r["trail_silence"] <= 0.05 for r in cut)
    assert all(0 <= r["lead_silence"] < 0.2 for r in whole)


def test_faster_speech_shows_a_higher_speaking_rate(speech, judges):
    judge = need(judges, "timing")
    slow = judge.score([clip(speech["slow", i], text=TEXTS[i]) for i in range(3)])
    fast = judge.score([clip(speech["fast", i], text=TEXTS[i]) for i in range(3)])
    for s, f in zip(slow, fast):  # espeak-ng -s 120 vs 240 words/min
        assert f["speaking_rate"] / s["speaking_rate"] > 1.6, (s, f)
        assert f["duration_ratio"] < s["duration_ratio"] and f["speech_seconds"] < 0.65 * s["speech_seconds"]
    normal = judge.score([clip(speech["A", i], text=TEXTS[i]) for i in range(6)])
    assert all(9 < r["speaking_rate"] < 18 for r in normal), normal  # 160 wpm: ~12-15 characters/s
    assert judge.score([clip(speech["A", 0])])[0]["speaking_rate"] is None  # no text, no rate


def test_stopped_by_eos_and_duration_ratio_follow_meta_and_text(speech, judges):
    from qwen_tts_ext.synthesis.bounds import expected_seconds

    judge = need(judges, "timing")
    a = speech["A", 1]
    rows = judge.score([clip(a, text=TEXTS[1], meta={"stopped_by_eos": False, "frames": 90, "frame_cap": 90}),
                        clip(a, text=TEXTS[1], meta={"stopped_by_eos": True}), clip(a)])
    assert [r["stopped_by_eos"] for r in rows] == [0.0, 1.0, None]
    assert rows[0]["duration_ratio"] == pytest.approx(len(a[0]) / a[1] / expected_seconds(TEXTS[1]))
    assert rows[2]["duration_ratio"] is None
