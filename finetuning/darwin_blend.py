"""Darwin FFN blend of a Qwen3 LLM into a Qwen3-TTS talker (see --help). Same as `qwen-tts-ext blend`."""

from qwen_tts_ext.blend.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
