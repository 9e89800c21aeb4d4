"""Apply / undo a runtime Darwin blend on a loaded model, so one process can try several alphas.

The blend itself is the blend module's (``qwen_tts_ext.blend.runtime.apply_blend_to_model``); this
class only remembers the talker's original FFN weights so a new alpha always starts from the
unblended model (alpha 0.05 after 0.03 is 0.05, not a blend of a blend).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from qwen_tts_ext.errors import UserError

FFN_PARAM = re.compile(r"^talker\.model\.layers\.\d+\.mlp\.(gate|up|down)_proj\.weight$")


class RuntimeBlend:
    """Blend state of one loaded ``Qwen3TTSForConditionalGeneration``."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.alpha = 0.0
        self.llm: str | None = None
        self.info: dict[str, Any] = {}
        self._original: dict[str, torch.Tensor] | None = None

    def _snapshot(self) -> None:
        if self._original is None:
            self._original = {
                name: p.detach().clone() for name, p in self.model.named_parameters() if FFN_PARAM.match(name)
            }
            if not self._original:
                raise UserError("this model has no talker FFN weights (talker.model.layers.N.mlp.*): cannot blend")

    @torch.no_grad()
    def restore(self) -> None:
        """Put the original FFN weights back (no-op if nothing was blended)."""
        if self._original is not None and self.alpha != 0.0:
            params = dict(self.model.named_parameters())
            for name, value in self._original.items():
                params[name].copy_(value)
        self.alpha, self.llm, self.info = 0.0, None, {}

    def set(self, alpha: float, llm: str | Path | None) -> dict[str, Any]:
        """Blend ``alpha`` of ``llm``'s FFNs into the original weights (alpha 0 = the original model)."""
        alpha = float(alpha)
        if not 0.0 <= alpha <= 1.0:
            raise UserError(f"alpha must be in [0, 1], got {alpha} (the useful range is about 0.01-0.05)")
        if alpha == self.alpha and (alpha == 0.0 or str(llm) == self.llm):
            return self.info
        self.restore()
        if alpha == 0.0:
            return {}
        if llm is None or str(llm) == "":
            raise UserError(f"alpha {alpha} needs --llm: the Qwen3 LLM checkpoint whose FFNs are blended in")
        if not Path(llm).exists():
            raise UserError(f"LLM checkpoint {llm} does not exist")
        try:
            from qwen_tts_ext.blend.runtime import apply_blend_to_model
        except ImportError as exc:  # pragma: no cover - depends on the installed tree
            raise UserError(f"runtime blending is unavailable ({exc}); install the full qwen-tts-ext package") from None
        self._snapshot()
        try:
            info = apply_blend_to_model(self.model, str(llm), alpha=alpha)
        except BaseException:
            self.alpha = float("nan")  # force restore() to copy the original weights back
            self.restore()
            raise
        self.alpha, self.llm, self.info = alpha, str(llm), dict(info or {})
        return self.info
