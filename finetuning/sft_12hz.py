#!/usr/bin/env python
"""Fine-tune Qwen3-TTS 12Hz (see `python finetuning/sft_12hz.py --help`). Logic: qwen_tts_ext/train/."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from qwen_tts_ext.train.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
