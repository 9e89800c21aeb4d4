"""Fused linear + cross-entropy for the codec heads: the loss of ``G`` bias-free heads without
materialising their logits for backward.

The code predictor scores every frame with 15 heads of 2048 codes, so the plain path
(``stack(heads) -> cross_entropy``) writes an ``[N, 15, 2048]`` float32 logits tensor, keeps it for
backward, and makes four more full passes over it (log-softmax, its backward, the NLL's zero-filled
gradient, the scatter). Here each head's ``[N, V]`` block is computed, turned into its gradient
``softmax - onehot`` while it is still in cache, and multiplied straight into the gradients of the
states and of the head's weight; only those (the size of the inputs) wait for backward. The same
matmuls run as in the plain path (one forward, two backward), so the result is the same up to
float rounding; tests compare both on losses and gradients. This is the "fused linear
cross-entropy" of Liger-Kernel and torchtune's chunked output loss, chunked by head.

Contract: ``per_head[j] = mean_n CE(states[n, j] @ weight[j].T, targets[n, j])``; every target is
valid (callers select the scored rows first, there is no ignore index). Under autocast the matmuls
run in the autocast dtype and the softmax in float32, as ``F.linear`` + ``F.cross_entropy`` would.
"""

from __future__ import annotations

import torch


def _compute_dtype(states: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    device = states.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return torch.promote_types(states.dtype, weight.dtype)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, states, weight, targets):
        n, g, _ = states.shape
        want_states, want_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        dtype = _compute_dtype(states, weight)
        rows = torch.arange(n, device=states.device)
        per_head = torch.empty(g, dtype=torch.float32, device=states.device)
        grad_states = states.new_empty((g, n, states.shape[2]), dtype=dtype) if want_states else None
        grad_weight = torch.empty_like(weight, dtype=dtype) if want_weight else None
        with torch.autocast(states.device.type, enabled=False):
            s, w = states.to(dtype), weight.to(dtype)
            for j in range(g):
                h, t = s[:, j], targets[:, j]
                logits = torch.mm(h, w[j].t()).float()  # [n, V], one head at a time
                lse = torch.logsumexp(logits, dim=1)
                per_head[j] = (lse - logits[rows, t]).mean()
                if want_states or want_weight:
                    p = logits.sub_(lse[:, None]).exp_()  # softmax, in place
                    p[rows, t] -= 1.0  # d CE / d logits, times n (the 1/n is applied in backward)
                    p = p.to(dtype)
                    if want_states:
                        torch.mm(p, w[j], out=grad_states[j])
                    if want_weight:
                        torch.mm(p.t(), h, out=grad_weight[j])
        ctx.n = n
        ctx.save_for_backward(grad_states, grad_weight)
        ctx.dtypes = (states.dtype, weight.dtype)
        return per_head

    @staticmethod
    def backward(ctx, grad_per_head):
        grad_states, grad_weight = ctx.saved_tensors
        scale = grad_per_head.float() / ctx.n  # [G]
        gs = gw = None
        if grad_states is not None:
            gs = (grad_states * scale.to(grad_states.dtype)[:, None, None]).transpose(0, 1).to(ctx.dtypes[0])
        if grad_weight is not None:
            gw = (grad_weight * scale.to(grad_weight.dtype)[:, None, None]).to(ctx.dtypes[1])
        return gs, gw, None


def linear_cross_entropy(states: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy per head, ``[G]`` float32, differentiable w.r.t. ``states`` and ``weight``.

    ``states`` [N, G, H], ``weight`` [G, V, H] (head j's ``nn.Linear.weight``), ``targets`` [N, G] int64.
    """
    if states.ndim != 3 or weight.ndim != 3 or targets.shape != states.shape[:2] or weight.shape[0] != states.shape[1] \
            or weight.shape[2] != states.shape[2]:
        raise ValueError(f"linear_cross_entropy: states {tuple(states.shape)}, weight {tuple(weight.shape)} and "
                         f"targets {tuple(targets.shape)} do not fit [N,G,H], [G,V,H], [N,G]")
    if states.shape[0] == 0:
        raise ValueError("linear_cross_entropy: no rows to score")
    if torch.is_grad_enabled() and (states.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(states, weight, targets)
    with torch.no_grad():  # evaluation: the loss alone, without computing any gradient
        return _LinearCrossEntropy.forward(_NoGradContext(), states, weight, targets)


class _NoGradContext:
    """Stands in for autograd's ctx when no gradient is wanted."""

    needs_input_grad = (False, False, False)

    def save_for_backward(self, *tensors):
        pass
