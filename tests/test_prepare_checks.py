"""Data-prep row checks: synthesis tag markup in transcripts (``text_tags``), truncated WAV files, and
duration checked before silence. All through ``--dry-run`` (decode + validate, no model needed) or the
no-I/O ``plan_rows``."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from _prep_helpers import read_jsonl
from qwen_tts_ext.prep import PrepareConfig, prepare
from qwen_tts_ext.prep.config import NON_IDENTITY_FIELDS
from qwen_tts_ext.prep.manifest import ManifestRow
from qwen_tts_ext.prep.rows import plan_rows
from qwen_tts_ext.synthesis.tags import TAG_PATTERN, parse_script

SR = 24000


def _tone(path: Path, seconds: float, amplitude: float = 0.3, freq: float = 300.0, sr: int = SR) -> Path:
    t = np.arange(int(round(seconds * sr))) / sr
    sf.write(path, (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr, subtype="PCM_16")
    return path


def _dry_run(tmp_path: Path, rows: list[dict], name: str = "out", **settings) -> tuple[list[dict], dict, dict]:
    """Dry-run ``rows`` (audio paths relative to ``tmp_path``); return (rejects, stats, prepare_config)."""
    manifest = tmp_path / f"{name}.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = prepare(PrepareConfig(manifest=str(manifest), output=str(tmp_path / name), dry_run=True, progress=False,
                                **settings))
    return (read_jsonl(out / "rejects.jsonl"), json.loads((out / "stats.json").read_text()),
            json.loads((out / "prepare_config.json").read_text()))


def _plan_text(text: str, text_tags: str):
    row = ManifestRow(row=0, audio="/clip.wav", audio_path="/clip.wav", text=text)
    return plan_rows([row], PrepareConfig(text_tags=text_tags), {"english"})[0]


# --------------------------------------------------------------------------- transcript tag markup


def test_tag_pattern_finds_the_tags_parse_script_reads():
    for script in ("[Whispering] Don't wake him. [Angry] Why would you do that? [Excited] We won!",
                   "Before any tag [Sad] after", r"no tags \[literal\] here", "[ Very  sad ] ok"):
        found = [" ".join(m.group(1).split()) for m in TAG_PATTERN.finditer(script)]
        assert found == [s.tag for s in parse_script(script) if s.tag is not None]


def test_markup_in_text_rejected_by_default(tmp_path):
    _tone(tmp_path / "a.wav", 1.0, freq=300)
    _tone(tmp_path / "b.wav", 1.0, freq=400)
    _tone(tmp_path / "c.wav", 1.0, freq=500)
    rejects, stats, _ = _dry_run(tmp_path, [{"audio": "a.wav", "text": "[Whispering] Don't wake him."},
                                            {"audio": "b.wav", "text": "[Angry]"},
                                            {"audio": "c.wav", "text": "A plain transcript."}])
    assert [(r["row"], r["reason"]) for r in rejects] == [(0, "markup_in_text"), (1, "markup_in_text")]
    assert "[Whispering]" in rejects[0]["message"] and "text_tags=strip" in rejects[0]["message"]
    assert "text_tags=keep" in rejects[0]["message"] and "[Angry]" in rejects[1]["message"]
    assert stats["kept"] == 1 and stats["rejected_by_reason"] == {"markup_in_text": 2}


def test_strip_mode_keeps_the_row_without_its_tags(tmp_path):
    plan = _plan_text("[Whispering]  Don't wake him.[Angry]Why would  you?", "strip")
    assert plan.reject is None and plan.text == "Don't wake him. Why would you?"
    assert _plan_text(r"A \[literal\] bracket.", "strip").text == r"A \[literal\] bracket."  # escaped: not a tag
    _tone(tmp_path / "a.wav", 1.0)
    rejects, stats, meta = _dry_run(tmp_path, [{"audio": "a.wav", "text": "[Whispering] Don't wake him."}],
                                    text_tags="strip")
    assert rejects == [] and stats["kept"] == 1
    assert meta["identity"]["config"]["text_tags"] == "strip"


def test_tags_only_transcript_in_strip_mode_is_empty_text(tmp_path):
    _tone(tmp_path / "a.wav", 1.0)
    rejects, stats, _ = _dry_run(tmp_path, [{"audio": "a.wav", "text": " [Angry] [Excited] "}], text_tags="strip")
    assert [r["reason"] for r in rejects] == ["empty_text"] and stats["kept"] == 0
    assert "[Angry]" in rejects[0]["message"]


def test_keep_mode_keeps_the_text_verbatim(tmp_path):
    plan = _plan_text("[Whispering] Don't wake him.", "keep")
    assert plan.reject is None and plan.text == "[Whispering] Don't wake him."
    assert _plan_text("[Angry]", "keep").text == "[Angry]"
    _tone(tmp_path / "a.wav", 1.0)
    rejects, stats, _ = _dry_run(tmp_path, [{"audio": "a.wav", "text": "[Angry]"}], text_tags="keep")
    assert rejects == [] and stats["kept"] == 1


def test_text_tags_is_part_of_the_dataset_fingerprint(tmp_path):
    assert "text_tags" not in NON_IDENTITY_FIELDS
    _tone(tmp_path / "a.wav", 1.0)
    rows = [{"audio": "a.wav", "text": "Hello."}]
    prints = {mode: _dry_run(tmp_path, rows, name=f"o_{mode}", text_tags=mode)[2]["fingerprint"]
              for mode in ("reject", "strip", "keep")}
    assert len(set(prints.values())) == 3


# --------------------------------------------------------------------------- truncated WAV files


def test_truncated_wav_is_rejected_as_truncated(tmp_path):
    full = _tone(tmp_path / "full.wav", 3.48).read_bytes()  # 16-bit mono 24 kHz: 48000 bytes/s
    assert full[36:40] == b"data" and len(full) == 44 + 167040
    (tmp_path / "cut.wav").write_bytes(full[:44 + 60])
    # streaming writers leave the size unknown (0xFFFFFFFF): that promises nothing, so it is not truncation
    unknown = bytearray(full)
    unknown[40:44] = struct.pack("<I", 0xFFFFFFFF)
    (tmp_path / "stream.wav").write_bytes(bytes(unknown))
    _tone(tmp_path / "other.wav", 1.0, freq=500)
    rejects, stats, _ = _dry_run(tmp_path, [{"audio": "cut.wav", "text": "Cut short."},
                                            {"audio": "stream.wav", "text": "Streamed."},
                                            {"audio": "other.wav", "text": "Complete."}])
    assert [(r["row"], r["reason"]) for r in rejects] == [(0, "truncated")]
    assert "header promises 3.48 s of audio but the file holds 0.00 s" in rejects[0]["message"]
    assert stats["kept"] == 2


# --------------------------------------------------------------------------- duration before silence


@pytest.mark.parametrize("amplitude", [0.3, 0.0005], ids=["loud", "quiet"])  # 0.0005 peak ~ -69 dBFS RMS
def test_50ms_tone_is_too_short_even_when_quiet(tmp_path, amplitude):
    _tone(tmp_path / "blip.wav", 0.05, amplitude=amplitude)
    rejects, _, _ = _dry_run(tmp_path, [{"audio": "blip.wav", "text": "Blip."}])
    assert [r["reason"] for r in rejects] == ["too_short"]


@pytest.mark.parametrize("trim", ["none", "energy"])
def test_2s_digital_silence_is_silent(tmp_path, trim):
    sf.write(tmp_path / "silence.wav", np.zeros(2 * SR, dtype=np.float32), SR)
    # a silent clip with one faint burst (-65 dBFS): energy trimming alone would cut it to ~0.2 s
    faint = np.zeros(2 * SR, dtype=np.float32)
    faint[SR: SR + SR // 50] = 0.0008 * np.sin(2 * np.pi * 300 * np.arange(SR // 50) / SR)
    sf.write(tmp_path / "faint.wav", faint, SR, subtype="FLOAT")
    rejects, _, _ = _dry_run(tmp_path, [{"audio": "silence.wav", "text": "Nothing."},
                                        {"audio": "faint.wav", "text": "Almost nothing."}], trim=trim)
    assert [r["reason"] for r in rejects] == ["silent", "silent"]
