"""Helpers for the ``score`` tests: a stand-in judge registry (numpy only, instant) and espeak clips.

The stand-in keeps the registry's API (``JUDGES``, ``load_judge``, ``load_judges``, ``metric_info``,
``score_clips``) so the command's plumbing (inputs, rows, reports, refusals) is tested in seconds and
independently of which judge packages are installed; the real judges run in tests/test_score.py's
``real`` tests and in the judges' own tests.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np

from qwen_tts_ext.evaluation.judges.base import Judge, Metric

_BASE = "qwen_tts_ext.evaluation.judges"


class StubSpeaker(Judge):
    name = "speaker"
    metrics = (Metric("spk_sim", "higher", "stub: spectral cosine to the reference", "stub"),)
    package = "resemblyzer"
    needs = ("ref",)

    def _score(self, clip):
        def spec(x):
            x = np.asarray(x, dtype=np.float32)
            frames = x[: len(x) // 512 * 512].reshape(-1, 512)
            m = np.abs(np.fft.rfft(frames, axis=1)).mean(axis=0)
            return m / (np.linalg.norm(m) + 1e-9)

        return {"spk_sim": float(spec(clip.audio) @ spec(clip.ref))}


class StubMos(Judge):
    name = "distillmos"
    metrics = (Metric("mos_distill", "higher", "stub: loudness as MOS", "stub 1-5"),)
    package = "distillmos"

    def _score(self, clip):
        rms = float(np.sqrt(np.mean(np.square(clip.audio)))) if clip.audio.size else 0.0
        return {"mos_distill": 1.0 + 4.0 * min(1.0, 10 * rms)}


class StubTiming(Judge):
    name = "timing"
    metrics = (Metric("speech_seconds", "higher", "stub: clip length", "stub"),
               Metric("speaking_rate", "target", "stub: characters per second", "stub 10-16"),
               Metric("stopped_by_eos", "higher", "stub: from the sidecar", "1"))

    def _score(self, clip):
        rate = len(clip.text) / clip.seconds if clip.text and clip.seconds else None
        eos = clip.meta.get("stopped_by_eos")
        return {"speech_seconds": clip.seconds, "speaking_rate": rate,
                "stopped_by_eos": None if eos is None else int(eos)}


class StubEcapa(Judge):
    name = "speaker_ecapa"
    metrics = (Metric("spk_sim_ecapa", "higher", "stub", "stub"),)
    needs = ("ref",)

    def __init__(self, checkpoint=None):
        self.checkpoint = checkpoint

    def _score(self, clip):
        return {"spk_sim_ecapa": 0.5}


class Broken(Judge):
    """Raises on clips shorter than 0.5 s (a judge that breaks on one clip must not stop the run)."""

    name = "broken"
    metrics = (Metric("broken_metric", "lower", "stub", "stub"),)

    def _score(self, clip):
        if clip.seconds < 0.5:
            raise RuntimeError("too short for me")
        return {"broken_metric": 1.0}


AVAILABLE = {"speaker": StubSpeaker, "distillmos": StubMos, "timing": StubTiming, "speaker_ecapa": StubEcapa,
             "broken": Broken}
MISSING = {"dnsmos": "dnsmos not installed: pip install speechmos==0.0.1.1 (DNSMOS skipped)",
           "asr": "asr not installed: pip install pocketsphinx==5.1.1 (WER/CER skipped)"}


def make_registry(*, forbid_loading: bool = False, loads: list | None = None) -> types.ModuleType:
    import qwen_tts_ext.evaluation.judges.base as base

    mod = types.ModuleType(_BASE)
    mod.__path__ = [str(Path(base.__file__).parent)]
    mod.JUDGES = {"speaker": "stub:StubSpeaker", "speaker_ecapa": "stub:StubEcapa", "distillmos": "stub:StubMos",
                  "dnsmos": "stub:Dnsmos", "asr": "stub:Asr", "timing": "stub:StubTiming", "broken": "stub:Broken"}

    def load_judge(name, **options):
        if forbid_loading:
            raise AssertionError("a judge was loaded before the input was checked")
        if name in MISSING:
            return None
        if name == "speaker_ecapa":
            return StubEcapa(checkpoint=options.get("checkpoint")) if options.get("checkpoint") else None
        return AVAILABLE[name]()

    def load_judges(names=None, **options):
        if loads is not None:
            loads.append((names, options))
        wanted = list(names) if names is not None else [n for n in mod.JUDGES if n != "broken"]
        judges, notes = [], []
        for n in wanted:
            j = load_judge(n, **options)
            if j is None:
                notes.append(MISSING.get(n, f"{n} needs checkpoint=BASE_CKPT (skipped)"))
            else:
                judges.append(j)
        return judges, notes

    def metric_info():
        return {m.name: m for cls in AVAILABLE.values() for m in cls.metrics}

    def score_clips(clips, judges, progress=None):
        rows = [{"id": c.id} for c in clips]
        for j in judges:
            for row, r in zip(rows, j.score(clips)):
                row.update(r)
        return rows

    mod.load_judge, mod.load_judges, mod.metric_info = load_judge, load_judges, metric_info
    mod.score_clips = score_clips
    mod.Judge, mod.Metric, mod.Clip = base.Judge, base.Metric, base.Clip
    return mod


def install_registry(monkeypatch, **kwargs) -> types.ModuleType:
    """Put the stand-in registry where ``from qwen_tts_ext.evaluation.judges import ...`` finds it."""
    import qwen_tts_ext.evaluation as evaluation

    mod = make_registry(**kwargs)
    monkeypatch.setitem(sys.modules, _BASE, mod)
    monkeypatch.setattr(evaluation, "judges", mod, raising=False)
    return mod


def fake_checkpoint(folder: Path, kind: str) -> Path:
    """A folder identified from its config.json alone (what every refusal needs): "base", "custom_voice", "llm"."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_type": "qwen3"} if kind == "llm" else {"model_type": "qwen3_tts", "tts_model_type": kind}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


# --------------------------------------------------------------------------- audio


SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things.",
    "We will meet again when the morning comes.",
    "She sells sea shells by the sea shore every summer.",
]


def espeak_clips(folder: Path, n: int = 3, voices=("en-us+m3", "en-us+f2", "en-gb+m7"), transcripts: bool = True,
                 start: int = 0) -> list[Path]:
    """``n`` espeak-ng WAVs (``clip_000.wav`` ...), each with ``NAME.txt`` when ``transcripts``."""
    from qwen_tts_ext.testing.speech import espeak_to_wav

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(start, start + n):
        text = SENTENCES[i % len(SENTENCES)]
        wav = espeak_to_wav(text, folder / f"clip_{i:03d}.wav", voice=voices[i % len(voices)])
        if transcripts:
            wav.with_suffix(".txt").write_text(text + "\n", encoding="utf-8")
        out.append(wav)
    return out
