"""INT4 (AWQ) export of a Qwen3-TTS talker (see --help). Same as `qwen-tts-ext quantize`."""

from qwen_tts_ext.quantize.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
