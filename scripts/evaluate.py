"""Darwin alpha sweep: see `python scripts/evaluate.py --help`."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from qwen_tts_ext.evaluation.cli import main  # noqa: E402

raise SystemExit(main())
