"""Bound every generation by the text it speaks.

A healthy model stops itself with the codec EOS token. A broken one (too-high Darwin alpha,
over-trained SFT) keeps going: the model card's "655 seconds of audio for one sentence". Every
segment is therefore generated with ``max_new_tokens`` derived from its text:

    cap_frames = ceil(12.5 * (margin * expected_seconds(text) + slack_seconds))

``expected_seconds`` is a deliberately slow speaking-rate estimate (12 letters/s for alphabetic
scripts, 3.5 characters/s for CJK, 4 digits/s, plus 0.3 s per pause mark), so a ``margin`` of 2 plus
3 s of slack leaves room for whispering, pauses and slow emotional delivery, while a runaway stops
within seconds instead of minutes. Hitting the cap is reported as a stop-signal failure.
"""

from __future__ import annotations

import math
import unicodedata

from qwen_tts_ext.constants import FRAME_RATE

LETTERS_PER_SECOND = 12.0
CJK_PER_SECOND = 3.5
DIGITS_PER_SECOND = 4.0
PAUSE_SECONDS = 0.3
_PAUSES = set(",.;:!?…—–、。，！？；：")


def _is_cjk(ch: str) -> bool:
    name = unicodedata.name(ch, "")
    return name.startswith(("CJK", "HIRAGANA", "KATAKANA", "HANGUL"))


def expected_seconds(text: str) -> float:
    """A slow-speech estimate of how long ``text`` takes to say."""
    letters = cjk = digits = pauses = 0
    for ch in text:
        if ch.isdigit():
            digits += 1
        elif _is_cjk(ch):
            cjk += 1
        elif ch.isalpha():
            letters += 1
        elif ch in _PAUSES:
            pauses += 1
    return letters / LETTERS_PER_SECOND + cjk / CJK_PER_SECOND + digits / DIGITS_PER_SECOND + pauses * PAUSE_SECONDS


def frame_cap(text: str, margin: float = 2.0, slack_seconds: float = 3.0, max_seconds: float = 120.0) -> int:
    """The most codec frames a segment speaking ``text`` may produce (always >= 1 s worth).

    ``max_seconds`` is a hard ceiling for any single segment regardless of its length.
    """
    if margin <= 0 or slack_seconds < 0 or max_seconds <= 0:
        raise ValueError("margin and max_seconds must be > 0 and slack_seconds >= 0")
    seconds = min(margin * expected_seconds(text) + slack_seconds, max_seconds)
    return max(int(math.ceil(FRAME_RATE)), int(math.ceil(seconds * FRAME_RATE)))
