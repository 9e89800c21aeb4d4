"""Apply / undo a runtime Darwin blend on a loaded model, so one process can try several alphas.

The blend is the blend module's (``qwen_tts_ext.blend.runtime.apply_blend_to_model``), which keeps
the original FFN weights and always re-blends from them (alpha 0.05 after 0.03 is 0.05, not a blend
of a blend). This class only remembers which alpha/LLM is currently applied, so a UI can call
``set`` on every request and pay for a blend only when the setting changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from qwen_tts_ext.errors import UserError


class RuntimeBlend:
    """Blend state of one loaded ``Qwen3TTSForConditionalGeneration``."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.alpha = 0.0
        self.llm: str | None = None
        self.info: dict[str, Any] = {}

    def restore(self) -> None:
        """Put the original FFN weights back (no-op if nothing is blended)."""
        from qwen_tts_ext.blend.runtime import restore_ffn

        restore_ffn(self.model)
        self.alpha, self.llm, self.info = 0.0, None, {}

    def set(self, alpha: float, llm: str | Path | None) -> dict[str, Any]:
        """Blend ``alpha`` of ``llm``'s FFNs into the original weights (alpha 0 = the original model).

        ``llm``: a Qwen3 causal-LM folder (or Hub id when online). Returns the blend report.
        """
        alpha = float(alpha)
        if not 0.0 <= alpha <= 1.0:
            raise UserError(f"alpha must be in [0, 1], got {alpha} (the useful range is about 0.01-0.05)")
        if alpha == 0.0:
            if self.alpha != 0.0:
                self.restore()
            return {}
        if llm is None or str(llm).strip() == "":
            raise UserError(f"alpha {alpha} needs --llm: the Qwen3 LLM checkpoint whose FFNs are blended in")
        if alpha == self.alpha and str(llm) == self.llm:
            return self.info
        from qwen_tts_ext.blend.runtime import apply_blend_to_model, restore_ffn

        try:
            info = apply_blend_to_model(self.model, str(llm), alpha=alpha)
        except BaseException:
            restore_ffn(self.model)  # never leave a half-applied blend behind
            self.alpha, self.llm, self.info = 0.0, None, {}
            raise
        self.alpha, self.llm, self.info = alpha, str(llm), dict(info or {})
        return self.info
