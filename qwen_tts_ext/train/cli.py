"""``qwen-tts-ext sft`` / ``finetuning/sft_12hz.py``: fine-tune a Qwen3-TTS 12Hz checkpoint and export a
speaker-locked custom_voice model.

    accelerate launch finetuning/sft_12hz.py --config configs/sft_1.7b.yaml --data prep_out --output-dir runs/my_voice
    python finetuning/sft_12hz.py --config configs/sft_tiny.yaml --model /tmp/tiny --data /tmp/prep   # one process
"""

from __future__ import annotations

from qwen_tts_ext.command import Command, Option, emit
from qwen_tts_ext.train.config import SFTConfig
from qwen_tts_ext.train.preflight import check_inputs

DESCRIPTION = """\
Supervised fine-tuning of Qwen3-TTS 12Hz with the inference-aligned objective (CE on codebook 0 +
0.3 x code-predictor CE), one locked codec-embedding row per speaker. Several devices: run it under
`accelerate launch`."""

EPILOG = """\
overrides:
  Any recipe key can be set as key=value anywhere on the line, e.g.
    train.lr=1e-5 train.epochs=2 train.batch_size=8 train.grad_accum=4 train.precision=bf16
    checkpoint.every_steps=500 checkpoint.resume=true log.tracker=tensorboard export.dtype=bfloat16
  A misspelled key is an error. See configs/sft_*.yaml for every key with comments.

run folder (--output-dir):
  A new or empty folder; it is marked as this command's run (.qwen-tts-ext.json) when training starts.
  A folder holding a previous run of this command is continued with checkpoint.resume=true (--resume)
  or started over with --overwrite (which removes only what a run writes); any other non-empty folder,
  a file, or the model/data folder is refused before anything loads.

resume:
  Re-run the same command with checkpoint.resume=true (or --resume): model, optimizer, scheduler, RNG
  and the position in the epoch are restored from the newest output_dir/checkpoints/step-*.
  Resuming unpickles files of that checkpoint (accelerate's custom_checkpoint_*.pkl, random_states_*.pkl),
  so it only reads a run folder this suite wrote: the folder's marker and the checkpoint's
  trainer_state.json must say so ("written_by": "qwen-tts-ext"); anything else is refused.
  The recipe is compared with the run's config.json: a change of objective or data (model, data,
  loss weights, lr schedule, batch, seed, precision, LoRA...) is refused with the changed keys listed;
  --force resumes anyway. train.max_steps/epochs (extend the run), log.*, checkpoint.*, export.* and
  speed/memory switches may change (qwen_tts_ext/train/config.py lists them).

outputs (output_dir):
  export/            speaker-locked custom_voice checkpoint (stock qwen_tts loads it;
                     generate_custom_voice(speaker=NAME) speaks with each trained speaker)
  checkpoints/       accelerate states for resuming (last checkpoint.keep_last kept)
  metrics.jsonl      every logged value, and per optimizer step its timing (data wait and
                     forward+backward per micro-batch, optimizer, frames, padding); wandb/ or logs/
                     hold the tracker runs
  samples/step-N/    the judged eval's clips (held-out sentences per speaker, one per eval.emotion_tags
                     entry) and scores.jsonl: the offline judges' scores of each clip
  summary.json       final losses, the judged eval's base/best composite, stopped_by_guard when it fired

judged evaluation (eval.*):
  At step 0 (the base model), every log.eval_every_steps and at the end, each speaker speaks held-out
  sentences; independent judges (eval.judges: resemblyzer speaker similarity against the speaker's own
  recordings, DistillMOS, silero-vad timing; asr on request) score them. metrics.jsonl and the tracker get
  judge/<metric>, judge/<metric>_delta (vs step 0) and judge/composite (qwen_tts_ext/evaluation/composite.py).
    checkpoint.select=best      export/ holds the eval with the highest composite, not the last step
    eval.guard=true             stop when spk_sim falls below step 0's by more than eval.guard_margin (0.05)
    eval.judges=[]              no judges (log.log_samples=false too: no synthesis at eval)
  stdout carries one line, `export: PATH`; logs and progress go to stderr.

exit status: 0 success, 2 user error (bad arguments, model/data/run folder refused), 130 interrupted.
"""

COMMAND = Command(
    name="sft", prog="qwen-tts-ext sft", description=DESCRIPTION, epilog=EPILOG, config=SFTConfig,
    run="qwen_tts_ext.train.cli:run",
    options=[
        Option("model", "--model", "Qwen3-TTS 12Hz Base or CustomVoice checkpoint: folder or Hub id"),
        Option("data.path", "--data", "output folder of prepare_data.py", metavar="DIR"),
        Option("output_dir", "--output-dir", "run folder: new, empty, or this command's previous run", metavar="DIR"),
        Option("checkpoint.resume", "--resume", "continue the run in --output-dir from its newest checkpoint",
               switch=True),
        Option("overwrite", "--overwrite", "start over in --output-dir when it holds a previous run of this command",
               switch=True),
        Option("force", "--force", "with --resume: resume although the objective or the data changed", switch=True),
    ],
)


def run(cfg: SFTConfig) -> int:
    """Check every input (model identity, data, run folder, resumed recipe) before the model and its
    libraries load, then train; the export's path is the result (stdout, main process only)."""
    plan = check_inputs(cfg)
    from accelerate import PartialState  # the heavy imports come after the checks, so a refusal answers at once

    from qwen_tts_ext.train.loop import train

    summary = train(cfg, plan)
    if PartialState().is_main_process:
        emit(f"export: {summary['export']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
