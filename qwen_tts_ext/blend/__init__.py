"""Darwin FFN blend: lerp an LLM's FFN weights into the Qwen3-TTS talker.

- ``config``: ``BlendConfig``, the command's settings;
- ``plan``: tensor mapping, per-layer schedules, compatibility checks (decides, touches no data);
- ``lerp``: float32 arithmetic with reused buffers and the streaming blend (``stream_blend``);
- ``stream_io``: byte-level safetensors I/O (raw reads, streaming writer, kernel copies, header patches, sha256 cache);
- ``mri``: where the parents differ (JSON + heat-map);
- ``pipeline``: the command end to end (provenance, model card, atomic output);
- ``runtime``: the same blend applied in memory to a loaded model;
- ``cli``: ``qwen-tts-ext blend`` / ``finetuning/darwin_blend.py``;
- ``bench``: ``scripts/bench_blend.py`` (streaming vs naive vs the I/O floor at the released sizes).
"""

from typing import Any

# Public names, imported on first use (so `darwin_blend.py --help` does not pay for torch).
_EXPORTS = {
    "PROJECTIONS": "config",
    "BlendPlan": "plan",
    "CompatibilityError": "plan",
    "build_schedule": "plan",
    "make_plan": "plan",
    "BlendConfig": "config",
    "blend_checkpoint": "pipeline",
    "apply_blend_to_model": "runtime",
    "restore_ffn": "runtime",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"qwen_tts_ext.blend.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'qwen_tts_ext.blend' has no attribute {name!r}")
