"""``GRPOConfig``: every setting of ``qwen-tts-ext grpo`` (YAML keys = these names; flags map onto them)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from qwen_tts_ext.errors import UserError


@dataclass
class RolloutConfig:
    prompts_per_step: int = 2  # prompts per process per step (each a group of samples_per_prompt rollouts)
    samples_per_prompt: int = 4  # K
    temperature: float = 1.0  # codebook-0 sampling temperature (the log-probs use the same)
    top_k: int = 0  # 0 = off; truncation is not modelled in the log-probs (off-policy ratios)
    top_p: float = 1.0
    subtalker_temperature: float = 1.0
    subtalker_top_k: int = 0
    max_frames: int = 0  # 0 = synthesis/bounds.frame_cap(text), as synthesis caps


@dataclass
class RewardConfig:
    weights: dict = field(default_factory=lambda: {"duration": 1.0})  # term -> weight (grpo/rewards.py)
    cap_penalty: float = 1.0  # subtracted from a rollout that hit the frame cap (no EOS)
    duration_target: float = 0.0  # seconds for the `duration` term; 0 = the text's slow-speech estimate
    stop_margin: float = 1.5  # stop_in_time: EOS within stop_margin x expected seconds + stop_slack_s
    stop_slack_s: float = 1.0
    asr: str = ""  # a local transformers ASR folder for wer/cer (default: pocketsphinx, English)
    threads: int = 1  # CPU threads of the judges


@dataclass
class ObjectiveConfig:
    clip_eps: float = 0.2
    kl_beta: float = 0.04  # weight of the k3 KL to the reference
    normalize_std: bool = True  # divide group advantages by the group's std
    subtalker: bool = False  # include codebooks 1..15 in the log-probs (and train the code predictor on them)
    inner_epochs: int = 1  # updates per batch of rollouts


@dataclass
class TrainConfig:
    steps: int = 100
    lr: float = 1e-6
    weight_decay: float = 0.0  # 0 keeps a zero-reward run exactly still
    max_grad_norm: float = 1.0
    seed: int = 0
    precision: Literal["no", "bf16", "fp16"] = "no"  # autocast; master weights stay float32
    lora_rank: int = 0  # > 0: LoRA adapters on the talker (train/lora.py) instead of full weights
    lora_alpha: float = 32.0
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    train_code_predictor: bool = False  # full runs: the code predictor trains too (only useful with objective.subtalker)


@dataclass
class CheckpointConfig:
    every_steps: int = 50  # 0 = only at the end
    keep_last: int = 2
    resume: bool = False


@dataclass
class LogConfig:
    tracker: Literal["none", "tensorboard", "wandb"] = "none"
    project: str = "qwen-tts-ext-grpo"
    samples_every: int = 0  # write a few rollouts' audio to samples/step-N/ every N steps (0 = never)
    samples: int = 2


@dataclass
class GRPOConfig:
    """Settings of ``qwen-tts-ext grpo``."""

    model: str = ""  # the starting policy: a Qwen3-TTS checkpoint folder (base, custom_voice, a blend)
    reference: str = ""  # the KL anchor (default: the starting model itself)
    prompts: str = ""  # JSONL: {"text", "speaker", "instruct"?, "language"?, "ref_audio"?}
    speakers: str = ""  # speakers.safetensors or a prepared folder; default: the checkpoint's spk_id rows
    output_dir: str = ""
    overwrite: bool = False
    export_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def validate(self) -> None:
        UserError.collect(self.problems(required=False))

    def check(self) -> None:
        UserError.collect(self.problems())

    def problems(self, required: bool = True) -> list[str]:
        out = []
        if required:
            out += [f"pass {flag}" for key, flag in (("model", "--model CKPT"), ("prompts", "--prompts FILE.jsonl"),
                                                     ("output_dir", "--output-dir DIR")) if not getattr(self, key)]
        r, o, t = self.rollout, self.objective, self.train
        positive = {"rollout.prompts_per_step": r.prompts_per_step, "train.steps": t.steps, "train.lr": t.lr,
                    "rollout.temperature": r.temperature, "rollout.subtalker_temperature": r.subtalker_temperature,
                    "objective.inner_epochs": o.inner_epochs, "checkpoint.keep_last": self.checkpoint.keep_last}
        out += [f"{k} must be > 0 (got {v})" for k, v in positive.items() if not (isinstance(v, (int, float)) and v > 0)]
        if r.samples_per_prompt < 2:
            out.append(f"rollout.samples_per_prompt must be >= 2 (got {r.samples_per_prompt}): advantages are "
                       "relative to the group of samples of one prompt")
        nonneg = {"rollout.max_frames": r.max_frames, "rollout.top_k": r.top_k, "objective.kl_beta": o.kl_beta,
                  "reward.cap_penalty": self.reward.cap_penalty, "reward.duration_target": self.reward.duration_target,
                  "train.weight_decay": t.weight_decay, "train.lora_rank": t.lora_rank,
                  "checkpoint.every_steps": self.checkpoint.every_steps, "log.samples_every": self.log.samples_every}
        out += [f"{k} must be >= 0 (got {v})" for k, v in nonneg.items() if not (isinstance(v, (int, float)) and v >= 0)]
        if not 0 < r.top_p <= 1:
            out.append(f"rollout.top_p must be in (0, 1] (got {r.top_p})")
        if not 0 < o.clip_eps < 1:
            out.append(f"objective.clip_eps must be in (0, 1) (got {o.clip_eps})")
        if not isinstance(self.reward.weights, dict) or not self.reward.weights:
            out.append("reward.weights must be a mapping of term -> weight, e.g. {duration: 1.0}")
        else:
            from qwen_tts_ext.grpo.rewards import check_weights

            out += check_weights(self.reward.weights)
        if not math.isfinite(t.max_grad_norm) or t.max_grad_norm <= 0:
            out.append(f"train.max_grad_norm must be > 0 (got {t.max_grad_norm})")
        return out
