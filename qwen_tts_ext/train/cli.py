"""``sft_12hz.py``: fine-tune a Qwen3-TTS 12Hz checkpoint and export a speaker-locked custom_voice model.

    accelerate launch finetuning/sft_12hz.py --config configs/sft_1.7b.yaml data.path=prep_out output_dir=runs/my_voice
    python finetuning/sft_12hz.py --config configs/sft_tiny.yaml model=/tmp/tiny data.path=/tmp/prep   # one process
"""

from __future__ import annotations

import argparse
import sys

from qwen_tts_ext.config import load_config
from qwen_tts_ext.errors import cli_entry

EPILOG = """\
overrides:
  Any recipe key can be set as key=value after the options, e.g.
    train.lr=1e-5 train.epochs=2 train.batch_size=8 train.grad_accum=4 train.precision=bf16
    checkpoint.every_steps=500 checkpoint.resume=true log.tracker=tensorboard export.dtype=bfloat16
  A misspelled key is an error. See configs/sft_*.yaml for every key with comments.

resume:
  Re-run the same command with checkpoint.resume=true: model, optimizer, scheduler, RNG and the
  position in the epoch are restored from the newest output_dir/checkpoints/step-*.

outputs (output_dir):
  export/            speaker-locked custom_voice checkpoint (stock qwen_tts loads it;
                     generate_custom_voice(speaker=NAME) speaks with each trained speaker)
  checkpoints/       accelerate states for resuming (last checkpoint.keep_last kept)
  metrics.jsonl      every logged value; wandb/ or logs/ hold the tracker runs
  samples/           audio synthesized per speaker at each eval
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sft_12hz.py",
        description="Supervised fine-tuning of Qwen3-TTS 12Hz with the inference-aligned objective "
        "(CE on codebook 0 + 0.3 x code-predictor CE), one locked codec-embedding row per speaker.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="YAML recipe (configs/sft_*.yaml)")
    p.add_argument("--model", help="Base or CustomVoice checkpoint (same as model=...)")
    p.add_argument("--data", help="output folder of prepare_data.py (same as data.path=...)")
    p.add_argument("--output-dir", help="run folder (same as output_dir=...)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    p.add_argument("overrides", nargs="*", help="key=value recipe overrides")
    return p


@cli_entry
def _run(args) -> int:
    from qwen_tts_ext.train.config import SFTConfig
    from qwen_tts_ext.train.loop import train

    overrides = list(args.overrides)
    if args.model:
        overrides.append(f"model={args.model}")
    if args.data:
        overrides.append(f"data.path={args.data}")
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    if args.resume:
        overrides.append("checkpoint.resume=true")
    cfg = load_config(SFTConfig, args.config, overrides)
    summary = train(cfg)
    print(f"export: {summary['export']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return _run(args)
