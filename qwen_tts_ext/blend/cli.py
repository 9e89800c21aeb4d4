"""``qwen-tts-ext blend`` / ``python finetuning/darwin_blend.py``: the Darwin FFN blend command."""

from __future__ import annotations

from qwen_tts_ext.blend.config import BlendConfig
from qwen_tts_ext.command import Command, Option

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
  python finetuning/darwin_blend.py --tts out/my-voice --llm ~/models/Qwen3-1.7B --report-dir mri/
  # a gradient from 1% at the bottom to 5% at the top, first two layers untouched, gate/up only
  python finetuning/darwin_blend.py --tts A --llm B --output C --alpha-per-layer "[0.01, 0.05]" \\
      --freeze-layers 0-1 --tensors gate,up
  # settings from YAML, overridden on the command line
  python finetuning/darwin_blend.py --config configs/blend.yaml tts=A llm=B output=C alpha=0.05

--overwrite replaces only a previous output of this command; a folder holding anything else is refused.\nexit status: 0 success, 2 user error (bad arguments, incompatible parents, output in the way), 130 interrupted.
"""


COMMAND = Command(
    name="blend", prog="qwen-tts-ext blend", description=DESCRIPTION, epilog=EPILOG, config=BlendConfig,
    run="qwen_tts_ext.blend.pipeline:run",
    options=[
        Option("tts", "--tts", "Qwen3-TTS checkpoint (the SFT export or a stock one): folder or Hub id"),
        Option("llm", "--llm", "Qwen3 causal LM with the talker's dimensions: folder or Hub id"),
        Option("output", ("--output", "-o"), "folder for the blended checkpoint (new or empty)"),
        Option("alpha", "--alpha", "LLM weight for every blended tensor, in [0, 1] (default 0.03)"),
        Option("alpha_per_layer", "--alpha-per-layer",
               "per-layer alphas: one value per layer, or fewer values as gradient anchors interpolated over "
               "depth, or {gate: .., up: .., down: ..}; inline YAML/JSON ('[0.01, 0.05]'), comma list, or a "
               ".yaml/.json file", metavar="LIST|FILE"),
        Option("freeze_layers", "--freeze-layers", "layers kept at alpha 0, e.g. 0,1 or 0-3,27", metavar="LAYERS"),
        Option("tensors", "--tensors", "projections to blend (default gate,up,down)", metavar="LIST"),
        Option("report", "--report", "also write the MRI report (mri.json + mri.png) into the output folder",
               switch=True),
        Option("report_dir", "--report-dir", "write the MRI report into this folder instead; without --output, "
               "only the report is computed", metavar="DIR"),
        Option("dry_run", "--dry-run", "print the plan and write nothing", switch=True),
        Option("overwrite", "--overwrite", "replace a previous output of this command", switch=True),
        Option("shard_size", "--shard-size", "'input' (default: the TTS checkpoint's own files), 'single', or "
               "e.g. 2GB", metavar="SIZE"),
        Option("hash_sources", "--no-hash", "skip sha256 of the source weights in the provenance", switch=False),
        Option("allow_other_backbones", "--allow-other-backbones",
               "accept an LLM whose model_type is not qwen3 (cross-backbone blends are known to fail)", switch=True),
    ],
)


def main(argv: list[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
