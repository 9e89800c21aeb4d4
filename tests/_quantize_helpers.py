"""Test helpers for the INT4 export: a tiny checkpoint fine-tuned briefly on espeak-ng clips (so it has structure)."""

from __future__ import annotations

from pathlib import Path

SFT_STEPS = 100  # ~100 steps at a high lr: the tiny talker learns the clips' codec-0 statistics
GROUP = 64  # divides the tiny widths (64, 128); the released default is 128


def finetuned_tiny(root: Path, base: Path, corpus: Path) -> tuple[Path, Path]:
    """(export folder, prepared folder): prepare the espeak corpus on ``base``, SFT ``SFT_STEPS`` steps."""
    from _sft_helpers import make_prepared, tiny_recipe

    from qwen_tts_ext.config import load_config
    from qwen_tts_ext.train.config import SFTConfig
    from qwen_tts_ext.train.loop import train

    prepared = make_prepared(Path(root) / "prep", base, corpus, language="english")
    out = Path(root) / "sft"
    summary = train(load_config(SFTConfig, None, tiny_recipe(base, prepared, out, f"train.max_steps={SFT_STEPS}")))
    return Path(summary["export"]), Path(prepared)
