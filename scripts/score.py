"""Judge audio offline: see `python scripts/score.py --help`."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from qwen_tts_ext.evaluation.score_cli import main  # noqa: E402

raise SystemExit(main())
