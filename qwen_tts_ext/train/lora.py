"""LoRA memory mode (through ``peft``): adapters on the talker's attention/MLP projections.

The base weights stay frozen; only the adapters train (and, with ``lora_code_predictor``, adapters on
the code predictor's layers). Speaker rows need no training: the locked speaker vectors are written
into their codec-embedding rows at export, as in a full fine-tune. Export either merges the
adapters into full weights (a checkpoint the stock loader reads, the default) or saves the adapter
alone (``adapter_model.safetensors`` + ``adapter_config.json``, keys relative to ``talker``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

ADAPTER = "default"


def lora_target_regex(targets: list[str], code_predictor: bool) -> str:
    """A full-name regex (peft matches it against module names under ``talker``)."""
    proj = "|".join(sorted(set(targets)))
    stacks = [r"model\.layers\.\d+"]
    if code_predictor:
        stacks.append(r"code_predictor\.model\.layers\.\d+")
    return rf"^(?:{'|'.join(stacks)})\.(?:self_attn|mlp)\.(?:{proj})$"


def apply_lora(model, rank: int, alpha: float, dropout: float, targets: list[str], code_predictor: bool) -> int:
    """Inject adapters into ``model.talker`` in place and freeze everything else; returns trainable params."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, bias="none",
                        target_modules=lora_target_regex(targets, code_predictor))
    for p in model.parameters():
        p.requires_grad_(False)
    inject_adapter_in_model(config, model.talker, adapter_name=ADAPTER)
    model.talker._qwen_tts_ext_lora_config = config
    n = 0
    for name, p in model.named_parameters():
        if ".lora_" in name:
            # peft creates adapters in the base dtype; keep them (and their AdamW state) in float32 so a
            # bf16 base does not round small updates away. peft casts activations to the adapter dtype.
            p.data = p.data.float()
            p.requires_grad_(True)
            n += p.numel()
    if n == 0:
        raise RuntimeError("LoRA targets matched no module in the talker")
    return n


def _lora_modules(model) -> dict[str, torch.nn.Module]:
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}


def has_lora(model) -> bool:
    return bool(_lora_modules(model))


@torch.no_grad()
def merged_state_dict(model) -> dict:
    """``model.state_dict()`` with adapters merged into their base weights and the original key names.

    A merged weight is a :class:`~qwen_tts_ext.checkpoint_io.Deferred` (made when it is written, one at a
    time: the export holds one merged projection, not a merged copy of every adapted weight); the others
    are the model's own tensors. The training model is not modified.
    """
    state = model.state_dict()
    mods = _lora_modules(model)
    if not mods:
        return state
    from qwen_tts_ext.checkpoint_io import Deferred

    out: dict = {}
    for key, t in state.items():
        if ".lora_" in key:
            continue
        out[key.replace(".base_layer.", ".")] = t
    for name, m in mods.items():
        base = m.get_base_layer().weight
        out[f"{name}.weight"] = Deferred(base.dtype, tuple(base.shape), lambda m=m, base=base: iter([_merged(m, base)]))
    return out


@torch.no_grad()
def _merged(module, base: torch.Tensor) -> torch.Tensor:
    return (base.float() + module.get_delta_weight(ADAPTER).float()).to(base.dtype)


def save_adapter(model, out_dir: str | Path) -> Path:
    """Write the talker's adapter alone: ``adapter_model.safetensors`` and ``adapter_config.json``."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sd = get_peft_model_state_dict(model.talker, adapter_name=ADAPTER)
    save_file({k: v.detach().cpu().contiguous() for k, v in sd.items()}, str(out_dir / "adapter_model.safetensors"),
              metadata={"format": "pt", "applies_to": "talker"})
    cfg = model.talker._qwen_tts_ext_lora_config.to_dict()
    cfg = {k: (sorted(v) if isinstance(v, set) else v) for k, v in cfg.items()}
    cfg["qwen_tts_ext_applies_to"] = "talker"
    (out_dir / "adapter_config.json").write_text(json.dumps(cfg, indent=2, default=str))
    return out_dir
