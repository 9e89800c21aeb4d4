"""GRPO's log-probability path is the SFT loss's per-token CE; advantages and the surrogate do what they say."""

from __future__ import annotations

import pytest
import torch

from qwen_tts_ext.grpo.objective import group_advantages, grpo_loss, token_logprobs
from qwen_tts_ext.train.data import TextTokenizer
from qwen_tts_ext.train.layout import SpecialIds, build_sample, collate
from qwen_tts_ext.train.losses import sft_loss


@pytest.fixture(scope="module")
def tts(tiny_base):
    from qwen_tts import Qwen3TTSModel

    return Qwen3TTSModel.from_pretrained(str(tiny_base), dtype=torch.float32)


def _batch(tts, frames=(7, 4)):
    ids = SpecialIds.from_config(tts.model.config)
    tok = TextTokenizer(tts.processor.tokenizer)
    g = torch.Generator().manual_seed(0)
    texts = ["Hello there, friend.", "Yes."]
    samples = [build_sample(tok.text_ids(t), torch.randint(0, 2048, (n, 16), generator=g), ids, role_ids=tok.role_ids)
               for t, n in zip(texts, frames)]
    hidden = tts.model.config.talker_config.hidden_size
    return collate(samples, [0, 1]), torch.randn(2, hidden, generator=g) * 0.1


def test_logprobs_equal_sft_per_token_ce(tts):
    batch, vecs = _batch(tts)
    talker = tts.model.talker
    with torch.no_grad():
        ref = sft_loss(talker, batch, vecs, subtalker_weight=0.3)
        lp = token_logprobs(talker, batch, vecs, subtalker=True)
    n = int(lp.mask.sum())
    assert n == ref.num_targets
    torch.testing.assert_close(-lp.codec0[lp.mask].sum() / n, ref.talker_ce, rtol=1e-5, atol=1e-6)
    frames = ref.num_frames
    torch.testing.assert_close(-lp.subcodes.sum() / (frames * 15), ref.subtalker_ce, rtol=1e-5, atol=1e-6)
    # per token too: position by position, CE of the codec head against the layout's target
    from qwen_tts_ext.train.losses import talker_forward

    with torch.no_grad():
        logits, _ = talker_forward(talker, batch, vecs)
    ce = torch.nn.functional.cross_entropy(logits[lp.mask].float(), batch.codec0_targets[lp.mask], reduction="none")
    torch.testing.assert_close(-lp.codec0[lp.mask], ce, rtol=1e-5, atol=1e-5)


def test_capped_rollout_has_no_eos_target(tts):
    batch, vecs = _batch(tts)
    with torch.no_grad():
        full = token_logprobs(tts.model.talker, batch, vecs)
        capped = token_logprobs(tts.model.talker, batch, vecs, stopped=torch.tensor([True, False]))
    assert int(full.mask[0].sum()) == int(capped.mask[0].sum()) == 8  # 7 frames + EOS
    assert int(full.mask[1].sum()) == 5 and int(capped.mask[1].sum()) == 4  # EOS target dropped
    eos = tts.model.config.talker_config.codec_eos_token_id
    assert not (batch.codec0_targets[1][capped.mask[1]] == eos).any()


def test_temperature_and_suppression_change_logprobs(tts):
    batch, vecs = _batch(tts)
    from qwen_tts_ext.grpo.objective import suppressed_ids

    cfg = tts.model.config.talker_config
    sup = suppressed_ids(cfg.vocab_size, cfg.codec_eos_token_id)
    with torch.no_grad():
        plain = token_logprobs(tts.model.talker, batch, vecs)
        masked = token_logprobs(tts.model.talker, batch, vecs, suppress=sup)
    # suppressing ids never targeted raises every target's log-prob (less mass elsewhere)
    assert (masked.codec0[plain.mask] > plain.codec0[plain.mask]).all()


def test_group_advantages():
    r = torch.tensor([1.0, 2.0, 3.0, 10.0, 10.0, 10.0])
    g = torch.tensor([0, 0, 0, 1, 1, 1])
    a = group_advantages(r, g, normalize_std=False)
    torch.testing.assert_close(a, torch.tensor([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0]))
    a = group_advantages(r, g, normalize_std=True)
    assert abs(float(a[:3].std(unbiased=False)) - 1.0) < 1e-3 and float(a[3:].abs().max()) == 0.0


def test_loss_clips_and_kl():
    logp = torch.zeros(2, 3, requires_grad=True)
    mask = torch.ones(2, 3, dtype=torch.bool)
    out = grpo_loss(logp, torch.zeros(2, 3), torch.zeros(2, 3), mask, torch.tensor([1.0, -1.0]))
    assert out.kl == 0.0 and out.clip_fraction == 0.0
    out.loss.backward()
    # d(-mean(ratio*A))/dlogp = -A / (rows * positions)
    torch.testing.assert_close(logp.grad, torch.tensor([[-1 / 6] * 3, [1 / 6] * 3]))
    # a ratio beyond 1 + eps with a positive advantage gets no gradient (clipped)
    logp2 = torch.full((1, 2), 0.5, requires_grad=True)
    out2 = grpo_loss(logp2, torch.zeros(1, 2), None, torch.ones(1, 2, dtype=torch.bool), torch.tensor([1.0]))
    out2.loss.backward()
    assert out2.clip_fraction == 1.0 and float(logp2.grad.abs().max()) == 0.0
    # k3 >= 0 and grows with the distance to the reference
    lp = torch.tensor([[-1.0, -2.0]])
    near = grpo_loss(lp, lp, lp + 0.1, torch.ones(1, 2, dtype=torch.bool), torch.zeros(1))
    far = grpo_loss(lp, lp, lp + 1.0, torch.ones(1, 2, dtype=torch.bool), torch.zeros(1))
    assert 0 < near.kl < far.kl


def test_prompt_tags_resolve_like_synthesis(tmp_path):
    from qwen_tts_ext.grpo.rollout import load_prompts
    from qwen_tts_ext.synthesis.emotions import load_emotions

    p = tmp_path / "p.jsonl"
    p.write_text('{"text": "Hi.", "speaker": "A", "tag": "whisper"}\n{"text": "Hi.", "speaker": "a", "tag": "like a pirate"}\n'
                 '{"text": "Hi.", "speaker": "a", "instruct": "Loud.", "tag": "whisper"}\n')
    got = load_prompts(p)
    assert [x.speaker for x in got] == ["a", "a", "a"]
    assert got[0].instruct == load_emotions().resolve("whisper").text != "whisper"
    assert got[1].instruct == "like a pirate" and got[2].instruct == "Loud."
