"""``qwen-tts-ext blend`` / ``python finetuning/darwin_blend.py``: the Darwin FFN blend command."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from qwen_tts_ext.config import load_config
from qwen_tts_ext.errors import cli_entry

DESCRIPTION = """\
Darwin FFN blend: give a Qwen3-TTS checkpoint some of an LLM's expressiveness without training.

For every talker layer N and projection P in gate/up/down:
    talker.model.layers.N.mlp.P_proj.weight =
        (1 - alpha) * talker.model.layers.N.mlp.P_proj.weight + alpha * LLM[model.layers.N.mlp.P_proj.weight]
in float32, cast back to the checkpoint dtype. Everything else stays byte-identical. The LLM must
share the talker's backbone (Qwen3-1.7B for the 1.7B TTS, Qwen3-0.6B for the 0.6B TTS).

Published findings (Qwen3-TTS-1.7B x Qwen3-1.7B): alpha 0.01 no audible change, 0.03 emotion
appears (default), 0.05 strongest stable, 0.10 breaks the stop signal (generation runs away).

The blend streams one tensor at a time (memory does not grow with model size) into a temp folder
that replaces --output only when complete. The output is a full checkpoint (config, tokenizer,
speech_tokenizer/, generation config) with darwin_blend.json provenance and a README.md model card.
"""

EPILOG = """\
examples:
  # default 3% blend
  python finetuning/darwin_blend.py --tts out/my-voice --llm Qwen/Qwen3-1.7B --output out/my-voice-darwin
  # look first: the plan, and where the parents differ (MRI heat-map)
  python finetuning/darwin_blend.py --tts out/my-voice --llm ~/models/Qwen3-1.7B --dry-run
  python finetuning/darwin_blend.py --tts out/my-voice --llm ~/models/Qwen3-1.7B --report mri/
  # a gradient from 1% at the bottom to 5% at the top, first two layers untouched, gate/up only
  python finetuning/darwin_blend.py --tts A --llm B --output C --alpha-per-layer "[0.01, 0.05]" \\
      --freeze-layers 0-1 --tensors gate,up
  # settings from YAML, overridden on the command line
  python finetuning/darwin_blend.py --config configs/blend.yaml tts=A llm=B output=C alpha=0.05

exit status: 0 success, 2 user error (bad arguments, incompatible parents, existing output), 130 interrupted.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qwen-tts-ext blend", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", metavar="FILE", help="YAML file of settings (keys as in configs/blend.yaml)")
    p.add_argument("--tts", help="Qwen3-TTS checkpoint (the SFT export or a stock one): folder or Hub id")
    p.add_argument("--llm", help="Qwen3 causal LM with the talker's dimensions: folder or Hub id "
                   "(single or sharded safetensors)")
    p.add_argument("--output", "-o", help="folder for the blended checkpoint (must not exist or be empty)")
    p.add_argument("--alpha", type=float, help="LLM weight for every blended tensor, in [0, 1] (default 0.03)")
    p.add_argument("--alpha-per-layer", metavar="LIST|FILE",
                   help="per-layer alphas: one value per layer, or fewer values as gradient anchors "
                   "interpolated over depth (mergekit style), or {gate: .., up: .., down: ..}; "
                   "inline YAML/JSON ('[0.01, 0.05]'), comma list, or a .yaml/.json file")
    p.add_argument("--freeze-layers", metavar="LAYERS", help="layers kept at alpha 0, e.g. 0,1 or 0-3,27")
    p.add_argument("--tensors", metavar="LIST", help="projections to blend (default gate,up,down)")
    p.add_argument("--report", nargs="?", const="", metavar="DIR",
                   help="write the MRI report (mri.json + mri.png heat-map) into DIR (default: the output "
                   "folder); without --output, only the report is computed")
    p.add_argument("--dry-run", action="store_true", default=None, help="print the plan and write nothing")
    p.add_argument("--overwrite", action="store_true", default=None, help="replace an existing --output that holds a previous checkpoint")
    p.add_argument("--shard-size", metavar="SIZE",
                   help="'input' (default: the TTS checkpoint's own files), 'single', or e.g. 2GB")
    p.add_argument("--no-hash", dest="hash_sources", action="store_false", default=None,
                   help="skip sha256 of the source weights in the provenance (faster for huge inputs)")
    p.add_argument("--allow-other-backbones", action="store_true", default=None,
                   help="accept an LLM whose model_type is not qwen3 (cross-backbone blends are known to fail)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. alpha=0.05")
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    from qwen_tts_ext.blend.pipeline import BlendConfig, blend_checkpoint  # after --help: imports torch

    cfg = load_config(BlendConfig, args.config, args.overrides)
    flags = {
        key: getattr(args, key)
        for key in ("tts", "llm", "output", "alpha", "alpha_per_layer", "freeze_layers", "dry_run", "overwrite",
                    "shard_size", "hash_sources", "allow_other_backbones")
        if getattr(args, key) is not None
    }
    if args.tensors is not None:
        flags["tensors"] = [t for t in args.tensors.split(",") if t.strip()]
    if args.report is not None:
        flags["report"] = True
        if args.report:
            flags["report_dir"] = args.report
    cfg = dataclasses.replace(cfg, **flags)
    cfg.check()
    blend_checkpoint(cfg, progress=sys.stderr.isatty() or None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
