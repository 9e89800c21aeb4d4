"""The README's first command runs scripts/demo.py: every stage must run for real and leave 24 kHz WAVs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import soundfile as sf

REPO = Path(__file__).resolve().parents[1]


def test_demo_runs_every_stage_and_writes_wavs_and_report(tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py"), "--out", str(out), "--steps", "10"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert [s["status"] for s in report["stages"]] == ["ok"] * 8, report["stages"]
    assert (out / "report.md").is_file()
    assert report["wavs"] and all(sf.info(w).samplerate == 24000 for w in report["wavs"])
    speak = next(s for s in report["stages"] if s["stage"].startswith("7."))
    assert speak["result"]["voice_ids"] == ["speaker:alice"]  # one locked voice across all tagged segments
