"""Intelligibility: word and character error rate of a transcription against the clip's text (lower is better).

Without options the recognizer is pocketsphinx (en-us acoustic model, language model and dictionary
inside the wheel), English only: clips in another language score None. With ``asr=DIR`` a local
transformers ASR model (Whisper, or any folder ``transformers.pipeline("automatic-speech-recognition")``
loads; through ``evaluation.sweep.asr_transcriber``) transcribes every language. Both texts are
normalised the same way (``evaluation.metrics.normalize_transcript``: lower case, punctuation and
[tags] dropped). ``wer`` = word edit distance / reference words (None for Chinese and Japanese, which
have no word boundaries); ``cer`` = character edit distance / reference characters. Both can exceed 1
(insertions). A clip's language: ``clip.language`` ("english", "en", ...), or when unknown, English if
its text is plain ASCII.

pocketsphinx is weak on synthetic speech: a regression signal, not an accuracy figure. Measured on
espeak-ng English at 160 words/min, 6 sentences, with the decoder settings below; "wrong" = the clip
scored against another of the sentences:

====================  =======================  =======================
voice                 right transcript         wrong transcript
====================  =======================  =======================
en-us+f2 (pitch 60)   WER 0.50-0.83 (0.69),    WER 1.0-1.5 (1.13),
                      CER 0.30-0.58 (0.42)     CER 0.67-1.05 (0.87)
en-us, +m3, +f4       WER 0.5-1.08 (0.87),     WER 0.9-1.2 (1.05),
                      CER 0.39-0.88 (0.66)     CER 0.67-0.96 (0.79)
====================  =======================  =======================

Deterministic (repeat spread 0); across sentences of one voice WER varies by +-0.2, so on the male
espeak voices right and wrong overlap clip by clip and only means over several clips separate. Read a
change in mean WER under ~0.1 as noise. Clips under 0.3 s or without text score None.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from qwen_tts_ext.evaluation.judges.base import Clip, Judge, Metric, resample

SAMPLE_RATE = 16000
MIN_SECONDS = 0.3
# Decoder settings: the second (flat-lexicon) pass off and at most 3000 active HMMs per frame cut its CPU
# time from 0.45 to 0.2 s per audio second with the same right-vs-wrong separation on espeak-ng.
POCKETSPHINX = {"fwdflat": False, "maxhmmpf": 3000, "loglevel": "FATAL"}
NO_WORD_BOUNDARIES = {"chinese", "japanese", "zh", "ja", "cmn", "yue"}


def is_english(language: str | None, text: str | None) -> bool:
    if language:
        lang = language.strip().lower().replace("_", "-")
        return lang in ("english", "en") or lang.startswith("en-")
    return bool(text) and text.isascii()


@functools.cache
def _pocketsphinx():
    from pocketsphinx import Decoder

    return Decoder(samprate=SAMPLE_RATE, **POCKETSPHINX)  # en-us model from the wheel


def pocketsphinx_transcribe(audio: np.ndarray, sample_rate: int) -> str:
    wav = resample(audio, sample_rate, SAMPLE_RATE)
    pcm = (np.clip(wav, -1.0, 1.0) * 32767.0).astype(np.int16).tobytes()
    decoder = _pocketsphinx()
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    return hyp.hypstr if hyp is not None else ""


@functools.cache
def _transformers_asr(model_dir: str, device: str):
    from qwen_tts_ext.evaluation.sweep import asr_transcriber

    transcribe, problem = asr_transcriber(model_dir, device=device)
    if transcribe is None:
        raise RuntimeError(problem or f"ASR model {model_dir} could not be loaded")
    return transcribe


def error_rates(reference: str, hypothesis: str, language: str | None = None) -> dict[str, float | None]:
    """``{"wer", "cer"}`` of ``hypothesis`` against ``reference`` after normalisation (None: empty reference)."""
    from qwen_tts_ext.evaluation.metrics import cer, edit_distance, normalize_transcript

    ref, hyp = normalize_transcript(reference), normalize_transcript(hypothesis)
    if not ref:
        return {"wer": None, "cer": None}
    if (language or "").lower() in NO_WORD_BOUNDARIES:  # spaces there come from punctuation, not words
        ref_chars, hyp_chars = ref.replace(" ", ""), hyp.replace(" ", "")
        return {"wer": None, "cer": edit_distance(ref_chars, hyp_chars) / len(ref_chars)}
    words = ref.split()
    return {"wer": edit_distance(words, hyp.split()) / len(words),
            "cer": cer(reference, hypothesis)}  # the alpha sweep's CER (spaces count)


class Asr(Judge):
    name = "asr"
    metrics = (
        Metric("wer", "lower", "word error rate of an ASR transcript against the clip's text",
               "pocketsphinx on espeak-ng: 0.5-1.0 with the right text, 0.9-1.5 with a wrong one"),
        Metric("cer", "lower", "character error rate of an ASR transcript against the clip's text",
               "pocketsphinx on espeak-ng: 0.3-0.9 with the right text, 0.67-1.05 with a wrong one"),
    )
    package = "pocketsphinx"
    needs = ("text",)
    requires = ("pocketsphinx",)
    install = "pip install pocketsphinx==5.1.1"
    skips = "WER/CER"

    def __init__(self, asr: str | Path | None = None, device: str = "cpu"):
        self.asr = str(Path(asr).expanduser().resolve()) if asr else None
        self.device = device

    @classmethod
    def unavailable(cls, asr=None, **options) -> str | None:
        return None if asr else super().unavailable(**options)

    def load(self) -> None:
        if self.asr:
            _transformers_asr(self.asr, self.device)
        else:
            _pocketsphinx()

    def transcribe(self, clip: Clip) -> str | None:
        """The transcript, or None where this judge cannot transcribe the clip's language."""
        if self.asr:
            return _transformers_asr(self.asr, self.device)(np.asarray(clip.audio, dtype=np.float32), clip.sample_rate)
        if not is_english(clip.language, clip.text):
            return None
        return pocketsphinx_transcribe(clip.audio, clip.sample_rate)

    def _score(self, clip: Clip) -> dict[str, float | None]:
        if clip.seconds < MIN_SECONDS:
            return {"wer": None, "cer": None}
        hyp = self.transcribe(clip)
        if hyp is None:
            return {"wer": None, "cer": None}
        return error_rates(clip.text or "", hyp, clip.language)
