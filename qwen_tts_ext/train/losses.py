"""The SFT objective: CE(codebook 0 of the talker) + w x CE(code predictor, codebooks 1..15).

Both losses are computed here, explicitly and shifted exactly once (the layout already aligned the
targets), instead of through HF's ``ForCausalLMLoss``, which shifts again: the official script's
double shifts taught position p the frame p+2 and head i the codebook i+1.

- Talker: ``logits[b, p]`` is scored against ``codec0_targets[b, p]`` (codebook 0 of position p+1).
- Code predictor, per frame t: input ``[h_{P_t - 1}, E0(c0), E1(c1), ..., E14(c14)]`` where
  ``h_{P_t - 1}`` is the talker hidden state of the position *before* frame t (inference's
  ``past_hidden``); ``forward_finetune`` returns ``logits[:, j]`` from input position j+1 through
  ``lm_head[j]``; head j is scored against codebook j+1, for j = 0..14.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from qwen_tts_ext.train.layout import IGNORE_INDEX, Batch, embed_batch


@dataclass
class LossOutput:
    loss: torch.Tensor  # total, differentiable
    talker_ce: torch.Tensor  # detached scalar
    subtalker_ce: torch.Tensor  # detached scalar (mean over codebooks 1..15)
    subtalker_ce_per_codebook: torch.Tensor  # [G-1] detached, index j = codebook j+1
    num_targets: int
    num_frames: int


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


def subtalker_logits(talker, hidden: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Code-predictor logits [N, G-1, V] for N frames given the talker states that precede them."""
    G = codes.shape[1]
    cp_embeds = talker.code_predictor.get_input_embeddings()
    parts = [hidden.unsqueeze(1), talker.model.codec_embedding(codes[:, :1])]
    for g in range(1, G - 1):
        parts.append(cp_embeds[g - 1](codes[:, g : g + 1]))
    inputs = torch.cat(parts, dim=1)  # [N, G, H]
    return talker.code_predictor.forward_finetune(inputs_embeds=inputs).logits


def sft_loss(talker, batch: Batch, speaker_vectors: torch.Tensor, subtalker_weight: float = 0.3) -> LossOutput:
    hidden = talker_hidden(talker, batch, speaker_vectors)
    targets = batch.codec0_targets
    valid = targets != IGNORE_INDEX
    # the codec head (H x 3072) only where a target exists: text, prefix and padding positions have none
    logits = talker.codec_head(hidden[valid])
    talker_ce = F.cross_entropy(logits.float(), targets[valid])

    src = batch.subtalker_sources
    codes = batch.subtalker_codes[src]  # [N, G]
    sub_logits = subtalker_logits(talker, hidden[src], codes).float()  # [N, G-1, V]
    per_token = F.cross_entropy(
        sub_logits.reshape(-1, sub_logits.shape[-1]), codes[:, 1:].reshape(-1), reduction="none"
    ).view(codes.shape[0], -1)
    per_codebook = per_token.mean(0)
    sub_ce = per_codebook.mean()
    total = talker_ce + subtalker_weight * sub_ce
    return LossOutput(
        loss=total,
        talker_ce=talker_ce.detach(),
        subtalker_ce=sub_ce.detach(),
        subtalker_ce_per_codebook=per_codebook.detach(),
        num_targets=int(valid.sum()),
        num_frames=int(codes.shape[0]),
    )
