"""Session fixtures: tiny checkpoints and an espeak-ng corpus, built once per test session (never committed)."""

from __future__ import annotations

import os
import tempfile
import warnings

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# blends in tests keep their sha256 cache in a throw-away folder, not in ~/.cache
os.environ.setdefault("QWEN_TTS_EXT_CACHE", tempfile.mkdtemp(prefix="qwen-tts-ext-test-cache-"))
warnings.filterwarnings("ignore", message=".*flash-attn.*")


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    """A tiny Qwen3-TTS Base checkpoint, 1.7B-like (text_hidden == hidden)."""
    from qwen_tts_ext.testing.tiny_checkpoint import TinySpec, build_tiny_tts

    return build_tiny_tts(tmp_path_factory.mktemp("ckpt") / "tiny-base", TinySpec(), seed=0)


@pytest.fixture(scope="session")
def tiny_base_06b(tmp_path_factory):
    """A tiny Base checkpoint, 0.6B-like (text_hidden != hidden, so text_projection matters)."""
    from qwen_tts_ext.testing.tiny_checkpoint import TinySpec, build_tiny_tts

    return build_tiny_tts(tmp_path_factory.mktemp("ckpt") / "tiny-base-06b", TinySpec(variant="0.6b"), seed=0)


@pytest.fixture(scope="session")
def tiny_custom_voice(tmp_path_factory):
    """A tiny CustomVoice checkpoint with built-in speakers 'vivian' (3065) and 'ryan' (3061)."""
    from qwen_tts_ext.testing.tiny_checkpoint import TinySpec, build_tiny_tts

    return build_tiny_tts(
        tmp_path_factory.mktemp("ckpt") / "tiny-cv", TinySpec(tts_model_type="custom_voice"), seed=0
    )


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory, tiny_base):
    """A tiny Qwen3ForCausalLM with the FFN shapes of ``tiny_base``."""
    from qwen_tts_ext.testing.tiny_checkpoint import build_tiny_llm

    return build_tiny_llm(tmp_path_factory.mktemp("ckpt") / "tiny-llm", tiny_base, seed=1)


@pytest.fixture(scope="session")
def espeak_corpus(tmp_path_factory):
    """Manifest path of a small real-speech corpus: 2 speakers x 3 English clips at 22.05 kHz."""
    from qwen_tts_ext.testing.speech import espeak_available, make_corpus

    if not espeak_available():
        warnings.warn("espeak-ng unavailable: corpus falls back to synthetic voiced signals")
    return make_corpus(tmp_path_factory.mktemp("corpus"), speakers=("alice", "bob"), clips_per_speaker=3)
