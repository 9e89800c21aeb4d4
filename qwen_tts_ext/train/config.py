"""The SFT recipe: one dataclass tree, loaded strictly from YAML + ``key=value`` overrides.

What a resume may change. ``checkpoint.resume=true`` restores the optimizer, the scheduler, the RNG and
the position in the data, so it continues the saved run only if the objective and the data are the ones
that run trained on. Every key of the new recipe is compared with the run's ``output_dir/config.json``;
a change is refused with one line naming the changed keys (``--force`` resumes anyway), except the keys
in :data:`RESUME_MAY_CHANGE`:

- where and how the run is driven: ``output_dir``, ``overwrite``, ``force``, ``checkpoint.*``;
- what is logged, judged and exported: ``log.*``, ``eval.*`` (the judged evaluation), ``export.*``;
- how long it runs: ``train.max_steps``, ``train.epochs`` (extending a run; the lr schedule is then
  computed for the new length, and continues from the current step);
- switches that change speed or memory but not the math: ``train.gradient_checkpointing``,
  ``train.attn_implementation``, ``train.adamw_impl``, ``data.num_workers``.

Everything else is "objective or data", e.g. ``model``, ``data.path``/``data.speakers``, the held-out
split (``data.eval_*``), ``data.use_instruct``/``use_language``, ``train.subtalker_weight``,
``train.subtalker_frame_fraction``, the lr schedule (``lr``, ``schedule``, ``warmup_*``), the batch
(``batch_size``, ``max_tokens_per_batch``, ``grad_accum``), ``seed``, AdamW's settings, clipping,
precision (``precision``, ``pure_bf16``), what trains (``train_code_predictor``,
``freeze_text_embedding``) and every LoRA key. A key added to the recipe later is compared too (against
its default when an older run did not save it), so a new key is "objective" until listed here.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from qwen_tts_ext.errors import UserError

RESUME_MAY_CHANGE = ("output_dir", "overwrite", "force", "checkpoint.*", "log.*", "eval.*", "export.*",
                     "train.max_steps", "train.epochs", "train.gradient_checkpointing", "train.attn_implementation",
                     "train.adamw_impl", "data.num_workers")
PATH_KEYS = ("model", "data.path", "data.speakers")  # saved as absolute paths when they exist locally


@dataclass
class DataConfig:
    path: str = ""  # output folder of prepare_data.py (holds dataset/ and speakers.safetensors)
    speakers: str = ""  # speakers.safetensors; default <path>/speakers.safetensors
    eval_fraction: float = 0.05
    eval_max: int = 64
    use_instruct: bool = True  # place each row's `instruct` where generate_custom_voice(instruct=...) puts it
    use_language: bool = True  # fill the language slot from each row's `language`
    num_workers: int = 0


@dataclass
class TrainConfig:
    epochs: int = 3
    max_steps: int = -1  # optimizer steps; > 0 overrides epochs
    batch_size: int = 4
    max_tokens_per_batch: int = 0  # 0 = no budget; else cap (longest sequence x batch) in positions
    grad_accum: int = 1
    lr: float = 2e-5
    weight_decay: float = 0.01
    warmup_steps: int = 0
    warmup_ratio: float = 0.05
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    max_grad_norm: float = 1.0
    subtalker_weight: float = 0.3
    # Share of each micro-batch's frames (drawn at random) that the code predictor is trained on. 1.0 =
    # every frame (the exact objective). Below 1 the sub-talker loss is an unbiased but noisier estimate
    # of the same loss, and the code predictor's compute shrinks in proportion. It is about 40% of the
    # FLOPs of the 1.7B and about 70% of the 0.6B. Evaluation always scores every frame.
    subtalker_frame_fraction: float = 1.0
    seed: int = 42
    precision: Literal["no", "bf16", "fp16"] = "no"  # accelerate mixed precision; master weights stay float32
    pure_bf16: bool = False  # memory mode: bf16 weights and optimizer state (rounds away small updates)
    gradient_checkpointing: bool = False
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    train_code_predictor: bool = True
    freeze_text_embedding: bool = True
    lora_rank: int = 0  # > 0: LoRA memory mode (peft) instead of a full fine-tune; base weights frozen
    lora_alpha: float = 32.0
    lora_dropout: float = 0.0
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    lora_code_predictor: bool = False  # also put adapters on the code predictor's layers
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    adam_eps: float = 1e-8
    # AdamW kernel: "fused" (one kernel over all parameters: CPU, CUDA, XPU, MPS), "foreach"
    # (multi-tensor) or "for-loop" (torch's per-parameter reference; what the official script gets)
    adamw_impl: Literal["fused", "foreach", "for-loop"] = "fused"

    def validate(self) -> None:
        if self.batch_size < 1 or self.grad_accum < 1:
            raise UserError("train.batch_size and train.grad_accum must be >= 1")
        if self.lr <= 0:
            raise UserError("train.lr must be > 0")
        if not 0.0 < self.subtalker_frame_fraction <= 1.0:
            raise UserError(f"train.subtalker_frame_fraction must be in (0, 1], got {self.subtalker_frame_fraction}")
        if self.pure_bf16 and self.precision != "no":
            raise UserError("train.pure_bf16 already runs in bf16: set train.precision=no with it")
        if self.lora_rank < 0:
            raise UserError("train.lora_rank must be >= 0 (0 = full fine-tune)")
        known = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
        if self.lora_rank and not set(self.lora_targets) <= known:
            raise UserError(f"train.lora_targets may only name {sorted(known)}, got {self.lora_targets}")
        if len(self.adam_betas) != 2:
            raise UserError("train.adam_betas must be two numbers")


@dataclass
class CheckpointConfig:
    every_steps: int = 200  # accelerator.save_state every N optimizer steps (0 = only at the end)
    keep_last: int = 2
    resume: bool = False  # continue from the latest checkpoint in output_dir/checkpoints
    # which weights become output_dir/export: "last" (the end of training) or "best" (the judged eval with the
    # highest composite, eval.composite; exported when it is measured, so no extra checkpoint is kept)
    select: Literal["last", "best"] = "last"


DEFAULT_EVAL_SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please call me back when you have a moment this afternoon.",
    "We measured every step, and the numbers finally agree.",
]


@dataclass
class EvalConfig:
    """The judged evaluation (``train/judged_eval.py``): at step 0 (the base model), every
    ``log.eval_every_steps`` and at the end, each speaker speaks held-out sentences (and one per emotion tag)
    with the in-training weights; the offline judges score the audio against that speaker's recordings."""

    judges: list[str] = field(default_factory=lambda: ["speaker", "distillmos", "timing"])  # [] = no scoring
    clips_per_speaker: int = 2  # held-out sentences per speaker: the eval split's transcripts, then `sentences`
    sentences: list[str] = field(default_factory=lambda: list(DEFAULT_EVAL_SENTENCES))
    emotion_tags: list[str] = field(default_factory=list)  # e.g. [excited, whispering]: + 1 clip per tag per speaker
    max_frames: int = 0  # frame cap per clip; 0 = the synthesis bounds for the sentence (synthesis/bounds.py)
    seed: int = 0  # sampling seed of every eval clip (the same at every step, so steps compare)
    asr: str = ""  # a local transformers ASR folder for the asr judge (any language); "" = pocketsphinx (English)
    threads: int = 1  # CPU threads for the judges while they score
    composite: dict[str, float] = field(default_factory=dict)  # metric -> weight; {} = evaluation/composite.py defaults
    guard: bool = False  # stop training when spk_sim falls below step 0's by more than guard_margin
    guard_margin: float = 0.05  # in spk_sim (cosine); negative = demand an improvement (e.g. to test the guard)

    def validate(self) -> None:
        from qwen_tts_ext.evaluation.composite import check_weights
        from qwen_tts_ext.evaluation.judges import JUDGES

        problems = [f"eval.judges: unknown judge {j!r}; choose from {', '.join(JUDGES)}" for j in self.judges
                    if j not in JUDGES]
        if "speaker_ecapa" in self.judges:
            problems.append("eval.judges: speaker_ecapa scores with the model's own encoder (circular while it trains); "
                            "use speaker")
        if self.clips_per_speaker < 1:
            problems.append("eval.clips_per_speaker must be >= 1")
        if any(not str(s).strip() for s in self.sentences) or not self.sentences:
            problems.append("eval.sentences: give at least one non-empty sentence")
        if self.max_frames < 0:
            problems.append("eval.max_frames must be >= 0 (0 = the synthesis bounds)")
        if self.threads < 1:
            problems.append("eval.threads must be >= 1")
        if self.asr and "asr" not in self.judges:
            problems.append("eval.asr names an ASR folder but eval.judges has no asr judge: add asr to eval.judges")
        if self.guard and "speaker" not in self.judges:
            problems.append("eval.guard watches spk_sim: add the speaker judge to eval.judges")
        problems += [f"eval.composite: {p}" for p in check_weights(self.composite)]
        UserError.collect(problems)


@dataclass
class LogConfig:
    tracker: Literal["wandb", "tensorboard", "none"] = "wandb"  # W&B runs offline unless WANDB_MODE says otherwise
    project: str = "qwen-tts-ext"
    run_name: str = ""
    every_steps: int = 10
    eval_every_steps: int = 100  # teacher-forced and judged evaluation every N steps (0 = only at the end)
    log_samples: bool = True  # log the judged eval's audio (a table per eval) and mel images to the tracker


@dataclass
class ExportConfig:
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    every_epoch: bool = False  # also export after each epoch (export-epoch-N), not only at the end
    max_shard_gb: float = 5.0
    lora: Literal["merge", "adapter", "both"] = "merge"  # LoRA runs: merged full checkpoint, adapter alone, or both


@dataclass
class SFTConfig:
    model: str = ""  # a Qwen3-TTS 12Hz Base or CustomVoice checkpoint (local dir or hub id)
    output_dir: str = "runs/sft"  # the run folder: new, empty, or this command's own run (resume / overwrite)
    overwrite: bool = False  # start over in output_dir when it holds a previous run of this command
    force: bool = False  # resume although the objective or the data changed (see RESUME_MAY_CHANGE above)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def validate(self) -> None:
        problems = []
        if not self.model:
            problems.append("no model given: pass --model PATH (or set `model` in the config)")
        if not self.data.path:
            problems.append("no dataset given: pass --data DIR (the output folder of prepare_data.py)")
        if not str(self.output_dir).strip():
            problems.append("no run folder given: pass --output-dir DIR")
        if self.overwrite and self.checkpoint.resume:
            problems.append("--overwrite starts the run over and checkpoint.resume=true continues it: choose one")
        if self.force and not self.checkpoint.resume:
            problems.append("--force only applies to a resume (checkpoint.resume=true): it resumes although the "
                            "objective or the data changed")
        if self.checkpoint.select == "best" and not self.eval.judges:
            problems.append("checkpoint.select=best ranks evals by the judges' composite: eval.judges is empty")
        UserError.collect(problems)


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _local_path(value: Any) -> Any:
    """An existing local path as an absolute real path; anything else (a hub id, "") as it is."""
    if isinstance(value, str) and value and os.path.exists(os.path.expanduser(value)):
        return os.path.realpath(os.path.expanduser(value))
    return value


def recipe_record(cfg: SFTConfig) -> dict:
    """The recipe as saved in ``output_dir/config.json``: ``asdict`` with local input paths made absolute."""
    record = asdict(cfg)
    for key in PATH_KEYS:
        node = record
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = _local_path(node[leaf])
    return record


def resume_changes(saved: dict, cfg: SFTConfig) -> list[tuple[str, Any, Any]]:
    """``(key, saved value, new value)`` for each objective-or-data key whose value differs between a saved
    ``config.json`` and ``cfg`` (keys in :data:`RESUME_MAY_CHANGE` are not compared)."""
    before = {**_flat(asdict(SFTConfig())), **_flat(saved)}
    after = _flat(recipe_record(cfg))
    changed = []
    for key, new in after.items():
        if any(fnmatch.fnmatchcase(key, pattern) for pattern in RESUME_MAY_CHANGE):
            continue
        old = _local_path(before.get(key)) if key in PATH_KEYS else before.get(key)
        if old != new:
            changed.append((key, old, new))
    return changed
