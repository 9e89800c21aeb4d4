"""Timing from silero-vad (a core dependency; the same model data prep trims with): rate, silences, truncation.

================  ========  ===============================================================================
metric            better    meaning
================  ========  ===============================================================================
speech_seconds    target    seconds silero-vad marks as speech (0.0 for a clip without speech)
speaking_rate     target    characters of the text (letters/digits/CJK, no spaces or punctuation) per
                            second of speech; None without text
lead_silence      lower     seconds before the first speech
trail_silence     target    seconds after the last speech (0 = speech runs into the end of the buffer)
truncated         lower     1 when speech runs into the end of the buffer: the last speech segment reaches
                            within 50 ms of the end and the last 50 ms are within 35 dB of the loudest 50 ms
                            (a word cut off, or a generation stopped by its frame cap mid-word), else 0
duration_ratio    target    clip seconds / ``synthesis.bounds.expected_seconds(text)`` (the deliberately
                            slow estimate every generation's frame cap is built from); None without text
stopped_by_eos    higher    generated audio only (``clip.meta["stopped_by_eos"]``): 1 = the model stopped
                            itself, 0 = the frame cap stopped it; None for audio we did not generate
================  ========  ===============================================================================

Measured on espeak-ng English (24 clips: 6 sentences x 4 voices, 160 words/min, 2.5-3.7 s):
speaking_rate 11.7-16.1 chars/s (mean 14.0; std across sentences of one voice 1.1-1.25); the same
6 sentences at 120 / 160 / 240 words/min: 9.1-11.9 / 12.0-15.8 / 16.7-22.1 chars/s (240 vs 120: x1.85 per
sentence). speech_seconds 2.2-3.5, lead_silence 0-0.1 s, trail_silence 0.15-0.29 s (espeak-ng ends
with ~0.3 s of silence), truncated 0 for every uncut clip and 1 for every clip cut inside a word,
duration_ratio 0.75-1.0 at 160 wpm (1.04-1.34 at 120, 0.51-0.65 at 240). ``truncated`` means "no
silence after the speech": a clip cut at its very last audible sample is flagged too (13 of 24 espeak
clips cut at their last sample above -50 dBFS; none of them after prep's trim=vad or trim=energy, which
keep 0.1 s), so on datasets read it as "tightly cut or cut off", on generated audio as "did not finish".
Deterministic (repeat spread
0); the VAD pads segment edges by 30 ms, so differences in silences under 0.05 s are noise. Clips under
0.1 s get None for the VAD metrics.
"""

from __future__ import annotations

import numpy as np

from qwen_tts_ext.evaluation.judges.base import Clip, Judge, Metric, resample, torch_threads

SAMPLE_RATE = 16000  # silero-vad's rate
MIN_SECONDS = 0.1
END_SECONDS = 0.05  # speech ending this close to the end of the buffer runs into it
END_WINDOW = 0.05
END_LEVEL_DB = 35.0  # ...and the last window is no quieter than this below the loudest window


def text_characters(text: str) -> int:
    """Characters that take time to say: letters, digits and CJK (no spaces, punctuation or [tags])."""
    from qwen_tts_ext.evaluation.metrics import normalize_transcript

    return sum(1 for ch in normalize_transcript(text) if ch.isalnum())


def _window_db(wav: np.ndarray, win: int) -> tuple[float, float]:
    """(loudest window, last window) RMS in dB."""
    def db(x):
        return 10.0 * np.log10(max(float(np.mean(np.square(x, dtype=np.float64))), 1e-20))

    n = len(wav) // win
    frames = wav[: n * win].reshape(n, win) if n else wav[None]
    loudest = max(db(f) for f in frames)
    return loudest, db(wav[-win:])


def speech_segments(wav16: np.ndarray) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` speech samples at 16 kHz by silero-vad (its default thresholds)."""
    import torch
    from silero_vad import get_speech_timestamps

    from qwen_tts_ext.prep.audio import _silero

    with torch.no_grad():
        stamps = get_speech_timestamps(torch.from_numpy(np.ascontiguousarray(wav16, dtype=np.float32)), _silero(),
                                       sampling_rate=SAMPLE_RATE)
    return [(int(s["start"]), int(s["end"])) for s in stamps]


class Timing(Judge):
    name = "timing"
    metrics = (
        Metric("speech_seconds", "target", "seconds of speech (silero-vad)", "espeak-ng 2.2-3.5 s for a 9-12 word sentence"),
        Metric("speaking_rate", "target", "characters of the text per second of speech",
               "espeak-ng at 160 words/min 11.7-16.1 (120 wpm: 9-12, 240 wpm: 17-22)"),
        Metric("lead_silence", "lower", "seconds of silence before the first speech", "espeak-ng 0-0.1 s"),
        Metric("trail_silence", "target", "seconds of silence after the last speech (0: runs into the end)",
               "espeak-ng 0.15-0.29 s"),
        Metric("truncated", "lower", "1 when speech runs into the end of the buffer (cut mid-word), else 0", "0"),
        Metric("duration_ratio", "target", "clip seconds / the text's expected seconds (synthesis.bounds)",
               "espeak-ng at 160 words/min 0.75-1.0; above 2 means more than twice the slow estimate"),
        Metric("stopped_by_eos", "higher", "generated audio: 1 = stopped by EOS, 0 = stopped by the frame cap", "1"),
    )
    package = "silero-vad"
    requires = ("silero_vad",)
    install = "pip install silero-vad==6.2.3"
    skips = "speaking rate, silences and truncation"

    def __init__(self, threads: int | None = 1):
        self.threads = threads

    def load(self) -> None:
        from qwen_tts_ext.prep.audio import _silero

        with torch_threads(None):  # importing silero_vad calls torch.set_num_threads(1): put the count back
            _silero()

    def score(self, clips):
        with torch_threads(self.threads):
            return super().score(clips)

    def _score(self, clip: Clip) -> dict[str, float | None]:
        from qwen_tts_ext.synthesis.bounds import expected_seconds

        row: dict[str, float | None] = {}
        eos = clip.meta.get("stopped_by_eos") if clip.meta else None
        row["stopped_by_eos"] = None if eos is None else float(bool(eos))
        expected = expected_seconds(clip.text) if clip.text else 0.0
        row["duration_ratio"] = clip.seconds / expected if expected > 0 else None
        wav = resample(clip.audio, clip.sample_rate, SAMPLE_RATE)
        if len(wav) < MIN_SECONDS * SAMPLE_RATE:
            return row
        segments = speech_segments(wav)
        speech = sum(e - s for s, e in segments) / SAMPLE_RATE
        row["speech_seconds"] = speech
        if not segments:
            return row
        chars = text_characters(clip.text) if clip.text else 0
        row["speaking_rate"] = chars / speech if chars and speech > 0 else None
        row["lead_silence"] = segments[0][0] / SAMPLE_RATE
        tail = (len(wav) - segments[-1][1]) / SAMPLE_RATE
        row["trail_silence"] = tail
        loudest, last = _window_db(wav, int(END_WINDOW * SAMPLE_RATE))
        row["truncated"] = float(tail <= END_SECONDS and last >= loudest - END_LEVEL_DB)
        return row
