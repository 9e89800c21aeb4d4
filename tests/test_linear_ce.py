"""The fused linear cross-entropy equals the plain heads + cross_entropy path (values and gradients).

(``test_sft.py`` checks the whole SFT loss through it against the stock ``forward_finetune`` path.)"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from qwen_tts_ext.train.linear_ce import linear_cross_entropy


def _plain(states, weight, targets):
    logits = torch.einsum("ngh,gvh->ngv", states, weight).float()
    n, g, v = logits.shape
    return F.cross_entropy(logits.reshape(-1, v), targets.reshape(-1), reduction="none").view(n, g).mean(0)


def _case(n=37, g=5, h=16, v=50, seed=0):
    gen = torch.Generator().manual_seed(seed)
    states = torch.randn(n, g, h, generator=gen) * 2
    weight = torch.randn(g, v, h, generator=gen)
    targets = torch.randint(0, v, (n, g), generator=gen)
    return states, weight, targets


def _grads(fn, states, weight, targets, mix):
    s = states.clone().requires_grad_(True)
    w = weight.clone().requires_grad_(True)
    per_head = fn(s, w, targets)
    (per_head * mix).sum().backward()  # unequal weights per head: the backward must scale each head apart
    return per_head.detach(), s.grad, w.grad


def test_values_and_gradients_match_the_plain_path():
    states, weight, targets = _case()
    mix = torch.tensor([0.3, 1.0, -2.0, 0.0, 5.0])
    fused = _grads(linear_cross_entropy, states, weight, targets, mix)
    plain = _grads(_plain, states, weight, targets, mix)
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert fused[1][:, 3].abs().max() == 0  # a head with zero weight in the loss gets no gradient


def test_strided_states_and_only_some_inputs_requiring_grad():
    states, weight, targets = _case(g=4)
    wide = torch.cat([torch.zeros(states.shape[0], 1, states.shape[2]), states], dim=1)[:, 1:]  # a strided view
    w = weight.clone().requires_grad_(True)
    linear_cross_entropy(wide, w, targets).sum().backward()
    w_ref = weight.clone().requires_grad_(True)
    _plain(states, w_ref, targets).sum().backward()
    torch.testing.assert_close(w.grad, w_ref.grad, rtol=1e-5, atol=1e-6)


def test_no_grad_gives_the_loss_alone():
    states, weight, targets = _case()
    with torch.no_grad():
        out = linear_cross_entropy(states, weight, targets)
    assert not out.requires_grad
    torch.testing.assert_close(out, _plain(states, weight, targets), rtol=1e-5, atol=1e-6)


def test_bf16_autocast_matches_the_plain_path_under_autocast():
    states, weight, targets = _case(v=300)
    mix = torch.ones(5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = _grads(linear_cross_entropy, states, weight, targets, mix)
        plain = _grads(lambda s, w, t: _plain_linear(s, w, t), states, weight, targets, mix)
    assert fused[0].dtype == torch.float32 and fused[1].dtype == torch.float32 and fused[2].dtype == torch.float32
    torch.testing.assert_close(fused[0], plain[0], rtol=2e-2, atol=2e-2)
    for a, b in zip(fused[1:], plain[1:]):
        assert float((a - b).norm() / b.norm()) < 2e-2


def _plain_linear(states, weight, targets):
    """Per head through F.linear (what autocast casts to bf16), then float cross-entropy."""
    logits = torch.stack([F.linear(states[:, j], weight[j]) for j in range(weight.shape[0])], dim=1).float()
    n, g, v = logits.shape
    return F.cross_entropy(logits.reshape(-1, v), targets.reshape(-1), reduction="none").view(n, g).mean(0)


def test_pure_bf16_inputs_give_bf16_gradients():
    states, weight, targets = (t.to(torch.bfloat16) if t.is_floating_point() else t for t in _case())
    s = states.clone().requires_grad_(True)
    w = weight.clone().requires_grad_(True)
    linear_cross_entropy(s, w, targets).mean().backward()
    assert s.grad.dtype == torch.bfloat16 and w.grad.dtype == torch.bfloat16
    ref_s = states.float().requires_grad_(True)
    _plain(ref_s, weight.float(), targets).mean().backward()
    assert float((s.grad.float() - ref_s.grad).norm() / ref_s.grad.norm()) < 2e-2


@pytest.mark.parametrize("shapes", [((4, 3, 8), (2, 10, 8), (4, 3)), ((4, 3, 8), (3, 10, 7), (4, 3)),
                                    ((4, 3, 8), (3, 10, 8), (4, 2)), ((0, 3, 8), (3, 10, 8), (0, 3))])
def test_shape_errors_are_clear(shapes):
    s, w, t = shapes
    with pytest.raises(ValueError, match="linear_cross_entropy"):
        linear_cross_entropy(torch.zeros(s), torch.zeros(w), torch.zeros(t, dtype=torch.long))
