"""Test helpers for GRPO: a tiny checkpoint that stops by itself.

Tiny random checkpoints never emit EOS (codebook 0 is ~uniform over 2048 codes), so every rollout runs to the
frame cap and a reward on duration has nothing to compare. ``make_stopping_checkpoint`` copies one and points
its codec head's EOS row along the mean direction of the talker's final hidden states (measured on a laid-out
random utterance), scaled so the EOS logit is ``eos_logit`` on average: the copy stops after a few frames to
the whole cap, a duration spread GRPO can act on. Everything else is byte-identical; it is an ordinary
checkpoint the stock loader and every command read as they read any other.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch


def make_stopping_checkpoint(src: Path, dst: Path, eos_logit: float = 3.0) -> Path:
    from qwen_tts import Qwen3TTSModel
    from safetensors.torch import load_file, save_file

    from qwen_tts_ext.train.data import TextTokenizer
    from qwen_tts_ext.train.layout import IGNORE_INDEX, SpecialIds, build_sample, collate
    from qwen_tts_ext.train.losses import talker_hidden

    dst = Path(dst)
    if (dst / "model.safetensors").is_file():
        return dst
    shutil.copytree(src, dst)
    tts = Qwen3TTSModel.from_pretrained(str(src), dtype=torch.float32)
    m = tts.model
    tok, ids = TextTokenizer(tts.processor.tokenizer), SpecialIds.from_config(m.config)
    g = torch.Generator().manual_seed(0)
    samples = [build_sample(tok.text_ids(t), torch.randint(0, 2048, (12, 16), generator=g), ids, role_ids=tok.role_ids)
               for t in ("Hello there.", "A second line.")]
    hidden = m.config.talker_config.hidden_size
    with torch.no_grad():
        batch = collate(samples, [0, 1])
        h = talker_hidden(m.talker, batch, torch.randn(2, hidden, generator=g) * 0.1)[batch.codec0_targets != IGNORE_INDEX]
    mu = h.mean(0)
    row = mu / (h @ mu).mean() * eos_logit
    state = load_file(str(src / "model.safetensors"))
    key = "talker.codec_head.weight"
    state[key] = state[key].clone()
    state[key][m.config.talker_config.codec_eos_token_id] = row.to(state[key].dtype)
    save_file(state, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst
