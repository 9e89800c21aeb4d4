"""Test corpora for data preparation: real espeak-ng speech in several formats plus every kind of bad row."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

from qwen_tts_ext.testing.speech import LANGUAGE_VOICES, espeak_available, espeak_to_wav, synthetic_voice


def speak(text: str, path: Path, voice: str = "en-us", seed: int = 0) -> tuple[np.ndarray, int]:
    """Return (float32 mono, sr) of ``text`` spoken by espeak-ng (or a synthetic voice without it)."""
    path = Path(path)
    if espeak_available():
        espeak_to_wav(text, path, voice=voice)
        wav, sr = sf.read(str(path), dtype="float32")
        path.unlink()
        return wav, sr
    return synthetic_voice(text, seed=seed), 22050


def _resample(wav: np.ndarray, sr: int, target: int) -> np.ndarray:
    import soxr

    return soxr.resample(wav, sr, target).astype(np.float32)


# Expected outcome of every row of ``make_mixed_corpus``: reject reason, or None for kept.
def make_mixed_corpus(root: Path) -> tuple[Path, dict[int, str | None]]:
    """Write audio + ``manifest.jsonl`` under ``root``; return (manifest, {row: expected reject code or None}).

    Good rows: English 22.05 kHz wav, German 48 kHz *stereo* flac, French 16 kHz ogg, Spanish mp3,
    a clipped English clip (kept, with a clipping warning), a mixed-case speaker name and an ISO
    language code. Bad rows: missing file, corrupt file, 0-byte file, all-zero audio, NaN samples,
    too short, too long, empty text, punctuation-only text, duplicate path, duplicate content
    under another name, unknown language.
    """
    root = Path(root)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    expect: dict[int, str | None] = {}

    def add(entry: dict, outcome: str | None):
        expect[len(rows)] = outcome
        rows.append(entry)

    en, sr_en = speak("The quick brown fox jumps over the lazy dog.", root / "t.wav", "en-us+f2", seed=1)
    sf.write(root / "audio/en_22k.wav", en, sr_en)
    add({"audio": "audio/en_22k.wav", "text": "The quick brown fox jumps over the lazy dog.", "speaker": "Alice",
         "language": "en"}, None)

    de, sr_de = speak("Guten Morgen, wie geht es dir heute?", root / "t.wav", LANGUAGE_VOICES["german"] + "+m3", seed=2)
    de48 = _resample(de, sr_de, 48000)
    stereo = np.stack([de48, 0.5 * de48], axis=1)
    sf.write(root / "audio/de_48k_stereo.flac", stereo, 48000, subtype="PCM_24")
    add({"audio": "audio/de_48k_stereo.flac", "text": "Guten Morgen, wie geht es dir heute?", "speaker": "bob",
         "language": "german"}, None)

    fr, sr_fr = speak("Bonjour, comment allez-vous aujourd'hui?", root / "t.wav", LANGUAGE_VOICES["french"] + "+f2", seed=3)
    sf.write(root / "audio/fr_16k.ogg", _resample(fr, sr_fr, 16000), 16000, format="OGG", subtype="VORBIS")
    add({"audio": "audio/fr_16k.ogg", "text": "Bonjour, comment allez-vous aujourd'hui?", "speaker": "alice",
         "language": "French", "instruct": "cheerful"}, None)

    es, sr_es = speak("Buenos días, el tren sale a las ocho.", root / "t.wav", LANGUAGE_VOICES["spanish"] + "+m3", seed=4)
    sf.write(root / "audio/es_44k.mp3", _resample(es, sr_es, 44100), 44100, format="MP3")
    add({"audio": "audio/es_44k.mp3", "text": "Buenos días, el tren sale a las ocho.", "speaker": "BOB",
         "language": "spanish"}, None)

    loud = np.clip(en * 8.0, -1.0, 1.0)
    sf.write(root / "audio/en_clipped.wav", loud, sr_en)
    add({"audio": "audio/en_clipped.wav", "text": "A clipped but usable recording.", "speaker": "alice"}, None)

    add({"audio": "audio/does_not_exist.wav", "text": "Missing.", "speaker": "alice"}, "missing_file")
    (root / "audio/corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage" + bytes(range(200)))
    add({"audio": "audio/corrupt.wav", "text": "Corrupt.", "speaker": "alice"}, "unreadable")
    (root / "audio/empty.wav").write_bytes(b"")
    add({"audio": "audio/empty.wav", "text": "Empty file.", "speaker": "alice"}, "empty_audio")
    sf.write(root / "audio/silent.wav", np.zeros(sr_en * 2, dtype=np.float32), sr_en)
    add({"audio": "audio/silent.wav", "text": "Silence.", "speaker": "alice"}, "silent")
    nan = en.copy()
    nan[1000:1010] = np.nan
    sf.write(root / "audio/nan.wav", nan, sr_en, subtype="FLOAT")
    add({"audio": "audio/nan.wav", "text": "Not a number.", "speaker": "alice"}, "nan_or_inf")
    sf.write(root / "audio/short.wav", en[: int(0.3 * sr_en)], sr_en)
    add({"audio": "audio/short.wav", "text": "Short.", "speaker": "alice"}, "too_short")
    sf.write(root / "audio/long.wav", np.concatenate([en, en, en]), sr_en)  # ~9-10 s; tests use max_seconds=8
    add({"audio": "audio/long.wav", "text": "Long.", "speaker": "alice"}, "too_long")
    add({"audio": "audio/en_22k.wav", "text": "   ", "speaker": "alice"}, "empty_text")
    add({"audio": "audio/de_48k_stereo.flac", "text": "... !!", "speaker": "bob"}, "non_text")
    add({"audio": "audio/en_22k.wav", "text": "The same path again.", "speaker": "alice"}, "duplicate")
    shutil.copy(root / "audio/de_48k_stereo.flac", root / "audio/copy_of_de.flac")
    add({"audio": "audio/copy_of_de.flac", "text": "Same content, other name.", "speaker": "bob"}, "duplicate")
    add({"audio": "audio/fr_16k.ogg", "text": "Unknown language.", "speaker": "alice", "language": "klingon"},
        "bad_language")
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return manifest, expect


def make_ref_corpus(root: Path, n: int = 4) -> Path:
    """Two speakers; alice's rows name two reference clips (ref_audio), bob's name none."""
    root = Path(root)
    (root / "wavs").mkdir(parents=True, exist_ok=True)
    texts = ["We will meet again when the morning comes.", "Please call Stella and ask her to bring these things.",
             "She sells sea shells by the sea shore.", "A rainbow is a division of white light."]
    rows = []
    for spk, voice in (("alice", "en-us+f2"), ("bob", "en-us+m3")):
        for i in range(n):
            wav, sr = speak(texts[i % len(texts)], root / "t.wav", voice, seed=i)
            sf.write(root / f"wavs/{spk}_{i}.wav", wav, sr)
            row = {"audio": f"wavs/{spk}_{i}.wav", "text": texts[i % len(texts)], "speaker": spk}
            if spk == "alice":
                row["ref_audio"] = f"wavs/alice_ref_{i % 2}.wav"
            rows.append(row)
    for j in range(2):
        wav, sr = speak(f"This is reference number {j + 1}.", root / "t.wav", "en-us+f2", seed=10 + j)
        sf.write(root / f"wavs/alice_ref_{j}.wav", wav, sr)
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return manifest


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
