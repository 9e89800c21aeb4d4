"""The SFT objective: CE(codebook 0 of the talker) + w x CE(code predictor, codebooks 1..15).

Both losses are computed here, explicitly and shifted exactly once (the layout already aligned the
targets), instead of through HF's ``ForCausalLMLoss``, which shifts again: the official script's
double shifts taught position p the frame p+2 and head i the codebook i+1.

- Talker: ``logits[b, p]`` is scored against ``codec0_targets[b, p]`` (codebook 0 of position p+1).
- Code predictor, per frame t: input ``[h_{P_t - 1}, E0(c0), E1(c1), ..., E14(c14)]`` where
  ``h_{P_t - 1}`` is the talker hidden state of the position *before* frame t (inference's
  ``past_hidden``); as in ``forward_finetune``, head j (``lm_head[j]``) reads input position j+1
  and is scored against codebook j+1, for j = 0..14.

Both heads' cross-entropies go through ``linear_ce`` (fused: the ``[N, 15, 2048]`` logits are never
kept for backward), which tests hold equal to the plain ``forward_finetune`` + ``cross_entropy`` path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from qwen_tts_ext.train.layout import IGNORE_INDEX, Batch, embed_batch
from qwen_tts_ext.train.linear_ce import linear_cross_entropy


@dataclass
class LossOutput:
    loss: torch.Tensor  # total, differentiable
    talker_ce: torch.Tensor  # detached scalar
    subtalker_ce: torch.Tensor  # detached scalar (mean over codebooks 1..15)
    subtalker_ce_per_codebook: torch.Tensor  # [G-1] detached, index j = codebook j+1
    num_targets: int
    num_frames: int  # frames in the batch
    num_subtalker_frames: int = 0  # frames the code predictor was scored on (fewer with subtalker_frame_fraction < 1)


def talker_hidden(talker, batch: Batch, speaker_vectors: torch.Tensor) -> torch.Tensor:
    """Run the talker backbone on the laid-out batch; returns the final hidden states [B, S, H]."""
    inputs_embeds = embed_batch(talker, batch, speaker_vectors)
    position_ids, _ = talker.get_rope_index(batch.attention_mask)
    out = talker.model(
        inputs_embeds=inputs_embeds,
        attention_mask=batch.attention_mask,
        position_ids=position_ids,
        use_cache=False,
    )
    return out.last_hidden_state


def talker_forward(talker, batch: Batch, speaker_vectors: torch.Tensor):
    """(logits [B,S,V] at every position, hidden [B,S,H]) - for analysis; training scores only target positions."""
    hidden = talker_hidden(talker, batch, speaker_vectors)
    return talker.codec_head(hidden), hidden


def subtalker_states(talker, hidden: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """The code predictor's last hidden states [N, G, H_cp] for N frames (what ``forward_finetune`` feeds its heads)."""
    G = codes.shape[1]
    cp = talker.code_predictor
    cp_embeds = cp.get_input_embeddings()
    parts = [hidden.unsqueeze(1), talker.model.codec_embedding(codes[:, :1])]
    for g in range(1, G - 1):
        parts.append(cp_embeds[g - 1](codes[:, g : g + 1]))
    inputs = torch.cat(parts, dim=1)  # [N, G, H]
    return cp.model(inputs_embeds=cp.small_to_mtp_projection(inputs), use_cache=False).last_hidden_state


def subtalker_logits(talker, hidden: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Code-predictor logits [N, G-1, V] for N frames given the talker states that precede them (analysis)."""
    return heads_logits(subtalker_states(talker, hidden, codes)[:, 1:], talker.code_predictor.lm_head)


def heads_logits(states: torch.Tensor, heads) -> torch.Tensor:
    """[N, G, V]: head j applied to ``states[:, j]``."""
    return torch.stack([head(states[:, j]) for j, head in enumerate(heads)], dim=1)


def _plain_linear_weight(module: torch.nn.Module) -> torch.Tensor | None:
    """The weight of a bias-free ``nn.Linear`` (what the fused loss needs), else None: a wrapped, biased,
    hooked or patched head goes through its own ``forward``."""
    plain = type(module) is torch.nn.Linear and module.bias is None and "forward" not in vars(module)
    if plain and not (module._forward_hooks or module._forward_pre_hooks):
        return module.weight
    return None


def heads_ce(states: torch.Tensor, heads: list[torch.nn.Module], targets: torch.Tensor) -> torch.Tensor:
    """Mean CE per head, [G]: head j scores ``states[:, j]`` against ``targets[:, j]``.

    Fused (``linear_ce``: no logits kept for backward) when every head is a plain bias-free Linear;
    otherwise through the modules themselves.
    """
    weights = [_plain_linear_weight(h) for h in heads]
    if all(w is not None for w in weights):
        return linear_cross_entropy(states, torch.stack(weights), targets)
    logits = heads_logits(states, heads).float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none").view(
        targets.shape).mean(0)


def sft_loss(talker, batch: Batch, speaker_vectors: torch.Tensor, subtalker_weight: float = 0.3,
             subtalker_frame_fraction: float = 1.0) -> LossOutput:
    """The SFT loss of one batch. ``subtalker_frame_fraction`` < 1 scores the code predictor on that share of
    the frames, drawn uniformly without replacement from torch's RNG: an unbiased estimate of the same
    sub-talker loss (a mean over frames) at that share of its compute."""
    hidden = talker_hidden(talker, batch, speaker_vectors)
    targets = batch.codec0_targets
    valid = targets != IGNORE_INDEX
    # the codec head (H x 3072) only where a target exists: text, prefix and padding positions have none
    talker_ce = heads_ce(hidden[valid].unsqueeze(1), [talker.codec_head], targets[valid].unsqueeze(1))[0]

    src = batch.subtalker_sources.nonzero(as_tuple=True)  # (row, position) of the state before each frame
    if subtalker_frame_fraction < 1.0:
        n = src[0].numel()
        keep = torch.randperm(n, device=src[0].device)[: max(1, round(subtalker_frame_fraction * n))].sort().values
        src = (src[0][keep], src[1][keep])
    codes = batch.subtalker_codes[src]  # [N, G]
    states = subtalker_states(talker, hidden[src], codes)  # [N, G, H_cp]; position j+1 feeds head j
    per_codebook = heads_ce(states[:, 1:], list(talker.code_predictor.lm_head), codes[:, 1:])  # [G-1]
    sub_ce = per_codebook.mean()
    total = talker_ce + subtalker_weight * sub_ce
    return LossOutput(
        loss=total,
        talker_ce=talker_ce.detach(),
        subtalker_ce=sub_ce.detach(),
        subtalker_ce_per_codebook=per_codebook.detach(),
        num_targets=int(valid.sum()),
        num_frames=int(batch.subtalker_sources.sum()),
        num_subtalker_frames=int(codes.shape[0]),
    )
