"""``qwen-tts-ext grpo`` / ``finetuning/grpo_12hz.py``: GRPO post-training of the talker with measured rewards.

Everything a run needs is checked before a model loads (:func:`check_inputs`): the checkpoints, the prompts
file and its speakers, the reward terms, the run folder (new, ours to resume, or ours to overwrite).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from qwen_tts_ext.command import Command, Option, emit
from qwen_tts_ext.errors import UserError
from qwen_tts_ext.grpo.config import GRPOConfig

COMMAND_NAME = "grpo"
RUN_ENTRIES = ("checkpoints", "export", "metrics.jsonl", "summary.json", "config.json", "speakers.json", "samples",
               "logs", "wandb")

DESCRIPTION = """\
GRPO post-training of the Qwen3-TTS talker with measured rewards. Per step, each prompt (text + speaker) is
sampled K times with the stock generate() (capped at the text's frame budget); each rollout is rewarded
by a weighted sum of terms (judge metrics such as spk_sim, mos_distill, wer; duration to a target;
EOS in time; a fixed penalty for hitting the cap); advantages are relative to the prompt's group; the
policy takes a clipped-ratio step with a k3 KL penalty to a frozen reference (the starting model, or
--reference). Log-probabilities come from a teacher-forced pass through the SFT layout and losses code.
The result is a custom_voice checkpoint that keeps the built-in speakers."""

EPILOG = """\
examples:
  # duration-shaped toy run on a tiny checkpoint (see docs/grpo.md)
  python finetuning/grpo_12hz.py --config configs/grpo.yaml --model /tmp/tiny --prompts prompts.jsonl \\
      --output-dir runs/grpo train.steps=20 reward.weights="{duration: 1.0}" reward.duration_target=1.0
  # repair the stop signal of a strong blend (the blend is the KL anchor)
  accelerate launch finetuning/grpo_12hz.py --config configs/grpo_stop_repair.yaml --model out/blend-010 \\
      --prompts prompts.jsonl --speakers prep_out --output-dir runs/repair
  # continue a run after an interruption
  python finetuning/grpo_12hz.py --config configs/grpo.yaml ... --output-dir runs/grpo --resume

prompts (JSONL, one row per prompt):
  {"text": "Hello there.", "speaker": "vivian", "instruct": "Speak softly.", "language": "english",
   "ref_audio": "clips/vivian.wav"}
  speaker: a name in --speakers (speakers.safetensors of a prepared folder) or in the checkpoint's spk_id;
  ref_audio (optional): the speaker's recording that spk_sim compares against; tag (optional): an emotion
  tag of configs/emotions.yaml used as the instruction when instruct is not given.

reward terms (reward.weights): duration, stop_in_time, stopped_by_eos, or any judge metric (spk_sim,
  mos_distill, dnsmos_ovrl, wer, cer, truncated, ...; "lower is better" metrics enter negated).

outputs (--output-dir): export/ (custom_voice checkpoint + README.md), checkpoints/ (accelerate states),
  metrics.jsonl (per step: reward/* mean and std per term and per speaker, rollout/eos_rate,
  rollout/mean_seconds, train/kl, train/loss ...), samples/step-N/ (log.samples_every), summary.json.
  stdout: one line, `export: PATH`.

exit status: 0 success, 2 user error (bad arguments, inputs or run folder refused), 130 interrupted.
"""

COMMAND = Command(
    name=COMMAND_NAME, prog="qwen-tts-ext grpo", description=DESCRIPTION, epilog=EPILOG, config=GRPOConfig,
    run="qwen_tts_ext.grpo.cli:run",
    options=[
        Option("model", "--model", "the starting policy: a Qwen3-TTS checkpoint folder (base, custom_voice, a blend)"),
        Option("reference", "--reference", "the KL anchor checkpoint (default: --model)"),
        Option("prompts", "--prompts", "JSONL of {text, speaker, instruct?, tag?, language?, ref_audio?}", metavar="FILE"),
        Option("speakers", "--speakers", "speakers.safetensors or a prepared folder (default: the checkpoint's "
               "speakers)", metavar="PATH"),
        Option("output_dir", "--output-dir", "run folder: new, empty, or this command's previous run", metavar="DIR"),
        Option("checkpoint.resume", "--resume", "continue the run in --output-dir from its newest checkpoint",
               switch=True),
        Option("overwrite", "--overwrite", "start over in --output-dir when it holds a previous run of this command",
               switch=True),
    ],
)


@dataclass
class RunPlan:
    model_dir: Path
    reference_dir: Path | None
    output_dir: Path
    mode: str  # new | overwrite | resume
    resume_from: Path | None = None


def _speakers_known(cfg: GRPOConfig, model_dir: Path) -> set[str]:
    if cfg.speakers:
        from qwen_tts_ext.prepared import load_speakers

        return {k.lower() for k in load_speakers(cfg.speakers)}
    conf = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    return {k.lower() for k in (conf.get("talker_config", {}).get("spk_id") or {})}


def check_inputs(cfg: GRPOConfig) -> RunPlan:
    """Every input checked (all problems at once) before anything heavy loads."""
    from qwen_tts_ext.checkpoint_io import require_tts_checkpoint
    from qwen_tts_ext.grpo.rollout import load_prompts

    cfg.check()
    problems: list = []
    model_dir = reference_dir = None
    try:
        model_dir = require_tts_checkpoint(cfg.model, what="--model")
    except UserError as exc:
        problems.append(exc)
    if cfg.reference:
        try:
            reference_dir = require_tts_checkpoint(cfg.reference, what="--reference")
        except UserError as exc:
            problems.append(exc)
    if cfg.objective.subtalker is False and cfg.train.train_code_predictor:
        problems.append("train.train_code_predictor=true needs objective.subtalker=true (else its weights get no gradient)")
    prompts = []
    try:
        prompts = load_prompts(cfg.prompts)
    except UserError as exc:
        problems.append(exc)
    if model_dir is not None and prompts:
        try:
            known = _speakers_known(cfg, model_dir)
            missing = sorted({p.speaker for p in prompts} - known)
            if missing:
                where = f"--speakers {cfg.speakers}" if cfg.speakers else f"the checkpoint's spk_id ({model_dir})"
                problems.append(f"prompt speaker(s) {missing} are not in {where}; known: {sorted(known) or 'none'}")
        except UserError as exc:
            problems.append(exc)
    UserError.collect(problems)
    out, mode, latest = check_run_dir(cfg, model_dir)
    return RunPlan(model_dir, reference_dir, out, mode, latest)


def check_run_dir(cfg: GRPOConfig, model_dir: Path) -> tuple[Path, str, Path | None]:
    from qwen_tts_ext.outputs import MARKER, check_output_dir, owner
    from qwen_tts_ext.train.preflight import STATE_FILE, WRITTEN_BY, checkpoints

    flag = "--output-dir"
    final = Path(os.path.abspath(os.path.expanduser(cfg.output_dir)))
    has_run = final.is_dir() and any(p.name != MARKER for p in final.iterdir())
    if cfg.checkpoint.resume and has_run and owner(final) != COMMAND_NAME:
        raise UserError(f"cannot resume from {final}: it is not a `qwen-tts-ext grpo` run folder (no {MARKER} marker)")
    check_output_dir(final, command=COMMAND_NAME, overwrite=True, flag=flag, inputs={"--model": model_dir})
    if cfg.checkpoint.resume:
        found = checkpoints(final / "checkpoints") if has_run else []
        if not found:
            raise UserError(f"--resume: {final} holds no checkpoint to resume; drop --resume to start a new run")
        record = json.loads((found[-1] / STATE_FILE).read_text(encoding="utf-8"))
        if record.get("written_by") != WRITTEN_BY:
            raise UserError(f"cannot resume from {found[-1]}: not a checkpoint this suite saved")
        changed = resume_changes(final, cfg)
        if changed:
            raise UserError(f"--resume: the recipe differs from the run's config.json in {', '.join(changed)}; a resumed "
                            "run continues the same objective (only train.steps, checkpoint.*, log.*, export_dtype "
                            "may change): start a new run for another recipe")
        return final, "resume", found[-1]
    if has_run:
        if not cfg.overwrite:
            raise UserError(f"{flag} {final} holds a previous `qwen-tts-ext grpo` run; add --resume to continue it, "
                            "or --overwrite to start over")
        return final, "overwrite", None
    return final, "new", None


RESUME_MAY_CHANGE = ("output_dir", "overwrite", "export_dtype", "train.steps", "checkpoint.", "log.")


def resume_changes(run_dir: Path, cfg: GRPOConfig) -> list[str]:
    """The recipe keys that differ from the run's saved ``config.json`` (beyond what a resume may change)."""
    from dataclasses import asdict

    try:
        saved = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []  # killed before it was written: nothing to compare

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict) and k != "weights":
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    now, then = flat(json.loads(json.dumps(asdict(cfg)))), flat(saved)
    return sorted(k for k in now if now[k] != then.get(k, now[k])
                  and not any(k == m or (m.endswith(".") and k.startswith(m)) for m in RESUME_MAY_CHANGE))


def start_run_dir(plan: RunPlan) -> None:
    """Main process: clear our previous run's entries (overwrite) and mark the folder (new runs)."""
    from qwen_tts_ext.outputs import write_marker
    from qwen_tts_ext.train.preflight import WRITTEN_BY

    folder = plan.output_dir
    if plan.mode == "overwrite":
        for name in RUN_ENTRIES:
            p = folder / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    if plan.mode != "resume":
        write_marker(folder, COMMAND_NAME, written_by=WRITTEN_BY)


def run(cfg: GRPOConfig) -> int:
    plan = check_inputs(cfg)
    from accelerate import PartialState

    from qwen_tts_ext.grpo.loop import train

    summary = train(cfg, plan)
    if PartialState().is_main_process:
        emit(f"export: {summary['export']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
