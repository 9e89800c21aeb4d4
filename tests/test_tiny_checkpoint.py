"""The tiny-checkpoint factory builds folders the *stock* qwen_tts loader accepts and that behave like the real ones."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open

from qwen_tts_ext import constants as C
from qwen_tts_ext.testing.tiny_checkpoint import TinySpec, build_tiny_tts


def _load(path):
    from qwen_tts import Qwen3TTSModel

    return Qwen3TTSModel.from_pretrained(str(path), dtype=torch.float32)


def test_base_loads_and_voice_clone_xvector_returns_finite_audio(tiny_base):
    tts = _load(tiny_base)
    assert tts.model.tts_model_type == "base"
    assert tts.model.speaker_encoder is not None
    ref = (0.1 * np.sin(2 * np.pi * 180 * np.arange(C.SAMPLE_RATE) / C.SAMPLE_RATE)).astype(np.float32)
    torch.manual_seed(0)
    wavs, sr = tts.generate_voice_clone(
        text="Hello there.", language="English", ref_audio=(ref, C.SAMPLE_RATE), x_vector_only_mode=True,
        max_new_tokens=12,
    )
    assert sr == C.SAMPLE_RATE
    assert wavs[0].ndim == 1 and wavs[0].size > 0 and wavs[0].size % C.SAMPLES_PER_FRAME == 0
    assert np.isfinite(wavs[0]).all()
    assert 0.0 < np.abs(wavs[0]).max() <= 1.0


def test_custom_voice_loads_and_speaks_builtin_speaker(tiny_custom_voice):
    tts = _load(tiny_custom_voice)
    assert tts.model.tts_model_type == "custom_voice"
    assert tts.get_supported_speakers() == ["ryan", "vivian"]
    torch.manual_seed(0)
    wavs, sr = tts.generate_custom_voice(text="Hi.", language="English", speaker="Vivian", max_new_tokens=8)
    assert sr == C.SAMPLE_RATE and np.isfinite(wavs[0]).all() and wavs[0].size > 0


def test_speech_tokenizer_round_trips_16_codebooks_at_1920_samples_per_frame(tiny_base, espeak_corpus):
    import soundfile as sf
    import soxr
    from qwen_tts import Qwen3TTSTokenizer

    tok = Qwen3TTSTokenizer.from_pretrained(str(tiny_base / "speech_tokenizer"))
    audio, sr = sf.read(espeak_corpus.parent / "wavs" / "alice_english_000.wav", dtype="float32")
    audio = soxr.resample(audio, sr, C.SAMPLE_RATE)
    codes = tok.encode(audio, sr=C.SAMPLE_RATE).audio_codes[0]
    frames = -(-audio.size // C.SAMPLES_PER_FRAME)
    assert tuple(codes.shape) == (frames, C.NUM_CODE_GROUPS)
    assert int(codes.min()) >= 0 and int(codes.max()) < C.CODEBOOK_SIZE
    # Real speech spreads over many codes: random codebooks are not degenerate (all-zero codebooks give one code).
    assert codes[:, 0].unique().numel() > 3
    wavs, out_sr = tok.decode([{"audio_codes": codes}])
    assert out_sr == C.SAMPLE_RATE
    assert wavs[0].shape[0] == frames * C.SAMPLES_PER_FRAME
    assert 0.01 < float(np.std(wavs[0])) < 0.9  # audible, not clipped to a square wave
    again = tok.encode(audio, sr=C.SAMPLE_RATE).audio_codes[0]
    assert torch.equal(codes, again)


def test_variants_have_the_released_shape_relations(tiny_base, tiny_base_06b):
    big = json.loads((tiny_base / "config.json").read_text())
    small = json.loads((tiny_base_06b / "config.json").read_text())
    assert big["talker_config"]["text_hidden_size"] == big["talker_config"]["hidden_size"]
    assert small["talker_config"]["text_hidden_size"] != small["talker_config"]["hidden_size"]
    assert small["tts_model_size"] == "0b6" and isinstance(big["tts_model_size"], str)
    for cfg in (big, small):
        t = cfg["talker_config"]
        assert t["vocab_size"] == C.CODEC_VOCAB_SIZE
        assert t["codec_eos_token_id"] == 2150 and t["codec_pad_id"] == 2148 and t["codec_bos_id"] == 2149
        assert t["codec_language_id"]["english"] == 2050
        assert sum(t["rope_scaling"]["mrope_section"]) == t["head_dim"] // 2
        assert "model_type" not in cfg["speaker_encoder_config"]
    with safe_open(str(tiny_base_06b / "model.safetensors"), "pt") as f:
        w = f.get_tensor("talker.text_projection.linear_fc2.weight")
        assert tuple(w.shape) == (small["talker_config"]["hidden_size"], small["talker_config"]["text_hidden_size"])


def test_06b_checkpoint_speaks(tiny_base_06b):
    tts = _load(tiny_base_06b)
    ref = (0.1 * np.random.default_rng(0).standard_normal(C.SAMPLE_RATE)).astype(np.float32)
    wavs, _ = tts.generate_voice_clone(text="Hello.", language="English", ref_audio=(ref, C.SAMPLE_RATE),
                                       x_vector_only_mode=True, max_new_tokens=8)
    assert np.isfinite(wavs[0]).all()


def test_prompt_tokenisation_matches_the_positions_qwen_tts_slices(tiny_base):
    tts = _load(tiny_base)
    ids = tts.processor(text="<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>assistant\n")["input_ids"][0]
    cfg = json.loads((tiny_base / "config.json").read_text())
    assert ids[0] == cfg["im_start_token_id"] and ids[2] == ids[-1]  # "\n" is one token
    assert ids[-5] == cfg["im_end_token_id"] and ids[-3] == cfg["im_start_token_id"]
    assert tts.processor.tokenizer.decode(ids[3:-5]) == "Hello."


def test_generation_is_deterministic_for_a_seed(tmp_path):
    a = build_tiny_tts(tmp_path / "a", TinySpec(), seed=7)
    b = build_tiny_tts(tmp_path / "b", TinySpec(), seed=7)
    c = build_tiny_tts(tmp_path / "c", TinySpec(), seed=8)
    for sub in ("model.safetensors", "speech_tokenizer/model.safetensors"):
        with safe_open(str(a / sub), "pt") as fa, safe_open(str(b / sub), "pt") as fb:
            assert all(torch.equal(fa.get_tensor(k), fb.get_tensor(k)) for k in fa.keys())
    with safe_open(str(a / "model.safetensors"), "pt") as fa, safe_open(str(c / "model.safetensors"), "pt") as fc:
        k = "talker.model.layers.0.mlp.up_proj.weight"
        assert not torch.equal(fa.get_tensor(k), fc.get_tensor(k))


def test_llm_matches_talker_ffn_shapes(tiny_base, tiny_llm):
    with safe_open(str(tiny_base / "model.safetensors"), "pt") as ft, safe_open(str(tiny_llm / "model.safetensors"), "pt") as fl:
        n_layers = json.loads((tiny_base / "config.json").read_text())["talker_config"]["num_hidden_layers"]
        for n in range(n_layers):
            for proj in ("gate_proj", "up_proj", "down_proj"):
                assert ft.get_slice(f"talker.model.layers.{n}.mlp.{proj}.weight").get_shape() == \
                    fl.get_slice(f"model.layers.{n}.mlp.{proj}.weight").get_shape()


def test_seed_0_tiny_weights_are_pinned(tiny_base):
    """The tiny factory's weights are a contract: every test's numbers rest on them. Builds share
    config builders with the released shapes (qwen_tts_ext/released.py); a change there that moved
    a tiny weight would show here. (Update the hash only for an intended change of the tiny models.)"""
    import hashlib

    digest = hashlib.sha256((tiny_base / "model.safetensors").read_bytes()).hexdigest()
    assert digest == "bd4e5afadce81333fa088cff584bce6c916b2a827c1c56d29a4e800af618b877"


def test_cli_refuses_tiny_dimensions_with_a_released_shape(tmp_path, capsys):
    from qwen_tts_ext.cli import main as cli_main
    from qwen_tts_ext.testing.tiny_checkpoint import main

    out = tmp_path / "x"
    assert main(["tts", str(out), "--shape", "0.6b", "--hidden-size", "32"]) == 2
    assert "--hidden-size" in capsys.readouterr().err
    assert cli_main(["make-tiny", "tts", str(out), "--shape", "1.7b", "--variant", "0.6b"]) == 2
    assert "--variant" in capsys.readouterr().err
    assert main(["tts", str(out), "--shape", "0.6b", "--layers", "29"]) == 2
    assert "layers" in capsys.readouterr().err
    assert not out.exists()


def test_cli_builds_and_refuses_to_clobber(tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "qwen_tts_ext.testing.tiny_checkpoint", "tts", str(out), "--type", "custom_voice"]
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    assert (out / "speech_tokenizer" / "preprocessor_config.json").is_file()
    again = subprocess.run(cmd, capture_output=True, text=True)
    # the output policy (qwen_tts_ext.outputs): a previous make-tiny folder is replaced only with --overwrite
    assert again.returncode == 2 and "--overwrite" in again.stderr and "Traceback" not in again.stderr
