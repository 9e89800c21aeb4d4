"""The GRPO objective: per-frame log-probabilities from the SFT layout, group-relative advantages, the
clipped importance ratio and the k3 KL to a frozen reference.

Log-probabilities come from a teacher-forced pass over the SAME batch layout SFT trains on
(``train/layout.py``) through the SAME backbone and sub-talker code (``train/losses.talker_hidden`` and
``subtalker_states``): position ``p`` scores ``codec0_targets[p]`` (frame ``t`` or EOS), and the code
predictor sees the talker state *before* each frame, as inference's ``past_hidden`` does. With
temperature 1 and no suppression, ``-mean(codec0 log-prob)`` is exactly ``sft_loss``'s talker CE
(tests/test_grpo_objective.py holds them equal).

Per position the log-probability is that of codebook 0 (/ ``temperature``, the sampler's suppressed ids at
-inf, as ``generate()`` samples) plus, with ``subtalker``, the summed log-probabilities of the frame's
codebooks 1..15 (/ ``subtalker_temperature``): one joint log-probability per generated frame, and the EOS
position's. A rollout that hit the frame cap never emitted EOS: its EOS target is masked out.

Loss per rollout ``i`` of a group (sequence-mean over its positions, then the batch mean, as in GRPO)::

    A_i   = (r_i - mean_group(r)) [/ (std_group(r) + 1e-4) with normalize_std]
    ratio = exp(logp - logp_old)
    obj   = min(ratio * A_i, clip(ratio, 1 - eps, 1 + eps) * A_i) - beta * k3
    k3    = exp(logp_ref - logp) - (logp_ref - logp) - 1      (>= 0, unbiased estimate of KL(pi || ref))
    loss  = -mean(obj)

Top-k/top-p truncation and a repetition penalty are not modelled in ``logp``: keep them off (top_k 0,
top_p 1, repetition_penalty 1) for on-policy ratios; the config's defaults do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from qwen_tts_ext.train.layout import IGNORE_INDEX, Batch
from qwen_tts_ext.train.losses import talker_hidden, subtalker_states


@dataclass
class LogProbs:
    codec0: torch.Tensor  # [B, S] log p(codebook 0 target) (0 where mask is False)
    subcodes: torch.Tensor  # [B, S] summed log p of codebooks 1..15 of the frame predicted at p (0 elsewhere)
    mask: torch.Tensor  # [B, S] bool: positions that carry a target

    def total(self, subtalker: bool) -> torch.Tensor:
        return self.codec0 + self.subcodes if subtalker else self.codec0


def suppressed_ids(vocab_size: int, eos_id: int) -> list[int]:
    """The ids ``generate()`` never samples for codebook 0: the top 1024 rows but EOS."""
    return [i for i in range(vocab_size - 1024, vocab_size) if i != eos_id]


def token_logprobs(talker, batch: Batch, speaker_vectors: torch.Tensor, *, temperature: float = 1.0,
                   suppress: list[int] | None = None, subtalker: bool = False, subtalker_temperature: float = 1.0,
                   stopped: torch.Tensor | None = None) -> LogProbs:
    """Teacher-forced log-probabilities of the laid-out ``batch``. ``stopped`` [B] bool: rows whose
    rollout ended with EOS; the others' EOS target (the layout always appends one) is masked out."""
    hidden = talker_hidden(talker, batch, speaker_vectors)
    targets = batch.codec0_targets
    mask = targets != IGNORE_INDEX
    if stopped is not None:
        last = (mask.cumsum(1) == mask.sum(1, keepdim=True)) & mask  # the EOS target of each row
        mask = mask & ~(last & ~stopped.to(mask.device).unsqueeze(1))
    logits = talker.codec_head(hidden[mask]).float() / temperature
    if suppress:
        logits[:, suppress] = float("-inf")
    lp0 = torch.zeros(targets.shape, dtype=torch.float32, device=hidden.device)
    lp0 = lp0.masked_scatter(mask, logits.log_softmax(-1).gather(1, targets[mask].unsqueeze(1)).squeeze(1))
    sub = torch.zeros_like(lp0)
    if subtalker:
        src = batch.subtalker_sources.nonzero(as_tuple=True)
        if src[0].numel():
            codes = batch.subtalker_codes[src]  # [N, G]
            states = subtalker_states(talker, hidden[src], codes)[:, 1:]  # position j+1 feeds head j
            heads = list(talker.code_predictor.lm_head)
            per = torch.stack([F.log_softmax(h(states[:, j]).float() / subtalker_temperature, -1)
                               .gather(1, codes[:, j + 1:j + 2]).squeeze(1) for j, h in enumerate(heads)], 1)
            sub = sub.index_put(src, per.sum(1))
    return LogProbs(codec0=lp0, subcodes=sub, mask=mask)


def group_advantages(rewards: torch.Tensor, groups: torch.Tensor, normalize_std: bool = True) -> torch.Tensor:
    """Reward minus its group's mean (``groups[i]``: the prompt of rollout i), / the group's std (+1e-4)."""
    adv = torch.zeros_like(rewards)
    for g in groups.unique():
        sel = groups == g
        r = rewards[sel]
        a = r - r.mean()
        if normalize_std:
            a = a / (r.std(unbiased=False) + 1e-4)
        adv[sel] = a
    return adv


@dataclass
class LossParts:
    loss: torch.Tensor  # differentiable
    kl: float  # mean k3 over positions
    clip_fraction: float
    ratio_mean: float


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor | None, mask: torch.Tensor,
              advantages: torch.Tensor, *, clip_eps: float = 0.2, kl_beta: float = 0.04) -> LossParts:
    """The clipped GRPO surrogate with the k3 KL penalty ([B, S] tensors; ``advantages`` [B])."""
    m = mask.float()
    ratio = torch.exp(logp - old_logp)
    adv = advantages.unsqueeze(1)
    surr = torch.minimum(ratio * adv, ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv)
    if ref_logp is not None:
        d = ref_logp - logp
        k3 = torch.exp(d) - d - 1
    else:
        k3 = torch.zeros_like(logp)
    per = (surr - kl_beta * k3) * m
    per_row = per.sum(1) / m.sum(1).clamp(min=1)
    loss = -per_row.mean()
    n = m.sum().clamp(min=1)
    clipped = ((ratio - 1).abs() > clip_eps).float() * m
    return LossParts(loss=loss, kl=float((k3.detach() * m).sum() / n), clip_fraction=float(clipped.sum() / n),
                     ratio_mean=float((ratio.detach() * m).sum() / n))
