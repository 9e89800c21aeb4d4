"""The SFT training loop, in the shape of accelerate's examples; accelerate owns devices, precision,
accumulation, distribution and checkpoint state.

    accelerate launch finetuning/sft_12hz.py --config configs/sft_1.7b.yaml data.path=prep_out

What a run is built from (model, speaker table, dataloaders, optimizer, schedule) is in ``setup.py``,
the export in ``export.py``, and what is checked before anything loads in ``preflight.py``.

Resume (``checkpoint.resume=true``) restores model, optimizer, scheduler, RNG and the position in the
epoch, so an interrupted run (even by ``kill -9``) ends with the same weights as an uninterrupted one
on CPU with a fixed seed.

``output_dir/metrics.jsonl`` holds every logged value (``train/*``, ``eval/*``) and, per optimizer
step, a timing record (what ``scripts/bench_train.py`` measures the loop with)::

    {"step": 7, "timing/t": 12.31,                 # seconds from the loop's start to the end of this step
     "timing/data_wait_s": [0.004, 0.003],         # per micro-batch: waiting for the batch (load, collate, copy)
     "timing/fwd_bwd_s": [0.41, 0.39],             # per micro-batch: forward + backward
     "timing/optimizer_s": 0.02,                   # clip + optimizer step + zero_grad + scheduler
     "timing/frames": 812, "timing/real_positions": 1502, "timing/padded_positions": 1610,
     "timing/padding_efficiency": 0.933, "timing/processes": 2}

Seconds are the main process's (on a GPU the device is synchronised at each mark, so they are device
time); frames and positions are summed over all processes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, ProjectConfiguration, broadcast_object_list, set_seed
from tqdm.auto import tqdm

from qwen_tts_ext.outputs import publish_dir
from qwen_tts_ext.train.config import SFTConfig, recipe_record
from qwen_tts_ext.train.export import export_run
from qwen_tts_ext.train.preflight import RunPlan, check_inputs, checkpoints, start_run_dir, trainer_state_record
from qwen_tts_ext.train.judged_eval import EvalState, JudgedEval
from qwen_tts_ext.train.setup import build_adamw, build_run, build_scheduler, param_groups, total_steps


@dataclass
class TrainerState:
    """Position in training, saved with every checkpoint (registered with accelerate)."""

    global_step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # batches consumed in the current epoch (including accumulation micro-steps)
    judge_base: dict = field(default_factory=dict)  # step 0's judge/* values (the judged eval's reference)
    best_step: int = -1  # the judged eval with the highest composite so far (checkpoint.select=best)
    best_composite: float | None = None

    def state_dict(self):
        return asdict(self)

    def load_state_dict(self, d):
        self.global_step, self.epoch, self.batch_in_epoch = d["global_step"], d["epoch"], d["batch_in_epoch"]
        self.judge_base = dict(d.get("judge_base") or {})  # checkpoints from before the judged eval have none
        self.best_step, self.best_composite = d.get("best_step", -1), d.get("best_composite")


def train(cfg: SFTConfig, plan: RunPlan | None = None) -> dict:
    """Run SFT; returns a summary (final losses, export path). ``plan``: the inputs as ``check_inputs(cfg)``
    checked them (checked here when not given)."""
    plan = plan or check_inputs(cfg)
    tc, out_dir = cfg.train, plan.output_dir
    trackers = [] if cfg.log.tracker == "none" else [cfg.log.tracker]
    accelerator = Accelerator(
        gradient_accumulation_steps=tc.grad_accum, mixed_precision=tc.precision, log_with=trackers or None,
        project_config=ProjectConfiguration(project_dir=str(out_dir), logging_dir=str(out_dir / "logs")),
        step_scheduler_with_optimizer=False,
    )
    set_seed(tc.seed, device_specific=False)
    main = accelerator.is_main_process
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" and accelerator.distributed_type != DistributedType.FSDP:
        # accelerate 1.12 turns FSDP on for GPU-like multi-device runs only (state.py); on CPU it runs DDP
        accelerator.print(f"warning: FSDP was asked for, but accelerate runs {accelerator.distributed_type.value} here "
                          "(it shards with FSDP on GPUs only): every process holds the whole model")
    accelerator.wait_for_everyone()  # every process has checked the run folder before the main one writes in it
    if main:
        start_run_dir(plan)  # marker (new run), or our previous run cleared (overwrite)
    if plan.forced:
        accelerator.print(f"--force: resuming although the objective or data changed: {'; '.join(plan.forced)}")

    run = build_run(cfg, plan.model_dir, accelerator.distributed_type == DistributedType.FSDP, accelerator.print)
    optimizer = build_adamw(param_groups(run.module, tc.weight_decay), tc, accelerator.print)
    module, optimizer, train_dl = accelerator.prepare(run.module, optimizer, run.train_dl)
    eval_dl = accelerator.prepare(run.eval_dl) if run.eval_dl is not None else None
    total = total_steps(tc, len(train_dl))
    scheduler = build_scheduler(optimizer, tc, total)
    state = TrainerState()
    accelerator.register_for_checkpointing(scheduler, state)
    if plan.mode == "resume":  # checked to be this suite's run (load_state unpickles its files)
        accelerator.load_state(str(plan.resume_from))
        accelerator.print(f"resumed from {plan.resume_from} (step {state.global_step}, epoch {state.epoch})")
    if main:
        (out_dir / "config.json").write_text(json.dumps(recipe_record(cfg), indent=2))
        (out_dir / "speakers.json").write_text(json.dumps(run.table.spk_id(), indent=2))
    log = Metrics(accelerator, cfg, out_dir, trackers)

    def export(name: str) -> Path:
        return export_run(accelerator, module, cfg, plan.model_dir, out_dir, name, run.table, state.global_step,
                          lora=run.lora)

    judged = JudgedEval(cfg, run.eval_rows, run.speaker_audio, run.table, out_dir, main, accelerator.print,
                        sharded=accelerator.distributed_type == DistributedType.FSDP)

    def evaluate_and_judge() -> tuple[dict, str]:
        """Teacher-forced losses (a held-out split) and the judged eval; a new best is exported
        (checkpoint.select=best). Returns the values and why the guard stops the run ("": it does not)."""
        values = evaluate(module, eval_dl, accelerator) if eval_dl is not None else {}
        if values:
            log(values, state.global_step)
        if not judged.active:
            return values, ""
        step = state.global_step
        shared = [None]
        if main:
            judge_values, rows, audio = judged(accelerator.unwrap_model(module).model, run.tts.processor, step,
                                               state.judge_base or None)
            if step == 0:
                state.judge_base = {k: v for k, v in judge_values.items() if not k.endswith("_delta")}
            memo = EvalState(state.judge_base, state.best_step, state.best_composite)
            new_best, stop = judged.decide(judge_values, memo, step) if step > 0 else (False, "")
            log(judge_values, step)
            if cfg.log.log_samples:
                judged.log_audio(accelerator, trackers, step, rows, audio)
            shared = [(judge_values, state.judge_base, memo.best_step, memo.best_composite, new_best, stop)]
        broadcast_object_list(shared)  # every process takes the same decisions (FSDP export needs them all)
        judge_values, state.judge_base, state.best_step, state.best_composite, new_best, stop = shared[0]
        if new_best and cfg.checkpoint.select == "best":
            accelerator.print(f"step {step}: best composite so far ({state.best_composite:.4f}): exporting")
            export("export")
        return {**values, **judge_values}, stop

    if state.global_step == 0 and judged.active and not state.judge_base:
        evaluate_and_judge()  # step 0: the base model, the reference every later eval is compared with
    last, guard_stop = {}, ""
    bar = tqdm(total=total, initial=state.global_step, disable=not main, desc="sft", unit="step")
    clock = StepClock(accelerator.device)
    window = {"frames": 0.0, "real": 0.0, "slots": 0.0, "t": time.perf_counter()}
    done = state.global_step >= total
    while not done:
        run.sampler.use_epoch(state.epoch)
        epoch_dl = accelerator.skip_first_batches(train_dl, state.batch_in_epoch) if state.batch_in_epoch else train_dl
        clock.idle()
        for batch in epoch_dl:
            clock.batch_arrived(batch)
            state.batch_in_epoch += 1
            with accelerator.accumulate(module):
                out = module(batch)
                accelerator.backward(out["loss"])
                clock.computed(int(out["num_frames"]))
                grad_norm = None
                if accelerator.sync_gradients:
                    grad_norm = accelerator.clip_grad_norm_(module.parameters(), tc.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            state.global_step += 1
            timing = clock.stepped()
            bar.update(1)
            # losses: the mean over processes (a multi-process run logs what a single one would); counts: the sum
            n = accelerator.num_processes
            summed = accelerator.reduce(torch.cat([torch.stack([out["loss"].detach(), out["talker_ce"], out["subtalker_ce"]]).float(),
                                                   torch.tensor(timing.pop("counts"), device=out["loss"].device)]),
                                        reduction="sum")
            losses, (frames, real, slots) = (summed[:3] / n).tolist(), summed[3:].tolist()
            last = dict(zip(("loss", "talker_ce", "subtalker_ce"), losses))
            log({**timing, "timing/frames": int(frames), "timing/real_positions": int(real),
                 "timing/padded_positions": int(slots), "timing/padding_efficiency": real / max(1.0, slots),
                 "timing/processes": n}, state.global_step, track=False)
            window.update(frames=window["frames"] + frames, real=window["real"] + real, slots=window["slots"] + slots)
            bar.set_postfix(loss=f"{last['loss']:.3f}")
            if state.global_step % cfg.log.every_steps == 0 or state.global_step == total:
                dt = max(1e-9, time.perf_counter() - window["t"])
                log({**{f"train/{k}": v for k, v in last.items()}, "train/lr": scheduler.get_last_lr()[0],
                     "train/grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
                     "train/frames_per_s": window["frames"] / dt,
                     "train/padding_efficiency": window["real"] / max(1.0, window["slots"]),
                     "train/epoch": state.epoch}, state.global_step)
                window = {"frames": 0.0, "real": 0.0, "slots": 0.0, "t": time.perf_counter()}
            if (cfg.log.eval_every_steps and state.global_step % cfg.log.eval_every_steps == 0
                    and state.global_step < total):  # the end of the run is evaluated below
                guard_stop = evaluate_and_judge()[1]
            if cfg.checkpoint.every_steps and state.global_step % cfg.checkpoint.every_steps == 0:
                save_checkpoint(accelerator, state, out_dir / "checkpoints", cfg.checkpoint.keep_last)
            clock.idle()  # logging, evaluation and checkpoints are not the next batch's data wait
            if state.global_step >= total or guard_stop:
                done = True
                break
        else:
            state.epoch += 1
            state.batch_in_epoch = 0
            if cfg.export.every_epoch:
                export(f"export-epoch-{state.epoch - 1}")
    bar.close()

    summary = {"global_step": state.global_step, "num_processes": accelerator.num_processes,
               "distributed_type": str(accelerator.distributed_type), "device": str(accelerator.device),
               **{f"final_{k}": v for k, v in last.items()}}
    if guard_stop:
        accelerator.print(f"eval.guard stopped training: {guard_stop}")
        summary["stopped_by_guard"] = guard_stop
    else:
        summary.update(evaluate_and_judge()[0])
    save_checkpoint(accelerator, state, out_dir / "checkpoints", cfg.checkpoint.keep_last)
    summary.update(export_summary(cfg, state, judged.active))
    if summary.get("warning"):
        accelerator.print(f"warning: {summary['warning']}")
    if cfg.checkpoint.select == "last" or state.best_step < 0:
        if cfg.checkpoint.select == "best":
            accelerator.print("checkpoint.select=best: no eval had a composite (see the judges' notes); exporting the last step")
        summary["export"] = str(export("export"))
    else:
        summary["export"] = str(out_dir / "export")
        accelerator.print(f"checkpoint.select=best: export/ holds step {state.best_step} "
                          f"(composite {state.best_composite:.4f}; the last step is in checkpoints/)")
    if main:
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    accelerator.end_training()
    return summary


class StepClock:
    """Where each optimizer step's time goes, per micro-batch: waiting for the batch, forward + backward,
    and the optimizer. Off the CPU the device is synchronised at each mark, so the split is device time."""

    def __init__(self, device: torch.device):
        self.sync = device.type != "cpu"
        self.start = self.mark = self._now()
        self._reset()

    def _now(self) -> float:
        if self.sync:
            torch.accelerator.synchronize()
        return time.perf_counter()

    def _lap(self) -> float:
        now = self._now()
        lap, self.mark = now - self.mark, now
        return lap

    def _reset(self) -> None:
        self.wait, self.compute, self.counts = [], [], [0.0, 0.0, 0.0]  # frames, real positions, padded slots

    def idle(self) -> None:
        """From here on the loop waits for the next batch."""
        self.mark = self._now()

    def batch_arrived(self, batch) -> None:
        self.wait.append(self._lap())
        self.counts[1] += batch.real_positions
        self.counts[2] += batch.attention_mask.numel()

    def computed(self, frames: int) -> None:
        self.compute.append(self._lap())
        self.counts[0] += frames

    def stepped(self) -> dict:
        """The step's record (``counts``: this process's frames, real positions and padded slots)."""
        record = {"timing/t": round(self._now() - self.start, 6), "timing/optimizer_s": round(self._lap(), 6),
                  "timing/data_wait_s": [round(t, 6) for t in self.wait],
                  "timing/fwd_bwd_s": [round(t, 6) for t in self.compute], "counts": self.counts}
        self._reset()
        return record


class Metrics:
    """Every logged value goes to the trackers (if any) and, from the main process, to ``metrics.jsonl``."""

    def __init__(self, accelerator, cfg: SFTConfig, out_dir: Path, trackers: list[str]):
        self.accelerator, self.trackers, self.path = accelerator, trackers, out_dir / "metrics.jsonl"
        if trackers:
            init_kwargs = {}
            if "wandb" in trackers:
                os.environ.setdefault("WANDB_MODE", "offline")
                init_kwargs["wandb"] = {"dir": str(out_dir), "name": cfg.log.run_name or out_dir.name}
            accelerator.init_trackers(cfg.log.project, config=_flat(asdict(cfg)), init_kwargs=init_kwargs)

    def __call__(self, values: dict, step: int, track: bool = True) -> None:
        if self.trackers and track:
            self.accelerator.log(values, step=step)
        if self.accelerator.is_main_process:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": step, **values}) + "\n")


def save_checkpoint(accelerator, state: TrainerState, ckpt_root: Path, keep_last: int) -> None:
    """``accelerator.save_state`` into a temp folder, swapped in whole as ``step-N``; the oldest beyond
    ``keep_last`` removed. Every process calls this."""
    main = accelerator.is_main_process
    final = ckpt_root / f"step-{state.global_step:08d}"
    tmp = ckpt_root / f".tmp-step-{state.global_step:08d}"
    if main and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    if main:
        (tmp / "trainer_state.json").write_text(trainer_state_record(state.state_dict()))
        publish_dir(tmp, final)  # a re-saved step is swapped in whole, never deleted first
        for old in checkpoints(ckpt_root)[: -max(1, keep_last)]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


@torch.no_grad()
def evaluate(module, eval_dl, accelerator) -> dict:
    """Held-out teacher-forced losses: talker CE and code-predictor CE per codebook."""
    was_training = module.training
    module.eval()
    tot = {"talker": 0.0, "sub": None, "n": 0}
    for batch in eval_dl:
        out = module(batch)
        w = int(out["num_frames"])
        tot["talker"] += float(out["talker_ce"]) * w
        per = out["subtalker_ce_per_codebook"].float().cpu() * w
        tot["sub"] = per if tot["sub"] is None else tot["sub"] + per
        tot["n"] += w
    module.train(was_training)
    vals = torch.tensor([tot["talker"], float(tot["n"])], device=accelerator.device)
    vals = accelerator.reduce(vals, reduction="sum")
    sub = accelerator.reduce(tot["sub"].to(accelerator.device), reduction="sum").cpu()
    n = max(1.0, float(vals[1]))
    res = {"eval/talker_ce": float(vals[0]) / n, "eval/subtalker_ce": float(sub.sum()) / n / sub.numel()}
    for j, v in enumerate((sub / n).tolist()):
        res[f"eval/subtalker_ce_cb{j + 1:02d}"] = v
    return res


def export_summary(cfg: SFTConfig, state: TrainerState, judged: bool) -> dict:
    """What the summary says about the judged eval: the base model's composite, the best eval, and a warning
    when no trained step beat the base model on the composite."""
    out: dict = {}
    if not judged or "judge/composite" not in state.judge_base:
        return out
    base = state.judge_base["judge/composite"]
    out.update({"base_composite": base, "best_step": state.best_step, "best_composite": state.best_composite})
    if state.best_composite is not None and state.best_composite <= base:
        out["warning"] = (f"no evaluated step beat the base model on the composite (best {state.best_composite:.4f} "
                          f"at step {state.best_step}, base {base:.4f})")
    return out


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out
