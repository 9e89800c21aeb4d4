"""Export a trained model as a speaker-locked ``custom_voice`` checkpoint the stock loader speaks with.

The export holds: the talker (with each fine-tuned speaker's vector in its codec-embedding row),
``config.json`` with ``tts_model_type = "custom_voice"`` and the merged ``spk_id``/``spk_is_dialect``
(built-in speakers kept), and the base checkpoint's support files (tokenizer, generation config,
``speech_tokenizer/``). The Base speaker encoder is left out: a CustomVoice checkpoint has none and
the stock loader builds none for it. Only the weights are written; the base folder is never copied
wholesale. The output appears atomically (``outputs.output_dir``): it is built in a temp folder beside
its destination and renamed into place, with a marker saying ``sft-export`` wrote it; an existing
folder there is replaced only if it is such an export.

:func:`export_run` is what the training loop calls at the end of a run (and of each epoch with
``export.every_epoch``): every process takes part (FSDP gathers the full weights across ranks), the
main process writes; a LoRA run writes the merged checkpoint, the adapter alone, or both.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate.utils import DistributedType
from safetensors.torch import save_file

from qwen_tts_ext.checkpoint_io import converted, copy_support_files, drop_empty_model_type, write_safetensors_sharded
from qwen_tts_ext.outputs import output_dir
from qwen_tts_ext.train.config import SFTConfig
from qwen_tts_ext.train.lora import merged_state_dict, save_adapter
from qwen_tts_ext.train.speaker_lock import SpeakerTable, merged_speaker_config, write_speaker_rows

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
EXPORT_COMMAND = "sft-export"  # the marker of export folders (not "sft": an export is not a run folder)


def export_custom_voice(
    model,
    base_dir: str | Path,
    out_dir: str | Path,
    table: SpeakerTable,
    *,
    dtype: str = "bfloat16",
    overwrite: bool = True,
    provenance: dict | None = None,
    max_shard_gb: float = 5.0,
    state: dict | None = None,
) -> Path:
    """Write ``out_dir`` from an (unwrapped) ``Qwen3TTSForConditionalGeneration`` and the base folder.

    ``state``: a full state dict gathered beforehand (sharded training, e.g. FSDP); default: the model's own.
    """
    base_dir = Path(base_dir)
    out_dir = Path(out_dir)
    target = _DTYPES[dtype]
    if state is None:
        state = merged_state_dict(model)  # LoRA adapters merged into full weights; a plain state_dict otherwise
    emb_key = "talker.model.codec_embedding.weight"

    def tensors():  # each cast (and LoRA merge) is made while it is written: the export holds one piece at a time
        for name, t in state.items():
            if name.startswith("speaker_encoder."):
                continue
            if name == emb_key:
                t = write_speaker_rows(t.float(), table)
            yield name, converted(t, target if t.dtype.is_floating_point else t.dtype)

    with output_dir(out_dir, command=EXPORT_COMMAND, overwrite=overwrite, flag="export") as tmp:
        copy_support_files(base_dir, tmp)
        cfg = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
        cfg["tts_model_type"] = "custom_voice"
        cfg["talker_config"] = merged_speaker_config(cfg["talker_config"], table)
        cfg["torch_dtype"] = dtype
        drop_empty_model_type(cfg)
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False), encoding="utf-8")
        meta = {"format": "pt", "qwen_tts_ext": "sft-export", "speakers": json.dumps(table.spk_id())}
        write_safetensors_sharded(tensors(), tmp, max_shard_bytes=int(max_shard_gb * (1 << 30)), metadata=meta)
        (tmp / "sft_export.json").write_text(
            json.dumps({"base": str(base_dir), "speakers": table.spk_id(), "dtype": dtype, **(provenance or {})},
                       indent=2, ensure_ascii=False),
            encoding="utf-8",
        )
    return out_dir


def export_adapter(model, out_dir: str | Path, table: SpeakerTable, *, base: str, overwrite: bool = True) -> Path:
    """LoRA runs: the adapter alone, plus what locks the speakers (their rows and vectors).

    Apply with ``peft.inject_adapter_in_model``/``set_peft_model_state_dict`` on ``model.talker`` of the
    base checkpoint, write ``speakers.safetensors`` into the listed rows and merge ``spk_id`` into the config.
    """
    with output_dir(out_dir, command=EXPORT_COMMAND, overwrite=overwrite, flag="export") as tmp:
        save_adapter(model, tmp)
        save_file({n: v.contiguous() for n, v in zip(table.names, table.vectors)}, str(tmp / "speakers.safetensors"))
        (tmp / "speakers.json").write_text(json.dumps({"base": base, "spk_id": table.spk_id()}, indent=2))
    return Path(out_dir)


def export_run(accelerator, module, cfg: SFTConfig, model_dir: Path, run_dir: Path, name: str, table: SpeakerTable,
               step: int, *, lora: bool) -> Path:
    """Export the model being trained as ``run_dir/name`` (LoRA ``export.lora=adapter``: ``name-adapter``).

    Every process must call this: under FSDP the full weights are gathered across ranks (the main process
    keeps them); the main process writes; all wait for it. Returns the export's path.
    """
    main = accelerator.is_main_process
    unwrapped = accelerator.unwrap_model(module).model
    full_state = None
    if accelerator.distributed_type == DistributedType.FSDP:  # weights split across ranks: gather them
        gathered = accelerator.get_state_dict(module)
        full_state = {k[len("model."):]: v for k, v in gathered.items() if k.startswith("model.")} if main else None
    merged = not lora or cfg.export.lora in ("merge", "both")
    adapter = lora and cfg.export.lora in ("adapter", "both")
    if main and merged:
        export_custom_voice(unwrapped, model_dir, run_dir / name, table, dtype=cfg.export.dtype,
                            max_shard_gb=cfg.export.max_shard_gb, state=full_state,
                            provenance={"step": step, "recipe": asdict(cfg)})
    if main and adapter:
        export_adapter(unwrapped, run_dir / f"{name}-adapter", table, base=str(model_dir))
    accelerator.wait_for_everyone()
    return run_dir / name if merged else run_dir / f"{name}-adapter"
