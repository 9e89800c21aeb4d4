"""qwen_tts_ext: a fine-tuning suite for Qwen3-TTS 12 Hz models.

Modules, one concept each:
- ``errors``: the ``UserError`` every CLI turns into a one-line message and exit code 2.
- ``constants``: the released special ids and audio facts (verified against ``qwen_tts``).
- ``testing.tiny_checkpoint``: complete, randomly initialised tiny checkpoints the stock loader accepts.
"""

__version__ = "0.1.0"
