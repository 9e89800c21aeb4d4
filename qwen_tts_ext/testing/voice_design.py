"""A tiny, random Qwen3-TTS **VoiceDesign** checkpoint (speaks from a description; no speaker table).

The released VoiceDesign model is a talker with no speaker encoder and no built-in speakers: the
voice comes from ``generate_voice_design(text, instruct=description)``. This builder reuses the
factory's tiny CustomVoice build with an empty speaker table (so no speaker-encoder weights are
written, as in the released folder) and marks ``config.json`` ``tts_model_type: voice_design``.
The stock ``qwen_tts.Qwen3TTSModel.from_pretrained`` loads it and ``generate_voice_design`` runs; like
every tiny model it speaks noise, and its random weights need not change the voice with the
description.

    python -m qwen_tts_ext.testing.voice_design OUT_DIR [--seed N] [--variant 1.7b|0.6b]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

import torch

from qwen_tts_ext.testing.tiny_checkpoint import TinySpec, build_tiny_tts


def build_tiny_voice_design(out_dir: str | os.PathLike, spec: TinySpec | None = None, *, seed: int = 0,
                            dtype: torch.dtype = torch.float32, overwrite: bool = False) -> Path:
    """Build a tiny VoiceDesign checkpoint in ``out_dir`` (atomically, like the factory) and return its path."""
    spec = dataclasses.replace(spec or TinySpec(), tts_model_type="custom_voice", builtin_speakers={})
    out = build_tiny_tts(out_dir, spec, seed=seed, dtype=dtype, overwrite=overwrite)
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tts_model_type"] = "voice_design"
    cfg_path.write_text(json.dumps(cfg, indent=2))
    info_path = out / "tiny_checkpoint.json"
    info = json.loads(info_path.read_text())
    info["tts_model_type"] = "voice_design"
    info["built_by"] = "qwen_tts_ext.testing.voice_design"
    info_path.write_text(json.dumps(info, indent=2, default=str))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m qwen_tts_ext.testing.voice_design",
                                description="Build a tiny random VoiceDesign checkpoint (for tests; it speaks noise).")
    p.add_argument("out_dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variant", choices=["1.7b", "0.6b"], default="1.7b")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    print(build_tiny_voice_design(args.out_dir, TinySpec(variant=args.variant), seed=args.seed,
                                  overwrite=args.overwrite))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
