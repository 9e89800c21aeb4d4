"""GRPO on a tiny model: a reward with a known optimum is learned; with no reward the policy does not move.

Tiny random models never emit EOS by themselves (codebook 0 is ~uniform over 2048 codes), so the policy here
starts from a model that stops: its codec head gets a bias with +4 on EOS (a hazard of a few % per frame,
~1.5 s utterances under a 24-frame cap). The codec head with a bias is an ordinary trainable module: both
the stock ``generate()`` and the teacher-forced log-prob pass go through it, and the EOS logit is what a
duration reward can move. Each step is 16 rollouts (2 prompts x 8) on one CPU thread (~3-5 s).
"""

from __future__ import annotations

import pytest
import torch

from qwen_tts_ext.grpo.rewards import RewardSpec
from qwen_tts_ext.grpo.rollout import Prompt
from qwen_tts_ext.grpo.step import GRPOModule, Reference, Settings, collect, score, stats, update
from qwen_tts_ext.train.data import TextTokenizer
from qwen_tts_ext.train.layout import SpecialIds

PROMPTS = [Prompt("Hello there.", "a"), Prompt("A test sentence.", "a")]
EOS_BIAS = 4.0
STEPS = 6  # the stated budget: the duration reaches its target within this many steps
TARGET_S = 0.4
KL_BOUND = 1.0  # per-position k3 against the starting model, with kl_beta 0.04


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _policy(tiny_base):
    from qwen_tts import Qwen3TTSModel

    tts = Qwen3TTSModel.from_pretrained(str(tiny_base), dtype=torch.float32)
    m = tts.model
    eos = m.config.talker_config.codec_eos_token_id
    old = m.talker.codec_head
    head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(old.weight)
        head.bias.zero_()
        head.bias[eos] = EOS_BIAS
    m.talker.codec_head = head
    m.requires_grad_(False)
    m.talker.requires_grad_(True)
    return tts


def _run(tts, spec: RewardSpec, steps: int, lr: float = 1e-2, kl_beta: float = 0.04):
    torch.manual_seed(0)
    m = tts.model
    s = Settings(samples_per_prompt=8, max_frames=24, kl_beta=kl_beta)
    vecs = torch.randn(1, m.config.talker_config.hidden_size, generator=torch.Generator().manual_seed(1)) * 0.1
    module = GRPOModule(m, vecs, s)
    ref = Reference(m.talker)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    tok, ids = TextTokenizer(tts.processor.tokenizer), SpecialIds.from_config(m.config)
    log = []
    for _ in range(steps):
        rollouts = collect(m, tts.processor, PROMPTS, [0, 1], vecs, ["a"], s)
        scored = score(m, rollouts, PROMPTS, spec)
        log.append(stats(scored, update(module, ref, opt, scored, PROMPTS, tok, ids, ["a"])))
    return log


def test_duration_reward_is_learned(tiny_base, one_thread):
    tts = _policy(tiny_base)
    log = _run(tts, RewardSpec(weights={"duration": 1.0}, cap_penalty=0.0, duration_target=TARGET_S), STEPS)
    first, last = log[0], log[-2:]
    start_s = first["rollout/mean_seconds"]
    end_s = sum(x["rollout/mean_seconds"] for x in last) / len(last)
    assert start_s > TARGET_S + 0.6, f"the starting policy should speak well past the target ({start_s:.2f} s)"
    assert abs(end_s - TARGET_S) < 0.25, [round(x["rollout/mean_seconds"], 3) for x in log]
    assert sum(x["reward/mean"] for x in last) / len(last) > first["reward/mean"] + 0.5
    assert all(x["train/kl"] < KL_BOUND for x in log), [round(x["train/kl"], 3) for x in log]
    assert log[0]["train/kl"] == 0.0  # the first update starts at the reference


def test_no_reward_only_kl_does_not_move(tiny_base, one_thread):
    tts = _policy(tiny_base)
    before = {k: v.clone() for k, v in tts.model.talker.state_dict().items()}
    log = _run(tts, RewardSpec(weights={"duration": 0.0, "stop_in_time": 0.0}, cap_penalty=0.0), steps=2, lr=5e-2)
    after = tts.model.talker.state_dict()
    assert max(float((after[k] - before[k]).abs().max()) for k in before) == 0.0
    assert all(x["train/kl"] == 0.0 and x["reward/std"] == 0.0 for x in log)
