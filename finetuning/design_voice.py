"""Describe a voice in words, render + judge a corpus with VoiceDesign, lock it into a speaker slot (see --help).
Same as `qwen-tts-ext design-voice`."""

from qwen_tts_ext.design.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
