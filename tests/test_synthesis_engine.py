"""The segment generator on tiny checkpoints: voice, instructions, frame cap, EOS, seeds, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from qwen_tts_ext.constants import SAMPLES_PER_FRAME
from qwen_tts_ext.errors import UserError
from qwen_tts_ext.synthesis.engine import SynthesisOptions, Synthesizer
from qwen_tts_ext.synthesis.joining import joined_length, crossfade_samples
from _synthesis_helpers import GenerateSpy, force_eos_after, write_reference_wav

REPO = Path(__file__).resolve().parents[1]
SCRIPT = "[Whispering] Don't wake him. [Angry] Why would you do that? [Excited] We won!"
# short caps keep the tiny models fast: cap = ceil(12.5 * (0.5 * expected + 0.2)), >= 13 frames
FAST = dict(cap_margin=0.5, cap_slack_seconds=0.2)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    from _synthesis_helpers import single_thread

    with single_thread():
        yield


@pytest.fixture(scope="module")
def cv(tiny_custom_voice):
    return Synthesizer.load(tiny_custom_voice)


@pytest.fixture(scope="module")
def base(tiny_base):
    return Synthesizer.load(tiny_base)


def _decode(synth, ids: torch.Tensor) -> str:
    return synth.tts.processor.tokenizer.decode(ids[0].tolist())


def test_never_eos_model_stops_at_the_cap_and_is_reported(cv):
    voice = cv.voice(speaker="vivian")
    opts = SynthesisOptions(seed=0, **FAST)
    plan = cv.plan(SCRIPT, opts)
    with GenerateSpy(cv.model) as spy:
        result = cv.synthesize(SCRIPT, voice, opts)
    assert [c["max_new_tokens"] for c in spy.calls] == [p.frame_cap + 1 for p in plan]
    for seg, p in zip(result.segments, plan):
        assert seg.frame_cap == p.frame_cap
        assert seg.frames == p.frame_cap  # ran to the cap ...
        assert seg.stopped_by_eos is False  # ... and says so
        assert len(seg.audio) == seg.frames * SAMPLES_PER_FRAME
        assert seg.seconds == pytest.approx(seg.frames * SAMPLES_PER_FRAME / 24000)
        assert seg.rtf > 0
    assert len(result.cap_hits) == 3
    assert any("reached the frame cap without EOS" in w for w in result.warnings)
    k = crossfade_samples(opts.crossfade_ms, 24000)
    assert len(result.audio) == joined_length([len(s.audio) for s in result.segments], k)
    assert result.sample_rate == 24000 and result.audio.dtype == np.float32


def test_segment_that_emits_eos_is_marked_stopped(cv):
    voice = cv.voice(speaker="ryan")
    with force_eos_after(cv.model, 5):
        result = cv.synthesize("[Happy] Hello there, how are you today?", voice, SynthesisOptions(**FAST))
    (seg,) = result.segments
    assert seg.frames == 5 < seg.frame_cap
    assert seg.stopped_by_eos is True
    assert len(seg.audio) == 5 * SAMPLES_PER_FRAME
    assert not result.cap_hits and not any("frame cap" in w for w in result.warnings)


def test_same_locked_speaker_and_tag_instructions_in_every_segment(cv):
    voice = cv.voice(speaker="Vivian")
    with GenerateSpy(cv.model) as spy:
        segs = list(cv.generate("Intro. " + SCRIPT, voice, SynthesisOptions(**FAST)))
    assert [c["speakers"] for c in spy.calls] == [["vivian"]] * 4
    assert all(c.get("voice_clone_prompt") is None for c in spy.calls)
    assert {s.voice_id for s in segs} == {"speaker:vivian"}
    # untagged intro -> no instruction; tagged segments -> the emotions.yaml text in the user turn
    assert spy.calls[0]["instruct_ids"] == [None]
    emo = cv.emotions
    for call, tag in zip(spy.calls[1:], ("Whispering", "Angry", "Excited")):
        prompt = _decode(cv, call["instruct_ids"][0])
        assert prompt == f"<|im_start|>user\n{emo.resolve(tag).text}<|im_end|>\n"
    assert [s.instruction for s in segs[1:]] == [emo.resolve(t).text for t in ("Whispering", "Angry", "Excited")]
    texts = [_decode(cv, c["input_ids"][0]) for c in spy.calls]
    assert texts[1] == "<|im_start|>assistant\nDon't wake him.<|im_end|>\n<|im_start|>assistant\n"


def test_base_checkpoint_uses_one_xvector_for_every_segment(base, tmp_path):
    ref = write_reference_wav(tmp_path / "ref.wav")
    voice = base.voice(ref_audio=ref)
    assert voice.kind == "xvector" and voice.xvector.shape == (64,)
    with GenerateSpy(base.model) as spy:
        segs = list(base.generate(SCRIPT, voice, SynthesisOptions(**FAST)))
    vectors = [c["voice_clone_prompt"]["ref_spk_embedding"][0] for c in spy.calls]
    assert len(vectors) == 3
    for v in vectors:
        assert torch.equal(v.cpu(), voice.xvector)
    assert all(c["voice_clone_prompt"]["x_vector_only_mode"] == [True] for c in spy.calls)
    assert len({s.voice_id for s in segs}) == 1


def test_base_voice_from_speakers_file(base, tmp_path):
    from safetensors.torch import save_file

    f = tmp_path / "speakers.safetensors"
    save_file({"Alice": torch.randn(64), "bob": torch.randn(64), "wrong": torch.randn(32)}, str(f))
    voice = base.voice(speaker="alice", speakers_file=f)
    assert voice.name == "Alice" and voice.xvector.shape == (64,)
    with pytest.raises(UserError, match="unknown speaker 'carol'.*Alice, bob, wrong"):
        base.voice(speaker="carol", speakers_file=f)
    with pytest.raises(UserError, match="32 dims but this model expects 64"):
        base.voice(speaker="wrong", speakers_file=f)
    with pytest.raises(UserError, match="needs a voice"):
        base.voice()


def test_seed_per_segment_is_reproducible(cv):
    voice = cv.voice(speaker="vivian")
    script = "[Sad] One two. [Happy] Three four."
    a = cv.synthesize(script, voice, SynthesisOptions(seed=11, **FAST))
    b = cv.synthesize(script, voice, SynthesisOptions(seed=11, **FAST))
    c = cv.synthesize(script, voice, SynthesisOptions(seed=12, **FAST))
    assert [s.seed for s in a.segments] == [11, 12]
    np.testing.assert_array_equal(a.audio, b.audio)
    assert not np.array_equal(a.audio, c.audio)
    # segment 1 of seed 11 uses seed 12, like segment 0 of seed 12 -> the segment seed is seed+index
    single = cv.synthesize("[Happy] Three four.", voice, SynthesisOptions(seed=12, **FAST))
    np.testing.assert_array_equal(single.segments[0].audio, a.segments[1].audio)


def test_segments_are_yielded_one_at_a_time(cv):
    voice = cv.voice(speaker="vivian")
    with GenerateSpy(cv.model) as spy:
        gen = cv.generate(SCRIPT, voice, SynthesisOptions(**FAST))
        assert spy.calls == []  # validation only, nothing generated yet
        first = next(gen)
        assert len(spy.calls) == 1 and first.index == 0 and first.audio.size > 0
        rest = list(gen)
    assert len(spy.calls) == 3 and [s.index for s in rest] == [1, 2]


def test_bad_input_is_rejected_before_generation(cv):
    voice = cv.voice(speaker="ryan")
    with pytest.raises(UserError, match=r"unknown speaker 'bob'; this checkpoint has: ryan, vivian"):
        cv.voice(speaker="bob")
    with pytest.raises(UserError, match="choose a speaker"):
        cv.voice()
    with pytest.raises(UserError, match="drop the reference audio"):
        cv.voice(speaker="ryan", ref_audio="x.wav")
    with GenerateSpy(cv.model) as spy:
        for script, msg in (("", "empty"), ("[Angry Why?", "unbalanced"), ("[Angry] [Sad]", "no text")):
            with pytest.raises(UserError, match=msg):
                cv.generate(script, voice)
        with pytest.raises(UserError, match="unsupported language 'klingon'.*english"):
            cv.generate("Hi.", voice, SynthesisOptions(language="klingon"))
    assert spy.calls == []


def test_unknown_tag_is_used_verbatim_and_reported(cv):
    voice = cv.voice(speaker="ryan")
    warnings: list[str] = []
    with GenerateSpy(cv.model) as spy:
        (seg,) = list(cv.generate("[in a hushed, urgent tone] Run.", voice, SynthesisOptions(**FAST), warnings))
    assert seg.instruction == "in a hushed, urgent tone" and not seg.instruction_known
    assert _decode(cv, spy.calls[0]["instruct_ids"][0]) == "<|im_start|>user\nin a hushed, urgent tone<|im_end|>\n"
    assert warnings and "[in a hushed, urgent tone]" in warnings[0]


def test_06b_model_ignores_instructions_with_a_warning(tiny_base_06b, tmp_path):
    synth = Synthesizer.load(tiny_base_06b)
    assert synth.ignores_instructions
    voice = synth.voice(ref_audio=write_reference_wav(tmp_path / "ref.wav"))
    warnings: list[str] = []
    with GenerateSpy(synth.model) as spy:
        segs = list(synth.generate("[Angry] Go away.", voice, SynthesisOptions(**FAST), warnings))
    assert spy.calls[0]["instruct_ids"] == [None]
    assert segs[0].instruction_used is False and segs[0].instruction  # mapped, but not sent
    assert any("ignores instructions" in w for w in warnings)


# ----------------------------------------------------------------------------- CLI


def _run_cli(argv):
    from qwen_tts_ext.synthesis.cli import main

    return main(argv)


def test_cli_writes_wav_and_sidecar_and_reports_cap_hits(tiny_custom_voice, tmp_path, capsys):
    import soundfile as sf

    out_dir = tmp_path / "outputs"
    code = _run_cli(
        ["--model", str(tiny_custom_voice), "--speaker", "vivian", "--seed", "5", "--out-dir", str(out_dir),
         "cap_margin=0.5", "cap_slack_seconds=0.2", "[Sad] It is over. [Happy] Or is it?"]
    )
    assert code == 3  # tiny random models never emit EOS -> written, but a stop-signal failure
    err = capsys.readouterr().err
    assert "hit the frame cap without EOS" in err
    wavs = list(out_dir.glob("*.wav"))
    assert len(wavs) == 1 and wavs[0].name.endswith("-it-is-over-or-is.wav")
    audio, sr = sf.read(wavs[0])
    assert sr == 24000
    side = json.loads(wavs[0].with_suffix(".json").read_text())
    assert side["text"] == "[Sad] It is over. [Happy] Or is it?"
    assert side["seed"] == 5 and side["alpha"] == 0.0 and side["voice"]["id"] == "speaker:vivian"
    assert side["model"]["type"] == "custom_voice"
    assert [s["tag"] for s in side["segments"]] == ["Sad", "Happy"]
    assert [s["seed"] for s in side["segments"]] == [5, 6]
    assert all(s["stopped_by_eos"] is False and s["frames"] == s["frame_cap"] for s in side["segments"])
    assert side["all_stopped_by_eos"] is False
    assert len(audio) == round(side["seconds"] * 24000)
    assert not list(out_dir.glob(".*tmp"))  # no leftovers of the atomic write


def test_cli_allow_cap_hits_and_explicit_output(tiny_custom_voice, tmp_path):
    out = tmp_path / "x" / "speech.wav"
    code = _run_cli(["--model", str(tiny_custom_voice), "--speaker", "ryan", "-o", str(out), "--allow-cap-hits",
                     "--max-segment-seconds", "1", "--text", "Hello."])
    assert code == 0 and out.is_file() and out.with_suffix(".json").is_file()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--speaker", "bob", "Hi."], "unknown speaker 'bob'; this checkpoint has: ryan, vivian"),
        (["--speaker", "ryan", "[Angry Hi."], "unbalanced '['"),
        (["--speaker", "ryan", ""], "the script is empty"),
        (["--speaker", "ryan", "--language", "klingon", "Hi."], "unsupported language"),
        (["--speaker", "ryan", "--alpha", "0.03", "Hi."], "needs --llm"),
        (["--speaker", "ryan", "tempreature=0.5", "Hi."], "did you mean 'temperature'"),
        (["--speaker", "ryan", "--strict", "[zorg] Hi."], "not in the emotions file"),
    ],
)
def test_cli_user_errors_exit_2_with_one_line(tiny_custom_voice, tmp_path, capsys, args, fragment):
    code = _run_cli(["--model", str(tiny_custom_voice), "--out-dir", str(tmp_path)] + args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: ") and fragment in err[-1]
    assert not list(tmp_path.glob("*.wav"))


def test_cli_missing_model_is_a_user_error(tmp_path, capsys):
    assert _run_cli(["--model", str(tmp_path / "nope"), "Hi."]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_script_launcher_help_runs_from_repo_root():
    proc = subprocess.run([sys.executable, "scripts/synthesize.py", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0
    assert "--speaker" in proc.stdout and "emotion tags" in proc.stdout


def test_cli_runtime_blend_is_applied_and_recorded(tiny_base, tiny_llm, tmp_path):
    ref = write_reference_wav(tmp_path / "ref.wav")
    out = tmp_path / "blended.wav"
    code = _run_cli(["--model", str(tiny_base), "--ref-audio", str(ref), "--alpha", "0.03", "--llm", str(tiny_llm),
                     "-o", str(out), "--allow-cap-hits", "--max-segment-seconds", "1", "[Happy] Hi."])
    assert code == 0
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["alpha"] == 0.03 and side["llm"] == str(tiny_llm)
    assert side["blend"]["blended"] == 6  # 2 layers x gate/up/down
    assert side["voice"]["kind"] == "xvector" and side["voice"]["id"].startswith("xvector:ref:")
    assert any("Base checkpoints were not trained with instructions" in w for w in side["warnings"])


def test_runtime_blend_changes_generation_and_restores(cv, tiny_llm):
    """alpha > 0 changes the talker's output for the same seed; alpha 0 gives back the original."""
    voice = cv.voice(speaker="vivian")
    opts = SynthesisOptions(seed=3, **FAST)
    before = cv.synthesize("Hello.", voice, opts).audio
    try:
        info = cv.blend.set(0.05, tiny_llm)
        assert info["blended"] == 6 and cv.blend.alpha == 0.05
        blended = cv.synthesize("Hello.", voice, opts).audio
    finally:
        cv.blend.set(0.0, None)
    after = cv.synthesize("Hello.", voice, opts).audio
    assert not np.array_equal(before, blended)
    np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("launcher, expect", [("scripts/evaluate.py", "--alphas"), ("app.py", "--models-dir")])
def test_other_launchers_help_runs_from_repo_root(launcher, expect):
    proc = subprocess.run([sys.executable, launcher, "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert expect in proc.stdout
