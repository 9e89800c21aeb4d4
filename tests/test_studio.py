"""The studio: generation callback and CLI (no browser), and an end-to-end run in headless Chromium."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    from _synthesis_helpers import single_thread

    with single_thread():
        yield


def _settings(tmp_path, models, **kw):
    from qwen_tts_ext.synthesis.config import StudioConfig, SynthesisOptions

    return StudioConfig(models=[str(m) for m in models], output_dir=str(tmp_path / "out"),
                        synthesis=SynthesisOptions(max_segment_seconds=1.5), **kw)


def test_studio_run_streams_segments_and_saves_wav_with_sidecar(tiny_custom_voice, tmp_path):
    import soundfile as sf

    from qwen_tts_ext.studio import Studio, segment_rows, segment_table, waveform_image

    studio = Studio(_settings(tmp_path, [tiny_custom_voice]))
    steps = list(studio.run(str(tiny_custom_voice), "ryan", None, "english", "[Sad] It is over. [Happy] Or not!",
                            0.0, "", 4, 0.9, False))
    # start, one update per segment, final
    assert [len(s[1]) for s in steps] == [0, 1, 2, 2]
    lengths = [len(s[2]) for s in steps[1:3]]
    assert lengths[1] > lengths[0] > 0  # the playable result grows segment by segment
    status, segs, audio, sr, result, saved = steps[-1]
    assert status.startswith("**Done: 2/2") and "frame cap without EOS" in status
    wav, side = saved
    data, file_sr = sf.read(wav)
    assert file_sr == sr == 24000 and len(data) == len(audio)
    meta = json.loads(side.read_text())
    assert meta["source"] == "studio" and meta["seed"] == 4 and meta["language"] == "english"
    assert [s["tag"] for s in meta["segments"]] == ["Sad", "Happy"]
    rows = segment_rows(segs)
    assert rows[0][1] == "Sad" and rows[0][6] == "NO (cap)"
    table = segment_table(segs).splitlines()
    assert len(table) == 4 and "| 1 | Happy |" in table[3]
    img = waveform_image(audio, sr, segs)
    assert img.ndim == 3 and img.shape[2] == 3 and img.std() > 0


def test_stop_and_a_newer_run_end_a_run_between_segments_without_saving(tiny_custom_voice, tmp_path):
    from qwen_tts_ext.studio import Studio

    studio = Studio(_settings(tmp_path, [tiny_custom_voice]))
    path, script = str(tiny_custom_voice), "[Sad] It is over. [Happy] Or not! [Calm] Fine."
    args = ("ryan", None, "english", script, 0.0, "", 4, 0.9, False)
    run = studio.run(path, *args)
    assert len(next(run)[1]) == 0 and len(next(run)[1]) == 1  # started, one segment rendered
    studio.stop()
    rest = list(run)  # ends at the next segment boundary and says so
    assert len(rest) == 1 and rest[0][0].startswith("**Stopped after 1/3") and len(rest[0][1]) == 1
    assert rest[0][4] is None and rest[0][5] is None
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.wav"))
    # a newer run supersedes an older one that is still open; the newer one completes and saves
    old = studio.run(path, *args)
    next(old), next(old)
    steps = list(studio.run(path, *args))
    assert steps[-1][0].startswith("**Done: 3/3") and steps[-1][5] is not None
    assert [step[0].startswith("**Stopped after 1/3") for step in old] == [True]
    assert len(list((tmp_path / "out").glob("*.wav"))) == 1


def test_studio_model_info_and_errors(tiny_custom_voice, tiny_base, tmp_path):
    from qwen_tts_ext.errors import UserError
    from qwen_tts_ext.studio import Studio

    studio = Studio(_settings(tmp_path, [tiny_custom_voice, tiny_base]))
    cv = studio.model_info(str(tiny_custom_voice))
    assert cv["type"] == "custom_voice" and cv["speakers"] == ["ryan", "vivian"] and not cv["needs_reference"]
    assert "whispering" in cv["tags"] and "english" in cv["languages"]
    base = studio.model_info(str(tiny_base))
    assert base["type"] == "base" and base["needs_reference"]
    with pytest.raises(UserError, match="needs a voice"):
        list(studio.run(str(tiny_base), None, None, "auto", "Hi.", 0.0, "", 0, None, False))
    with pytest.raises(UserError, match="unbalanced"):
        list(studio.run(str(tiny_custom_voice), "ryan", None, "auto", "[Hi.", 0.0, "", 0, None, False))
    with pytest.raises(UserError, match="needs --llm"):
        list(studio.run(str(tiny_custom_voice), "ryan", None, "auto", "Hi.", 0.03, "", 0, None, False))


def test_find_checkpoints_scans_models_dir(tiny_custom_voice, tiny_base, tmp_path):
    from qwen_tts_ext.studio import find_checkpoints
    from qwen_tts_ext.synthesis.config import StudioConfig

    root = tmp_path / "models"
    (root / "a").mkdir(parents=True)
    (root / "a" / "config.json").symlink_to(Path(tiny_base) / "config.json")
    (root / "not-a-model").mkdir()
    (root / "not-a-model" / "config.json").write_text('{"model_type": "qwen3"}')
    found = find_checkpoints(StudioConfig(models=[str(tiny_custom_voice)], models_dir=str(root)))
    assert found == [str(tiny_custom_voice), str(root / "a")]


@pytest.mark.parametrize(
    "args, fragment",
    [
        ([], "no checkpoints"),
        (["--model", "/no/such/dir"], "no such folder"),
        (["--models-dir", "/no/such/dir"], "does not exist"),
    ],
)
def test_studio_cli_user_errors(args, fragment, capsys):
    from qwen_tts_ext.studio import main

    assert main(args) == 2
    assert fragment in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"studio exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"studio did not answer on {url} within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.mark.browser
def test_studio_end_to_end_in_headless_chromium(tiny_custom_voice, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium) - browser test skipped")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright python package is not installed")
    import soundfile as sf

    t0 = time.monotonic()
    port, out = _free_port(), tmp_path / "studio-out"
    url = f"http://127.0.0.1:{port}/"
    log = tmp_path / "studio.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(REPO)}
    with open(log, "w") as log_f:
        proc = subprocess.Popen(
            [sys.executable, "app.py", "--model", str(tiny_custom_voice), "--output-dir", str(out),
             "--port", str(port), "--max-segment-seconds", "1.5"],
            cwd=REPO, env=env, stdout=log_f, stderr=subprocess.STDOUT,
        )
    screenshot = tmp_path / "studio.png"
    try:
        _wait_http(url, proc, log, timeout=50)
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1100})
                page.goto(url, wait_until="domcontentloaded")
                script = page.get_by_label("Script")
                script.wait_for(timeout=20_000)
                # the speaker list is filled from the checkpoint when the page loads
                page.wait_for_function("() => document.body.innerText.includes('custom_voice')", timeout=20_000)
                script.fill("[Whispering] Don't wake him. [Excited] We won!")
                page.get_by_role("button", name="Generate").click()
                page.get_by_text("Done: 2/2 segment(s)").wait_for(timeout=45_000)
                audio = page.locator("#result-audio audio[src]").first
                audio.wait_for(state="attached", timeout=10_000)
                src = audio.get_attribute("src")
                page.wait_for_function("a => a.duration > 0", arg=audio.element_handle(), timeout=10_000)
                duration = audio.evaluate("a => a.duration")
                body = page.request.get(src).body()
                table = page.locator("#segments").inner_text()
                page.screenshot(path=str(screenshot), full_page=True)
                # Stop: a long script ends after the segment in progress, nothing is saved, and the next
                # Generate works (the model is not left locked by the stopped run)
                script.fill(" ".join(f"[Calm] Sentence number {i}." for i in range(25)))
                page.get_by_role("button", name="Generate").click()
                page.get_by_text("Rendering: 1/25 segment(s)").wait_for(timeout=45_000)
                page.get_by_role("button", name="Stop").click()
                page.get_by_text("Stopped after").wait_for(timeout=45_000)
                script.fill("[Whispering] Again. [Excited] Yes!")
                page.get_by_role("button", name="Generate").click()
                page.get_by_text("Done: 2/2 segment(s)").wait_for(timeout=45_000)
            finally:
                browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(f"\nstudio screenshot: {screenshot}")

    assert body[:4] == b"RIFF" and body[8:12] == b"WAVE" and len(body) > 24000  # real audio, not an empty file
    assert "Whispering" in table and "Excited" in table
    wavs = sorted(out.glob("*.wav"), key=lambda p: p.stat().st_mtime)
    assert len(wavs) == 2, list(out.iterdir())  # the stopped run saved nothing
    data, sr = sf.read(wavs[0])
    assert sr == 24000 and len(data) > 0 and np.abs(data).max() > 0
    assert duration == pytest.approx(len(data) / sr, abs=0.1)
    side = json.loads(wavs[0].with_suffix(".json").read_text())
    assert [s["tag"] for s in side["segments"]] == ["Whispering", "Excited"]
    assert screenshot.stat().st_size > 10_000
    assert time.monotonic() - t0 < 150
