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


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.gpu`` tests need CUDA: skipped (with the reason) where torch sees none."""
    gpu_tests = [item for item in items if "gpu" in item.keywords]
    if not gpu_tests:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
        for item in gpu_tests:
            item.add_marker(skip)


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


SYNTHETIC_ROWS = (  # (speaker, frames, text, instruct): six clips of two speakers, lengths 5..14 frames
    ("alice", 9, "Hello there, golden numbers.", None), ("bob", 6, "Hi.", None),
    ("alice", 14, "The quick brown fox jumps over the lazy dog.", "Speak softly."), ("bob", 11, "One, two, three.", None),
    ("alice", 5, "Yes.", None), ("bob", 12, "A fixed set of codes, written once.", None),
)


@pytest.fixture(scope="session")
def synthetic_prepared(tmp_path_factory, tiny_base):
    """A fixed prepared folder for ``tiny_base`` without audio: codes (``torch.Generator`` seed 0, in row order)
    and speaker vectors (seed 1, x 0.1, alice then bob) written through ``qwen_tts_ext.prepared``, so nothing in
    it depends on espeak-ng, the speech tokenizer or the speaker encoder. The golden CLI run trains on it."""
    import json

    import torch

    from qwen_tts_ext.prepared import save_speakers, write_meta, write_prepared

    folder = tmp_path_factory.mktemp("synthetic") / "prepared"
    folder.mkdir()
    hidden = json.loads((tiny_base / "config.json").read_text())["talker_config"]["hidden_size"]
    g = torch.Generator().manual_seed(0)
    records, codes = [], []
    for i, (speaker, frames, text, instruct) in enumerate(SYNTHETIC_ROWS):
        codes.append(torch.randint(0, 2048, (frames, 16), generator=g).numpy())
        records.append({"id": f"{i:06d}_{speaker}", "text": text, "num_frames": frames, "speaker": speaker,
                        "language": "english", "instruct": instruct, "duration": frames / 12.5,
                        "audio_path": f"audio/{i}.wav", "ref_audio": None})
    write_prepared(folder, records, codes, progress=False)
    g = torch.Generator().manual_seed(1)
    vectors = {name: (torch.randn(hidden, generator=g) * 0.1).numpy() for name in ("alice", "bob")}
    save_speakers(vectors, {name: [] for name in vectors}, folder)
    write_meta(folder, {"fingerprint": "synthetic", "dry_run": False, "config": {}, "identity": {}})
    return folder
