"""Real speech for tests and the demo, made at run time with Debian's ``espeak-ng``.

Nothing generated here is committed. Where ``espeak-ng`` is missing, ``make_corpus`` falls back to
synthetic voiced signals (a glottal pulse train through formant resonators) and says so: those are
speech-like enough to exercise every code path, but they are not speech.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# espeak-ng voice variants that sound like different people; the language is the voice prefix.
SPEAKER_VOICES = {
    "alice": "+f2",
    "bob": "+m3",
    "carol": "+f4",
    "dave": "+m7",
}

LANGUAGE_VOICES = {  # qwen_tts language name -> espeak-ng voice
    "english": "en-us",
    "german": "de",
    "french": "fr",
    "spanish": "es",
    "italian": "it",
    "portuguese": "pt",
    "russian": "ru",
    "korean": "ko",
    "japanese": "ja",
    "chinese": "cmn",
}

SENTENCES = {
    "english": [
        "The quick brown fox jumps over the lazy dog.",
        "Please call Stella and ask her to bring these things.",
        "A rainbow is a division of white light into many beautiful colors.",
        "She sells sea shells by the sea shore every summer.",
        "We will meet again when the morning comes.",
        "Every clip in this corpus was spoken by a machine.",
    ],
    "german": ["Guten Morgen, wie geht es dir heute?", "Der Zug fährt um acht Uhr ab."],
    "french": ["Bonjour, comment allez-vous aujourd'hui?", "Le train part à huit heures."],
    "spanish": ["Buenos días, ¿cómo estás hoy?", "El tren sale a las ocho."],
    "korean": ["안녕하세요, 오늘 기분이 어떠세요?", "기차는 여덟 시에 출발합니다."],
    "japanese": ["こんにちは、今日はいい天気ですね。", "電車は八時に出発します。"],
    "chinese": ["你好，今天天气很好。", "火车八点出发。"],
}


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def espeak_to_wav(text: str, out_path: str | Path, voice: str = "en-us", speed: int = 165, pitch: int = 50) -> Path:
    """Speak ``text`` into a 22.05 kHz mono WAV at ``out_path`` with espeak-ng."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(out_path), text],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return out_path


def synthetic_voice(text: str, sample_rate: int = 22050, f0: float = 120.0, seed: int = 0) -> np.ndarray:
    """A speech-like stand-in: voiced syllables (pulse train + formants) with pauses, ~70 ms per character."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    n = int(sample_rate * max(0.6, 0.07 * len(text)))
    t = np.arange(n) / sample_rate
    f0_track = f0 * (1 + 0.08 * np.sin(2 * np.pi * 0.7 * t))
    phase = np.cumsum(f0_track / sample_rate)
    pulses = (np.diff(np.floor(phase), prepend=0) > 0).astype(np.float64)
    sig = pulses
    for formant, bw in ((700, 130), (1220, 70), (2600, 160)):
        r = np.exp(-np.pi * bw / sample_rate)
        theta = 2 * np.pi * formant / sample_rate
        sig = sig + lfilter([1 - r], [1, -2 * r * np.cos(theta), r * r], pulses)
    syll = 0.5 * (1 - np.cos(2 * np.pi * 4.0 * t)) * (rng.random() * 0.2 + 0.8)
    sig = sig * syll + 0.003 * rng.standard_normal(n)
    return (0.3 * sig / (np.abs(sig).max() + 1e-9)).astype(np.float32)


@dataclass
class CorpusClip:
    audio: str
    text: str
    speaker: str
    language: str


def make_corpus(
    out_dir: str | Path,
    speakers: tuple[str, ...] = ("alice",),
    clips_per_speaker: int = 4,
    languages: tuple[str, ...] = ("english",),
    allow_fallback: bool = True,
) -> Path:
    """Write WAVs and ``manifest.jsonl`` (audio, text, speaker, language) under ``out_dir``; return the manifest.

    Audio paths in the manifest are relative to its folder, as a user's manifest would be.
    """
    import soundfile as sf

    out_dir = Path(out_dir)
    (out_dir / "wavs").mkdir(parents=True, exist_ok=True)
    use_espeak = espeak_available()
    if not use_espeak:
        if not allow_fallback:
            raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)")
        warnings.warn("espeak-ng not found: the corpus uses synthetic voiced signals, not real speech", stacklevel=2)
    rows: list[CorpusClip] = []
    for s_idx, speaker in enumerate(speakers):
        variant = SPEAKER_VOICES.get(speaker, f"+m{(s_idx % 7) + 1}")
        k = 0
        for lang in languages:
            sentences = SENTENCES.get(lang, SENTENCES["english"])
            for i in range(clips_per_speaker):
                text = sentences[(i + s_idx) % len(sentences)]
                rel = f"wavs/{speaker}_{lang}_{k:03d}.wav"
                k += 1
                if use_espeak:
                    espeak_to_wav(text, out_dir / rel, voice=LANGUAGE_VOICES.get(lang, "en-us") + variant,
                                  speed=150 + 10 * (i % 3), pitch=35 + 12 * s_idx)
                else:
                    sf.write(out_dir / rel, synthetic_voice(text, f0=100 + 40 * s_idx, seed=k), 22050)
                rows.append(CorpusClip(audio=rel, text=text, speaker=speaker, language=lang))
    manifest = out_dir / "manifest.jsonl"
    with open(manifest, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r.__dict__, ensure_ascii=False) + "\n")
    return manifest
