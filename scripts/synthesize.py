"""Speak a tagged script in one voice: see `python scripts/synthesize.py --help`."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from qwen_tts_ext.synthesis.cli import main  # noqa: E402

raise SystemExit(main())
