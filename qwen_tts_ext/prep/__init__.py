"""Data preparation: recordings + transcripts -> validated 24 kHz audio -> 12 Hz codes + speaker x-vectors.

    from qwen_tts_ext.prep import PrepareConfig, prepare
    out = prepare(PrepareConfig(manifest="data/manifest.jsonl", model="Qwen3-TTS-12Hz-1.7B-Base", output="prepared"))

Modules: :mod:`.audio` (decode/resample/validate/trim), :mod:`.manifest` (JSONL/CSV/HF readers),
:mod:`.encode` (length-bucketed tokenizer batches), :mod:`.speakers` (x-vectors), :mod:`.shards`
(resumable work), :mod:`.pipeline` (``prepare``), :mod:`.cli`.
"""

from typing import Any

from qwen_tts_ext.prep.config import PrepareConfig

__all__ = ["PrepareConfig", "prepare"]


def __getattr__(name: str) -> Any:  # ``prepare`` imports torch: only on first use, so --help stays fast
    if name == "prepare":
        from qwen_tts_ext.prep.pipeline import prepare

        return prepare
    raise AttributeError(f"module 'qwen_tts_ext.prep' has no attribute {name!r}")
