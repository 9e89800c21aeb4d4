"""The SFT training loop: one readable function; accelerate owns devices, precision, accumulation,
distribution and checkpoint state.

    accelerate launch finetuning/sft_12hz.py --config configs/sft_1.7b.yaml data.path=prep_out

Resume (``checkpoint.resume=true``) restores model, optimizer, scheduler, RNG and the position in
the epoch, so an interrupted run (even by ``kill -9``) ends with the same weights as an
uninterrupted one on CPU with a fixed seed.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from qwen_tts_ext.errors import UserError
from qwen_tts_ext.outputs import publish_dir
from qwen_tts_ext.train.config import SFTConfig
from qwen_tts_ext.train.losses import sft_loss
from qwen_tts_ext.train.preflight import check_inputs, start_run_dir, trainer_state_record
from qwen_tts_ext.train.preflight import checkpoints as _checkpoints


class SFTModule(torch.nn.Module):
    """Wraps the model so the whole loss runs inside one ``forward`` (what DDP/FSDP need to sync)."""

    def __init__(self, model, speaker_vectors: torch.Tensor, subtalker_weight: float, subtalker_frame_fraction: float = 1.0):
        super().__init__()
        self.model = model
        self.register_buffer("speaker_vectors", speaker_vectors.to(torch.float32), persistent=False)
        self.subtalker_weight = subtalker_weight
        self.subtalker_frame_fraction = subtalker_frame_fraction  # training only; evaluation scores every frame

    def forward(self, batch):
        out = sft_loss(self.model.talker, batch, self.speaker_vectors, self.subtalker_weight,
                       self.subtalker_frame_fraction if self.training else 1.0)
        return {
            "loss": out.loss,
            "talker_ce": out.talker_ce,
            "subtalker_ce": out.subtalker_ce,
            "subtalker_ce_per_codebook": out.subtalker_ce_per_codebook,
            "num_frames": torch.tensor(out.num_frames),
        }


@dataclass
class TrainerState:
    """Position in training, saved with every checkpoint (registered with accelerate)."""

    global_step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # batches consumed in the current epoch (including accumulation micro-steps)

    def state_dict(self):
        return asdict(self)

    def load_state_dict(self, d):
        self.global_step, self.epoch, self.batch_in_epoch = d["global_step"], d["epoch"], d["batch_in_epoch"]


def _param_groups(model, weight_decay: float):
    """AdamW groups: no decay on norms, biases and embeddings."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "norm" in name or "embedding" in name or name.endswith(".bias"):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


ADAMW_KERNELS = {"fused": {"fused": True}, "foreach": {"foreach": True}, "for-loop": {"foreach": False}}


def build_adamw(groups, tc, say=print):
    """AdamW with the configured kernel; "fused" falls back to "foreach" where torch has no fused kernel."""

    def adamw(impl: str):
        return torch.optim.AdamW(groups, lr=tc.lr, betas=tuple(tc.adam_betas), eps=tc.adam_eps, **ADAMW_KERNELS[impl])

    try:
        return adamw(tc.adamw_impl)
    except RuntimeError as exc:  # e.g. parameters on a device without the fused kernel
        if tc.adamw_impl != "fused":
            raise
        say(f"fused AdamW unavailable here ({str(exc).splitlines()[0][:120]}); using foreach")
        return adamw("foreach")


def _scheduler(optimizer, kind: str, warmup: int, total: int):
    from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

    if kind == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup, total)
    if kind == "linear":
        return get_linear_schedule_with_warmup(optimizer, warmup, total)
    return get_constant_schedule_with_warmup(optimizer, warmup)


def load_model(model_path: str, cfg: SFTConfig):
    """Load with the stock loader (processor + speech tokenizer included), weights in the training dtype."""
    from qwen_tts import Qwen3TTSModel

    from qwen_tts_ext.checkpoint_io import require_tts_checkpoint

    path = require_tts_checkpoint(model_path, what="--model", types=("base", "custom_voice"), llm_flag=None)
    dtype = torch.bfloat16 if cfg.train.pure_bf16 else torch.float32
    attn = cfg.train.attn_implementation
    try:
        tts = Qwen3TTSModel.from_pretrained(str(path), dtype=dtype, attn_implementation=attn)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load {path} as a Qwen3-TTS checkpoint: {str(exc).splitlines()[0][:300]}") from None
    return tts, path


def train(cfg: SFTConfig, *, stop_after_steps: int | None = None) -> dict:
    """Run SFT. Returns a summary (final losses, export path). ``stop_after_steps`` simulates an interruption (tests)."""
    # ---- validate inputs before anything loads: model identity, data, run folder (preflight.py) ----
    plan = check_inputs(cfg)

    from accelerate import Accelerator
    from accelerate.utils import DistributedType, ProjectConfiguration, set_seed
    from tqdm.auto import tqdm

    from qwen_tts_ext.train.data import BucketBatchSampler, SFTDataset, TextTokenizer, collate_examples, load_prepared, split_train_eval
    from qwen_tts_ext.train.export import export_custom_voice
    from qwen_tts_ext.train.layout import SpecialIds
    from qwen_tts_ext.train.speaker_lock import build_speaker_table, load_speaker_vectors

    out_dir = plan.output_dir
    ckpt_root = out_dir / "checkpoints"
    tc = cfg.train
    hf_ds = load_prepared(cfg.data.path)
    spk_path = Path(cfg.data.speakers) if cfg.data.speakers else Path(cfg.data.path) / "speakers.safetensors"
    vectors = load_speaker_vectors(spk_path)

    trackers = [] if cfg.log.tracker == "none" else [cfg.log.tracker]
    accelerator = Accelerator(
        gradient_accumulation_steps=tc.grad_accum,
        mixed_precision=tc.precision,
        log_with=trackers or None,
        project_config=ProjectConfiguration(project_dir=str(out_dir), logging_dir=str(out_dir / "logs")),
        step_scheduler_with_optimizer=False,
    )
    set_seed(tc.seed, device_specific=False)
    main = accelerator.is_main_process
    accelerator.wait_for_everyone()  # every process has checked the run folder before the main one writes in it
    if main:
        start_run_dir(plan)  # marker (new run), or our previous run cleared (overwrite)

    tts, model_dir = load_model(str(plan.model_dir), cfg)
    model = tts.model
    tconf = model.config.talker_config
    ids = SpecialIds.from_config(model.config)
    codes_max = max(max(max(f) for f in row) for row in hf_ds.select(range(min(len(hf_ds), 64)))["codes"])
    if codes_max >= tconf.code_predictor_config.vocab_size:
        raise UserError(f"dataset codes reach {codes_max}, beyond the codebook size: it was prepared with another tokenizer")
    table = build_speaker_table(list(set(hf_ds["speaker"])), vectors, tconf, tconf.hidden_size)

    # ---- what trains ----------------------------------------------------------------------------
    for p in model.parameters():
        p.requires_grad_(True)
    if model.speaker_encoder is not None:
        model.speaker_encoder.requires_grad_(False)  # speaker vectors come from data prep
    if tc.freeze_text_embedding:
        model.talker.model.text_embedding.requires_grad_(False)
    if not tc.train_code_predictor:
        model.talker.code_predictor.requires_grad_(False)
    lora = tc.lora_rank > 0
    sharded = accelerator.distributed_type == DistributedType.FSDP  # weights split across ranks
    if lora and sharded:
        raise UserError("LoRA with FSDP is not supported here: use DDP (configs/accelerate/ddp.yaml); LoRA is small")
    if lora:
        from qwen_tts_ext.train.lora import apply_lora

        n = apply_lora(model, tc.lora_rank, tc.lora_alpha, tc.lora_dropout, tc.lora_targets, tc.lora_code_predictor)
        accelerator.print(f"LoRA rank {tc.lora_rank}: {n:,} trainable parameters")
    if tc.gradient_checkpointing:
        model.talker.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.talker.code_predictor.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()

    # ---- data ----------------------------------------------------------------------------------
    use_instruct = cfg.data.use_instruct
    if use_instruct and str(model.config.tts_model_size) == "0b6" and "instruct" in hf_ds.column_names \
            and any(hf_ds["instruct"]):
        # stock qwen_tts drops `instruct` for 0.6B models at inference: training on it would teach a prefix never fed
        accelerator.print("warning: the 0.6B model ignores instruct at inference; training without the instruct prefix")
        use_instruct = False
    tok = TextTokenizer(tts.processor.tokenizer)
    train_idx, eval_idx = split_train_eval(len(hf_ds), cfg.data.eval_fraction, cfg.data.eval_max, tc.seed)
    train_ds = SFTDataset(hf_ds.select(train_idx), tok, ids, table.names, use_instruct, cfg.data.use_language)
    eval_ds = SFTDataset(hf_ds.select(eval_idx), tok, ids, table.names, use_instruct, cfg.data.use_language) if eval_idx else None
    sampler = BucketBatchSampler(train_ds.lengths, tc.batch_size, tc.max_tokens_per_batch or None, seed=tc.seed)
    train_dl = torch.utils.data.DataLoader(train_ds, batch_sampler=sampler, collate_fn=collate_examples,
                                           num_workers=cfg.data.num_workers)
    eval_dl = None
    if eval_ds is not None:
        eval_dl = torch.utils.data.DataLoader(
            eval_ds, batch_sampler=BucketBatchSampler(eval_ds.lengths, tc.batch_size, None, seed=0),
            collate_fn=collate_examples)

    module = SFTModule(model, table.vectors, tc.subtalker_weight, tc.subtalker_frame_fraction)
    optimizer = build_adamw(_param_groups(module, tc.weight_decay), tc, accelerator.print)
    module, optimizer, train_dl = accelerator.prepare(module, optimizer, train_dl)
    if eval_dl is not None:
        eval_dl = accelerator.prepare(eval_dl)

    steps_per_epoch = max(1, math.ceil(len(train_dl) / tc.grad_accum))
    total_steps = tc.max_steps if tc.max_steps > 0 else tc.epochs * steps_per_epoch
    warmup = tc.warmup_steps or int(round(tc.warmup_ratio * total_steps))
    scheduler = _scheduler(optimizer, tc.schedule, warmup, total_steps)
    state = TrainerState()
    accelerator.register_for_checkpointing(scheduler, state)

    if plan.mode == "resume":
        latest = plan.resume_from  # checked to be this suite's (load_state unpickles its files)
        accelerator.load_state(str(latest))
        accelerator.print(f"resumed from {latest} (step {state.global_step}, epoch {state.epoch})")

    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
        (out_dir / "speakers.json").write_text(json.dumps(table.spk_id(), indent=2))
    if trackers:
        init_kwargs = {}
        if "wandb" in trackers:
            os.environ.setdefault("WANDB_MODE", "offline")
            init_kwargs["wandb"] = {"dir": str(out_dir), "name": cfg.log.run_name or out_dir.name}
        accelerator.init_trackers(cfg.log.project, config=_flat(asdict(cfg)), init_kwargs=init_kwargs)
    metrics_path = out_dir / "metrics.jsonl"

    def log(values: dict, step: int) -> None:
        if trackers:
            accelerator.log(values, step=step)
        if main:
            with open(metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": step, **values}) + "\n")

    def save_checkpoint() -> None:
        final = ckpt_root / f"step-{state.global_step:08d}"
        tmp = ckpt_root / f".tmp-step-{state.global_step:08d}"
        if main and tmp.exists():
            shutil.rmtree(tmp)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp), safe_serialization=True)
        if main:
            (tmp / "trainer_state.json").write_text(trainer_state_record(state.state_dict()))
            publish_dir(tmp, final)  # a re-saved step is swapped in whole, never deleted first
            for old in _checkpoints(ckpt_root)[: -max(1, cfg.checkpoint.keep_last)]:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()

    def export(name: str) -> Path:
        path = out_dir / name
        unwrapped = accelerator.unwrap_model(module).model
        full_state = None
        if sharded:  # FSDP: every rank takes part in gathering the full weights; the main process writes them
            gathered = accelerator.get_state_dict(module)
            full_state = {k[len("model."):]: v for k, v in gathered.items() if k.startswith("model.")} if main else None
        if main:
            if not lora or cfg.export.lora in ("merge", "both"):
                export_custom_voice(unwrapped, model_dir, path, table,
                                    dtype=cfg.export.dtype, max_shard_gb=cfg.export.max_shard_gb,
                                    provenance={"step": state.global_step, "recipe": asdict(cfg)}, state=full_state)
            if lora and cfg.export.lora in ("adapter", "both"):
                from qwen_tts_ext.train.export import export_adapter

                adapter = export_adapter(unwrapped, out_dir / f"{name}-adapter", table, base=str(model_dir))
                if cfg.export.lora == "adapter":
                    path = adapter
        accelerator.wait_for_everyone()
        if lora and cfg.export.lora == "adapter":
            path = out_dir / f"{name}-adapter"
        return path

    # ---- loop ------------------------------------------------------------------------------------
    last = {}
    bar = tqdm(total=total_steps, initial=state.global_step, disable=not main, desc="sft", unit="step")
    window = {"frames": 0, "real": 0, "slots": 0, "t": time.perf_counter()}
    done = state.global_step >= total_steps
    while not done:
        sampler.use_epoch(state.epoch)
        epoch_dl = accelerator.skip_first_batches(train_dl, state.batch_in_epoch) if state.batch_in_epoch else train_dl
        for batch in epoch_dl:
            state.batch_in_epoch += 1
            window["real"] += batch.real_positions
            window["slots"] += batch.attention_mask.numel()
            with accelerator.accumulate(module):
                out = module(batch)
                accelerator.backward(out["loss"])
                grad_norm = None
                if accelerator.sync_gradients:
                    grad_norm = accelerator.clip_grad_norm_(module.parameters(), tc.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            window["frames"] += int(out["num_frames"])
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            state.global_step += 1
            bar.update(1)
            # mean over processes, so a multi-process run logs the same quantity as a single one
            reduced = accelerator.reduce(torch.stack([out["loss"].detach(), out["talker_ce"], out["subtalker_ce"]]),
                                         reduction="mean")
            last = {"loss": float(reduced[0]), "talker_ce": float(reduced[1]), "subtalker_ce": float(reduced[2])}
            bar.set_postfix(loss=f"{last['loss']:.3f}")
            if state.global_step % cfg.log.every_steps == 0 or state.global_step == total_steps:
                dt = max(1e-9, time.perf_counter() - window["t"])
                log({**{f"train/{k}": v for k, v in last.items()},
                     "train/lr": scheduler.get_last_lr()[0],
                     "train/grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
                     "train/frames_per_s": window["frames"] * accelerator.num_processes / dt,
                     "train/padding_efficiency": window["real"] / max(1, window["slots"]),
                     "train/epoch": state.epoch}, state.global_step)
                window = {"frames": 0, "real": 0, "slots": 0, "t": time.perf_counter()}
            if eval_dl is not None and cfg.log.eval_every_steps and state.global_step % cfg.log.eval_every_steps == 0:
                log(evaluate(module, eval_dl, accelerator), state.global_step)
                if cfg.log.log_samples:
                    log_samples(accelerator, module, tts, table, cfg, out_dir, state.global_step, trackers)
            if cfg.checkpoint.every_steps and state.global_step % cfg.checkpoint.every_steps == 0:
                save_checkpoint()
            if stop_after_steps is not None and state.global_step >= stop_after_steps:
                bar.close()
                accelerator.end_training()
                return {"stopped_at": state.global_step}
            if state.global_step >= total_steps:
                done = True
                break
        else:
            state.epoch += 1
            state.batch_in_epoch = 0
            if cfg.export.every_epoch:
                export(f"export-epoch-{state.epoch - 1}")
    bar.close()

    summary = {"global_step": state.global_step, "num_processes": accelerator.num_processes,
               "distributed_type": str(accelerator.distributed_type), **{f"final_{k}": v for k, v in last.items()}}
    if eval_dl is not None:
        ev = evaluate(module, eval_dl, accelerator)
        log(ev, state.global_step)
        summary.update(ev)
        if cfg.log.log_samples:
            log_samples(accelerator, module, tts, table, cfg, out_dir, state.global_step, trackers)
    save_checkpoint()
    summary["export"] = str(export("export"))
    if main:
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    accelerator.end_training()
    return summary


def run(cfg: SFTConfig) -> int:
    """``qwen-tts-ext sft``: train; the export's path is the result (stdout, main process only)."""
    from accelerate import PartialState

    from qwen_tts_ext.command import emit

    summary = train(cfg)
    if PartialState().is_main_process:
        emit(f"export: {summary['export']}")
    return 0


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


@torch.no_grad()
def log_samples(accelerator, module, tts, table, cfg: SFTConfig, out_dir: Path, step: int, trackers: list[str]) -> None:
    """Synthesize one short sample per speaker with the in-training weights; save WAVs and log audio + mel image."""
    if not accelerator.is_main_process:
        return
    import numpy as np
    import soundfile as sf

    from qwen_tts_ext.train.sampling import mel_image, synthesize_with_vector

    model = accelerator.unwrap_model(module).model
    was_training = model.training
    model.eval()
    sample_dir = out_dir / "samples"
    sample_dir.mkdir(parents=True, exist_ok=True)
    for name, vec in zip(table.names, table.vectors):
        torch.manual_seed(0)
        wav, sr, stopped = synthesize_with_vector(model, tts.processor, cfg.log.sample_text, vec,
                                                  language=cfg.log.sample_language, max_frames=cfg.log.sample_max_frames)
        path = sample_dir / f"step-{step:08d}-{name}.wav"
        sf.write(path, wav, sr)
        img = mel_image(wav, sr)
        for tracker_name in trackers:
            tracker = accelerator.get_tracker(tracker_name, unwrap=True)
            if tracker_name == "wandb":
                import wandb

                tracker.log({f"samples/{name}": wandb.Audio(wav, sample_rate=sr, caption=f"stopped_by_eos={stopped}"),
                             f"samples/{name}_mel": wandb.Image(img)}, step=step)
            elif tracker_name == "tensorboard":
                tracker.add_audio(f"samples/{name}", torch.from_numpy(np.asarray(wav, dtype=np.float32)), step, sample_rate=sr)
                tracker.add_image(f"samples/{name}_mel", img, step, dataformats="HWC")
    model.train(was_training)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out
