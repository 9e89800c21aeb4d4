"""Speaker similarity to the reference audio: an independent verifier (resemblyzer) and the model's own ECAPA.

``spk_sim`` (judge ``speaker``, higher is better): cosine between resemblyzer's d-vectors of the clip
and of ``clip.ref``. Resemblyzer (a GE2E LSTM speaker verifier, ``pretrained.pt`` inside the wheel) has
never seen the TTS model, so it can tell a user whether the voice got closer to the reference; the
model's own encoder cannot (it scores audio conditioned on its own vector). d-vectors are non-negative,
so cosines live in [0, 1]: unrelated voices rarely go below 0.5.

``spk_sim_ecapa`` (judge ``speaker_ecapa``, higher is better): cosine between the x-vectors of the TTS
model's own ECAPA-TDNN speaker encoder (``checkpoint=`` a Qwen3-TTS Base checkpoint, through
``prep.speakers.SpeakerEncoder`` and ``evaluation.sweep.Embedder``). It is what the model conditions on,
so read it next to ``spk_sim``, not instead of it.

Measured on espeak-ng English (6 sentences; voices en-us, en-us+m3 pitch 35, en-us+f2 pitch 60, en-us+f4
pitch 70, plus en-gb+f3, en-us+m7 and en-us at 120 wpm / pitch 70; each of sentences 4-6 against a
reference of sentences 1-3 of a voice concatenated, ~10 s):

- same voice: 0.87-0.96 (mean per voice 0.91-0.95);
- clearly different voices (a male vs a female variant, or two female variants): 0.54-0.76;
- close variants of one synthesizer are NOT separated: en-us vs en-gb+f3 0.93, en-us vs en-us at
  120 wpm 0.94, en-us vs en-us+m3 0.86-0.89, en-us vs en-us pitch 70 0.88-0.90.
- with one ~3 s sentence as the reference everything drops by ~0.04: same voice 0.79-0.93 (std across
  sentence pairs of one voice 0.026-0.034), male vs female 0.50-0.70.
- deterministic: the same clip and reference give the same value (repeat spread 0).

So: differences under ~0.03 between two checkpoints are sentence noise; use a reference of several
sentences (>= 5 s) and average over >= 10 clips. Clips with under 0.5 s of voiced audio (after
resemblyzer's own silence trimming) or a silent reference score None.
"""

from __future__ import annotations

import functools
import hashlib
import warnings
from pathlib import Path

import numpy as np

from qwen_tts_ext.evaluation.judges.base import Clip, Judge, Metric, resample, torch_threads

SAMPLE_RATE = 16000  # resemblyzer's rate
MIN_SECONDS = 0.5  # voiced audio left after resemblyzer's silence trimming
SILENT_PEAK = 1e-4


@functools.cache
def _voice_encoder():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy.ndimage.morphology deprecation inside resemblyzer.audio
        from resemblyzer import VoiceEncoder

    return VoiceEncoder("cpu", verbose=False)  # pretrained.pt from the wheel; no download path exists


def _key(audio: np.ndarray, sample_rate: int) -> tuple[str, int, int]:
    a = np.ascontiguousarray(audio, dtype=np.float32)
    return hashlib.blake2b(a.tobytes(), digest_size=16).hexdigest(), int(sample_rate), len(a)


class _RefCache:
    """Reference embeddings by content: a shared --ref-audio is embedded once, not once per clip."""

    def __init__(self, size: int = 64):
        self.size = size
        self.items: dict[tuple, np.ndarray | None] = {}

    def get(self, audio, sample_rate, embed):
        key = _key(audio, sample_rate)
        if key not in self.items:
            if len(self.items) >= self.size:
                self.items.pop(next(iter(self.items)))
            self.items[key] = embed(audio, sample_rate)
        return self.items[key]


def _cosine(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    if a is None or b is None:
        return None
    from qwen_tts_ext.evaluation.metrics import cosine

    return cosine(a, b)


class Resemblyzer(Judge):
    name = "speaker"
    metrics = (Metric("spk_sim", "higher",
                      "speaker similarity to the reference audio: cosine of resemblyzer d-vectors (an independent "
                      "verifier, not the TTS model's encoder)",
                      "same voice 0.87-0.95, a clearly different voice 0.54-0.76 (espeak-ng, 10 s reference)"),)
    package = "resemblyzer"
    needs = ("ref",)
    requires = ("resemblyzer", "webrtcvad", "librosa")
    install = "pip install webrtcvad-wheels==2.0.14.post1 && pip install --no-deps resemblyzer==0.1.4"
    skips = "speaker similarity"

    def __init__(self, threads: int | None = 1):
        self.threads = threads
        self._refs = _RefCache()

    def load(self) -> None:
        with torch_threads(self.threads):
            _voice_encoder()

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray | None:
        """The clip's d-vector (unit norm), or None for silence / under ``MIN_SECONDS`` of voiced audio."""
        wav = resample(audio, sample_rate, SAMPLE_RATE)
        if wav.size == 0 or float(np.max(np.abs(wav))) < SILENT_PEAK:
            return None
        from resemblyzer import preprocess_wav

        wav = preprocess_wav(np.clip(wav, -1.0, 1.0))  # volume to -30 dBFS, long silences cut (webrtcvad)
        if len(wav) < MIN_SECONDS * SAMPLE_RATE:
            return None
        vec = _voice_encoder().embed_utterance(wav)
        return vec if np.all(np.isfinite(vec)) else None

    def score(self, clips):
        with torch_threads(self.threads):
            return super().score(clips)

    def _score(self, clip: Clip) -> dict[str, float | None]:
        ref = self._refs.get(clip.ref, clip.ref_sample_rate or clip.sample_rate, self.embed)
        if ref is None:
            return {"spk_sim": None}
        return {"spk_sim": _cosine(self.embed(clip.audio, clip.sample_rate), ref)}


@functools.cache
def _ecapa(checkpoint: str, device: str, threads: int | None):
    from qwen_tts_ext.evaluation.sweep import Embedder
    from qwen_tts_ext.prep.speakers import SpeakerEncoder

    return Embedder(SpeakerEncoder.from_checkpoint(checkpoint, device=device, num_threads=threads))


class Ecapa(Judge):
    name = "speaker_ecapa"
    metrics = (Metric("spk_sim_ecapa", "higher",
                      "speaker similarity to the reference audio by the TTS model's own ECAPA speaker encoder "
                      "(what the model conditions on: not an independent judge; read it next to spk_sim)",
                      "depends on the checkpoint's encoder; same clip 1.0"),)
    package = ""
    needs = ("ref",)
    skips = "spk_sim_ecapa"

    def __init__(self, checkpoint: str | Path | None = None, device: str = "cpu", threads: int | None = 1):
        self.checkpoint = checkpoint
        self.device = device
        self.threads = threads
        self._refs = _RefCache()

    @classmethod
    def unavailable(cls, checkpoint=None, **options) -> str | None:
        if not checkpoint:
            return ("speaker_ecapa needs checkpoint=BASE_CKPT (a Qwen3-TTS Base checkpoint: --speaker-encoder) "
                    "(spk_sim_ecapa skipped)")
        return None

    def _embedder(self):
        path = Path(self.checkpoint).expanduser()
        return _ecapa(str(path.resolve()) if path.exists() else str(self.checkpoint), self.device, self.threads)

    def load(self) -> None:
        path = Path(self.checkpoint).expanduser()
        if path.is_dir():  # a checkpoint without an encoder is refused from config.json, before torch/qwen_tts load
            from qwen_tts_ext.prep.speakers import check_speaker_encoder

            check_speaker_encoder(path, what="speaker_ecapa checkpoint")
        elif not path.exists() and path.is_absolute():
            raise FileNotFoundError(f"speaker_ecapa checkpoint {path}: no such folder")
        self._embedder()

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray | None:
        if len(audio) == 0 or float(np.max(np.abs(audio))) < SILENT_PEAK:
            return None
        return self._embedder()(np.asarray(audio, dtype=np.float32), sample_rate)  # None under 0.3 s

    def _score(self, clip: Clip) -> dict[str, float | None]:
        ref = self._refs.get(clip.ref, clip.ref_sample_rate or clip.sample_rate, self.embed)
        if ref is None:
            return {"spk_sim_ecapa": None}
        return {"spk_sim_ecapa": _cosine(self.embed(clip.audio, clip.sample_rate), ref)}
