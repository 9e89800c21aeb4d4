"""Darwin blend applied in memory to a loaded model (no checkpoint written).

    from qwen_tts import Qwen3TTSModel
    from qwen_tts_ext.blend.runtime import apply_blend_to_model, restore_ffn

    tts = Qwen3TTSModel.from_pretrained("my-tts")
    for alpha in (0.01, 0.03, 0.05):
        report = apply_blend_to_model(tts.model, "Qwen/Qwen3-1.7B", alpha)   # re-blends from the originals
        ...synthesise...
    restore_ffn(tts.model)                                                 # back to the unblended weights

It uses the same plan, compatibility checks and float32 arithmetic as the ``blend`` command, so a
model blended here holds exactly the tensors that ``qwen-tts-ext blend`` would have written. LLM
tensors are read one at a time into a reused buffer.

The first blend keeps a CPU copy of every tensor it changes (``keep_originals=True``; about 2 GB for
the 1.7B model, stored as bf16 whenever that is lossless, e.g. a bf16 checkpoint loaded in float32), so later calls blend from the original weights instead of compounding, and
``restore_ffn`` can undo it. With ``keep_originals=False`` nothing is kept and a second blend of the
same model is refused.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Any, Iterable

import torch

from qwen_tts_ext.blend.lerp import Lerper, torch_threads
from qwen_tts_ext.blend.plan import PROJECTIONS, make_plan
from qwen_tts_ext.blend.stream_io import StreamingCheckpoint
from qwen_tts_ext.checkpoint_io import LazyCheckpoint, resolve_checkpoint
from qwen_tts_ext.errors import UserError

_STATE_ATTR = "_darwin_blend_state"


def _core(model: Any) -> torch.nn.Module:
    """Accept ``Qwen3TTSForConditionalGeneration`` or the ``Qwen3TTSModel`` wrapper around it."""
    if hasattr(model, "talker"):
        return model
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(inner, "talker"):
        return inner
    raise TypeError("expected a Qwen3TTSForConditionalGeneration (or a Qwen3TTSModel wrapping one)")


def _config_dict(core: torch.nn.Module) -> dict:
    cfg = core.config
    return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)


def _compact_copy(t: torch.Tensor) -> torch.Tensor:
    """A CPU copy in the narrowest float dtype that holds ``t`` exactly.

    A model loaded from a bf16 checkpoint in float32 keeps bf16-representable values, so its
    originals cost half the memory (2 GB instead of 4 GB for the 1.7B talker's FFNs), losslessly.
    """
    cpu = t.to("cpu", copy=True)
    if cpu.dtype == torch.float32:
        for narrow in (torch.bfloat16, torch.float16):
            small = cpu.to(narrow)
            if torch.equal(small.to(torch.float32).view(torch.int32), cpu.view(torch.int32)):
                return small
    return cpu


def restore_ffn(model: Any) -> int:
    """Put back the FFN tensors saved by ``apply_blend_to_model``; return how many were restored."""
    core = _core(model)
    state = getattr(core, _STATE_ATTR, None)
    if not state:
        return 0
    originals = state.get("originals")
    if originals is None:
        raise UserError("this model was blended with keep_originals=False; reload it to undo the blend")
    params = dict(core.named_parameters())
    with torch.no_grad():
        for name, saved in originals.items():
            params[name].copy_(saved)  # widening back to the parameter dtype is exact
    delattr(core, _STATE_ATTR)
    return len(originals)


def apply_blend_to_model(
    model: Any,
    llm: str | os.PathLike | LazyCheckpoint,
    alpha: float = 0.03,
    *,
    alpha_per_layer: Any = None,
    tensors: Iterable[str] | str = PROJECTIONS,
    freeze_layers: Any = (),
    keep_originals: bool = True,
    allow_other_backbones: bool = False,
) -> dict:
    """Blend an LLM's FFN weights into a loaded Qwen3-TTS model, in place.

    ``model`` is a ``Qwen3TTSForConditionalGeneration`` (``Qwen3TTSModel.model``); ``llm`` a Qwen3
    causal LM folder, Hub id or open ``LazyCheckpoint``. Schedules are those of the ``blend``
    command (``alpha_per_layer``: list, gradient anchors, per-projection mapping or YAML/JSON file;
    ``freeze_layers``: e.g. ``"0-3"``; ``tensors``: subset of gate/up/down). Calling it again
    re-blends from the original weights. Incompatible parents raise ``CompatibilityError`` (a
    ``UserError``) before anything changes.

    Returns a report: ``llm``, ``alpha``, ``alpha_per_tensor`` (TTS tensor name -> alpha),
    ``blended`` (count), ``frozen_layers``, ``projections``, ``restorable``, ``warnings``, ``notes``, ``seconds``.
    """
    t0 = time.perf_counter()
    core = _core(model)
    params = dict(core.named_parameters())
    state = getattr(core, _STATE_ATTR, None)
    if state and state.get("originals") is None:
        raise UserError("this model is already blended (keep_originals=False); reload it before blending again")

    if isinstance(llm, LazyCheckpoint) and not isinstance(llm, StreamingCheckpoint):
        llm = llm.root  # a header-only view: reopened below for raw reads
    own = not isinstance(llm, StreamingCheckpoint)
    ck = StreamingCheckpoint(resolve_checkpoint(llm, what="--llm")) if own else llm
    try:
        # The model's tensors as the plan sees them: the same checks as for a checkpoint on disk.
        table = {name: (tuple(p.shape), p.dtype) for name, p in params.items()}
        llm_table = {name: (ck.shape(name), ck.dtype(name)) for name in ck.keys()}
        plan = make_plan(
            _config_dict(core), table, ck.config(), llm_table,
            {"alpha": alpha, "alpha_per_layer": alpha_per_layer, "freeze_layers": freeze_layers, "tensors": tensors},
            allow_other_backbones=allow_other_backbones,
        )
        for msg in plan.warnings:
            warnings.warn(msg, stacklevel=2)

        restore_ffn(core)  # a previous blend is undone first, so blends never compound
        originals: dict[str, torch.Tensor] | None = {} if keep_originals else None
        raw = Lerper("cpu")
        lerpers: dict[torch.device, Lerper] = {}
        if plan.active:
            setattr(core, _STATE_ATTR, {"originals": originals, "llm": str(ck.root)})
        try:
            with torch.no_grad(), torch_threads(1):
                for e in plan.active:
                    p = params[e.tts_name]
                    llm_t = ck.read_into(e.llm_name, raw.buffer("raw_llm", ck.nbytes(e.llm_name), torch.uint8))
                    if originals is not None:
                        originals[e.tts_name] = _compact_copy(p.detach())
                    lerper = lerpers.setdefault(p.device, Lerper(p.device))
                    lerper.blend(p.detach(), llm_t, e.alpha, out=p.data)
        except BaseException:
            if originals is not None:
                restore_ffn(core)  # never leave a half-applied blend behind
            raise
    finally:
        if own:
            ck.close()
    return {
        "llm": str(ck.root),
        "alpha": alpha,
        "alpha_per_tensor": plan.alpha_by_tensor(),
        "blended": len(plan.active),
        "frozen_layers": list(plan.schedule.frozen),
        "projections": list(plan.schedule.projections),
        "restorable": keep_originals,
        "warnings": list(plan.warnings),
        "notes": list(plan.notes),
        "seconds": time.perf_counter() - t0,
    }


def blend_state(model: Any) -> dict | None:
    """``{"llm": path, "originals": {...} | None}`` if the model currently holds a blend, else None."""
    return getattr(_core(model), _STATE_ATTR, None)
