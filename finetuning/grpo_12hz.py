#!/usr/bin/env python
"""GRPO post-training of the talker (see `python finetuning/grpo_12hz.py --help`). Logic: qwen_tts_ext/grpo/."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from qwen_tts_ext.grpo.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
