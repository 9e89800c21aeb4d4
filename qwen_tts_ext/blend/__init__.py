"""Darwin FFN blend: lerp an LLM's FFN weights into the Qwen3-TTS talker.

- ``plan``: tensor mapping, per-layer schedules, compatibility checks (decides, touches no data);
- ``lerp``: float32 arithmetic with reused buffers and the streaming checkpoint writer;
- ``mri``: where the parents differ (JSON + heat-map);
- ``pipeline``: the command end to end (provenance, model card, atomic output);
- ``runtime``: the same blend applied in memory to a loaded model;
- ``cli``: ``qwen-tts-ext blend`` / ``finetuning/darwin_blend.py``.
"""

from qwen_tts_ext.blend.plan import PROJECTIONS, BlendPlan, CompatibilityError, build_schedule, make_plan

__all__ = ["PROJECTIONS", "BlendPlan", "CompatibilityError", "build_schedule", "make_plan"]
