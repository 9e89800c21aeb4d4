"""Activation-aware scale search (AWQ) for the talker's decoder projections.

Which tensors: ``talker.model.layers.N.self_attn.{q,k,v,o}_proj`` and ``talker.model.layers.N.mlp.
{gate,up,down}_proj`` (7 per layer). Everything else keeps its dtype.

How (the AWQ paper's search, as torchao's ``AWQObserver`` does it, but streaming): while the float
talker runs on calibration inputs, forward pre-hooks record, per projection input, the mean ``|x|``
of every input channel over all real positions and a seeded sample of at most ``max_rows`` input
rows. Projections that read the same input (q/k/v, gate/up) share one record. Then, per projection,
for ``ratio`` in 0, 1/n, ..., (n-1)/n: ``s = mean|x| ** ratio`` (normalised by sqrt(max * min)),
quantize ``W * s`` to INT4, and score ``|| X W^T - (X / s) Q(W s)^T ||^2`` on the sampled rows. The
best ``s`` is kept; ratio 0 is plain round-to-nearest, so the search never does worse than RTN on
its own rows. The scale is applied to the projection's input at run time (not folded into the
preceding norm), so norms and every other tensor stay byte-identical.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from qwen_tts_ext.quantize.int4 import fake_quant

ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
_NAME = re.compile(r"^talker\.model\.layers\.(\d+)\.(self_attn|mlp)\.(q|k|v|o|gate|up|down)_proj$")
# the projection whose input stands for a group of projections reading the same tensor
_SHARED = {"k_proj": "q_proj", "v_proj": "q_proj", "up_proj": "gate_proj"}


def target_names(model: torch.nn.Module) -> list[str]:
    """Module names of the talker projections that are quantized, in layer order."""
    names = [n for n, m in model.named_modules() if _NAME.match(n) and isinstance(m, torch.nn.Linear)]
    return sorted(names, key=lambda n: (int(_NAME.match(n).group(1)), (ATTN + MLP).index(n.rsplit(".", 1)[1])))


def input_key(name: str) -> str:
    """The projection whose recorded input ``name`` reads (q for q/k/v, gate for gate/up)."""
    head, proj = name.rsplit(".", 1)
    return f"{head}.{_SHARED.get(proj, proj)}"


@dataclass
class InputStats:
    """Running mean |x| per channel and a row sample of one projection input."""

    abs_sum: torch.Tensor | None = None  # float64 [in]
    count: int = 0
    rows: list[torch.Tensor] = field(default_factory=list)
    kept: int = 0

    def mean_abs(self) -> torch.Tensor:
        return (self.abs_sum / max(self.count, 1)).float()

    def sample(self) -> torch.Tensor:
        """The sampled input rows [n, in] as float32."""
        return torch.cat(self.rows).float() if self.rows else torch.empty(0)


class ActivationRecorder:
    """Forward pre-hooks on the target projections; ``mask`` (set per batch) marks the real positions."""

    def __init__(self, model: torch.nn.Module, names: list[str], max_rows: int = 4096, rows_per_batch: int = 256,
                 seed: int = 0):
        self.stats: dict[str, InputStats] = {}
        self.mask: torch.Tensor | None = None
        self.max_rows, self.rows_per_batch = max_rows, rows_per_batch
        self.gen = torch.Generator().manual_seed(seed)
        self._handles = []
        modules = dict(model.named_modules())
        for key in dict.fromkeys(input_key(n) for n in names):
            self.stats[key] = InputStats()
            self._handles.append(modules[key].register_forward_pre_hook(self._hook(key)))

    def _hook(self, key: str):
        def hook(module, args):
            x = args[0].detach()
            x = x.reshape(-1, x.shape[-1]) if self.mask is None else x[self.mask.to(x.device).bool()]
            st = self.stats[key]
            s = x.abs().sum(0, dtype=torch.float64).cpu()
            st.abs_sum = s if st.abs_sum is None else st.abs_sum + s
            st.count += x.shape[0]
            room = self.max_rows - st.kept
            if room > 0 and x.shape[0]:
                take = min(room, self.rows_per_batch, x.shape[0])
                idx = torch.randperm(x.shape[0], generator=self.gen)[:take]
                st.rows.append(x[idx.to(x.device)].cpu().clone())  # the model's dtype: bf16 rows take half
                st.kept += take
        return hook

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def output_error(w: torch.Tensor, w_hat: torch.Tensor, x: torch.Tensor) -> tuple[float, float]:
    """(sum of squared output error, sum of squared reference output) of ``x @ w.T`` vs ``x @ w_hat.T``."""
    ref = x @ w.T
    return float((ref - x @ w_hat.T).pow(2).sum()), float(ref.pow(2).sum())


def search_scale(w: torch.Tensor, mean_abs: torch.Tensor, x: torch.Tensor, group: int, grid: int,
                 scale_dtype: torch.dtype) -> tuple[torch.Tensor | None, float, dict]:
    """The best per-input-channel scale for ``w`` [out, in] on sample ``x`` [rows, in].

    Returns (scale or None when ratio 0 = round-to-nearest wins, best ratio, {"rtn": err, "awq": err}).
    """
    wf = w.detach().float()
    x = x.float()
    best = (None, 0.0, float("inf"))
    rtn_err = None
    for i in range(max(grid, 1)):
        ratio = i / max(grid, 1)
        if i == 0:
            s = None
            w_hat = fake_quant(wf, group, scale_dtype)
        else:
            s = mean_abs.clamp(min=1e-4).pow(ratio)
            s = s / (s.max() * s.min()).sqrt()
            w_hat = fake_quant(wf * s, group, scale_dtype) / s
        err, _ = output_error(wf, w_hat, x)
        if i == 0:
            rtn_err = err
        if err < best[2]:
            best = (s, ratio, err)
    return best[0], best[1], {"rtn": rtn_err, "awq": best[2]}
