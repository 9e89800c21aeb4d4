"""Launch the Qwen3-TTS studio (same as `qwen-tts-ext studio`): python app.py --model CHECKPOINT_DIR"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from qwen_tts_ext.studio import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
