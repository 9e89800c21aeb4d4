"""Synthesis: tagged scripts -> one voice, segment by segment, bounded, crossfaded.

Public API::

    from qwen_tts_ext.synthesis import Synthesizer, SynthesisOptions, parse_script, load_emotions
"""

from qwen_tts_ext.synthesis.bounds import expected_seconds, frame_cap
from qwen_tts_ext.synthesis.emotions import EmotionMap, Instruction, load_emotions
from qwen_tts_ext.synthesis.joining import Joiner, crossfade_join, joined_length
from qwen_tts_ext.synthesis.tags import ScriptSegment, TagSyntaxError, parse_script

__all__ = [
    "EmotionMap",
    "Instruction",
    "Joiner",
    "ScriptSegment",
    "SegmentResult",
    "SynthesisOptions",
    "SynthesisResult",
    "Synthesizer",
    "TagSyntaxError",
    "Voice",
    "crossfade_join",
    "expected_seconds",
    "frame_cap",
    "joined_length",
    "load_emotions",
    "parse_script",
]


def __getattr__(name: str):
    # The engine imports torch/qwen_tts; load it only when used (the parser stays instant).
    if name in ("Synthesizer", "SynthesisOptions", "SynthesisResult", "SegmentResult", "Voice"):
        from qwen_tts_ext.synthesis import engine

        return getattr(engine, name)
    raise AttributeError(name)
