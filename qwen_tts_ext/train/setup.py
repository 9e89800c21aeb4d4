"""What one SFT run is built from, in the order ``loop.train`` builds it: the model (loaded with the stock
loader, frozen where it should be, LoRA, gradient checkpointing), the speaker table, the dataloaders,
the optimizer and the learning-rate schedule. Nothing here knows about accelerate beyond the flag
``sharded`` (FSDP splits the weights across processes, which LoRA does not support).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from qwen_tts import Qwen3TTSModel
from transformers import (get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup,
                          get_linear_schedule_with_warmup)

from qwen_tts_ext.errors import UserError
from qwen_tts_ext.train.config import SFTConfig, TrainConfig
from qwen_tts_ext.train.data import (BucketBatchSampler, SFTDataset, TextTokenizer, collate_examples, load_prepared,
                                     split_train_eval)
from qwen_tts_ext.train.layout import SpecialIds
from qwen_tts_ext.train.lora import apply_lora
from qwen_tts_ext.train.losses import sft_loss
from qwen_tts_ext.train.speaker_lock import SpeakerTable, build_speaker_table, load_speaker_vectors


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
class RunParts:
    """What ``build_run`` returns: the stock wrapper (processor, for samples), the speaker table, the
    module to train and its dataloaders (not yet prepared by accelerate)."""

    tts: Qwen3TTSModel
    table: SpeakerTable
    module: SFTModule
    train_dl: torch.utils.data.DataLoader
    sampler: BucketBatchSampler  # the train batches' order: ``use_epoch(n)`` at the start of each epoch
    eval_dl: torch.utils.data.DataLoader | None
    lora: bool
    eval_rows: list[dict]  # the held-out rows' text, speaker and language (the judged eval speaks them)
    speaker_audio: dict[str, list[str]]  # per speaker, its recordings (reference clips first): the judges' reference


def load_model(model_path: str | Path, cfg: SFTConfig) -> Qwen3TTSModel:
    """Load with the stock loader (processor + speech tokenizer included), weights in the training dtype."""
    dtype = torch.bfloat16 if cfg.train.pure_bf16 else torch.float32
    try:
        return Qwen3TTSModel.from_pretrained(str(model_path), dtype=dtype, attn_implementation=cfg.train.attn_implementation)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load {model_path} as a Qwen3-TTS checkpoint: {str(exc).splitlines()[0][:300]}") from None


def prepare_model(model, tc: TrainConfig, sharded: bool, say=print) -> bool:
    """Set what trains (in place): speaker encoder and, by default, the text embedding frozen; LoRA adapters
    (then only they train); gradient checkpointing. Returns whether LoRA is on."""
    for p in model.parameters():
        p.requires_grad_(True)
    if model.speaker_encoder is not None:
        model.speaker_encoder.requires_grad_(False)  # speaker vectors come from data prep
    if tc.freeze_text_embedding:
        model.talker.model.text_embedding.requires_grad_(False)
    if not tc.train_code_predictor:
        model.talker.code_predictor.requires_grad_(False)
    lora = tc.lora_rank > 0
    if lora and sharded:
        raise UserError("LoRA with FSDP is not supported here: use DDP (configs/accelerate/ddp.yaml); LoRA is small")
    if lora:
        n = apply_lora(model, tc.lora_rank, tc.lora_alpha, tc.lora_dropout, tc.lora_targets, tc.lora_code_predictor)
        say(f"LoRA rank {tc.lora_rank}: {n:,} trainable parameters")
    if tc.gradient_checkpointing:
        for part in (model.talker, model.talker.code_predictor):
            part.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    return lora


def build_run(cfg: SFTConfig, model_dir: Path, sharded: bool, say=print) -> RunParts:
    """Prepared data + speaker vectors -> model -> speaker table -> datasets and dataloaders -> module."""
    tc = cfg.train
    hf_ds = load_prepared(cfg.data.path)  # format, columns and every code's range checked
    vectors = load_speaker_vectors(Path(cfg.data.speakers) if cfg.data.speakers else Path(cfg.data.path) / "speakers.safetensors")
    tts = load_model(model_dir, cfg)
    model = tts.model
    tconf = model.config.talker_config
    table = build_speaker_table(list(set(hf_ds["speaker"])), vectors, tconf, tconf.hidden_size)
    lora = prepare_model(model, tc, sharded, say)

    use_instruct = cfg.data.use_instruct
    if use_instruct and str(model.config.tts_model_size) == "0b6" and any(hf_ds["instruct"]):
        # stock qwen_tts drops `instruct` for 0.6B models at inference: training on it would teach a prefix never fed
        say("warning: the 0.6B model ignores instruct at inference; training without the instruct prefix")
        use_instruct = False
    tok, ids = TextTokenizer(tts.processor.tokenizer), SpecialIds.from_config(model.config)
    train_idx, eval_idx = split_train_eval(len(hf_ds), cfg.data.eval_fraction, cfg.data.eval_max, tc.seed)

    def dataset(idx):
        return SFTDataset(hf_ds.select(idx), tok, ids, table.names, use_instruct, cfg.data.use_language)

    train_ds = dataset(train_idx)
    sampler = BucketBatchSampler(train_ds.lengths, tc.batch_size, tc.max_tokens_per_batch or None, seed=tc.seed)
    train_dl = torch.utils.data.DataLoader(train_ds, batch_sampler=sampler, collate_fn=collate_examples,
                                           num_workers=cfg.data.num_workers)
    eval_dl = None
    if eval_idx:
        eval_ds = dataset(eval_idx)
        eval_dl = torch.utils.data.DataLoader(eval_ds, batch_sampler=BucketBatchSampler(eval_ds.lengths, tc.batch_size, None, seed=0),
                                              collate_fn=collate_examples)
    module = SFTModule(model, table.vectors, tc.subtalker_weight, tc.subtalker_frame_fraction)
    meta = hf_ds.select_columns(["text", "speaker", "language", "audio_path", "ref_audio"]).to_list()
    speaker_audio: dict[str, list[str]] = {}
    for r in sorted(meta, key=lambda r: not r["ref_audio"]):
        speaker_audio.setdefault(str(r["speaker"]).lower(), []).extend(x for x in (r["ref_audio"], r["audio_path"]) if x)
    return RunParts(tts=tts, table=table, module=module, train_dl=train_dl, sampler=sampler, eval_dl=eval_dl, lora=lora,
                    eval_rows=[meta[i] for i in eval_idx], speaker_audio=speaker_audio)


def param_groups(model, weight_decay: float):
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


def build_adamw(groups, tc: TrainConfig, say=print):
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


def total_steps(tc: TrainConfig, batches_per_epoch: int) -> int:
    """Optimizer steps of the run: ``max_steps`` if set, else ``epochs`` x steps per epoch."""
    return tc.max_steps if tc.max_steps > 0 else tc.epochs * max(1, math.ceil(batches_per_epoch / tc.grad_accum))


def build_scheduler(optimizer, tc: TrainConfig, total: int):
    """Warmup (``warmup_steps``, else ``warmup_ratio`` x total) then cosine, linear or constant."""
    warmup = tc.warmup_steps or int(round(tc.warmup_ratio * total))
    if tc.schedule == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup, total)
    if tc.schedule == "linear":
        return get_linear_schedule_with_warmup(optimizer, warmup, total)
    return get_constant_schedule_with_warmup(optimizer, warmup)
