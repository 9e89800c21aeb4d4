"""Prepare training data: recordings + transcripts -> 12 Hz codes dataset. See `--help`."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from qwen_tts_ext.prep.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
