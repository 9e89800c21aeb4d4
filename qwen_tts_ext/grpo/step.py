"""One GRPO step, without accelerate: rollouts -> rewards -> advantages -> clipped surrogate + k3 KL update.

``loop.py`` drives this under accelerate (devices, DDP, checkpoints, trackers); tests drive it directly on
a tiny model. The policy's loss runs inside :class:`GRPOModule`'s ``forward`` (what DDP needs to sync).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch

from qwen_tts_ext.grpo.objective import LogProbs, group_advantages, grpo_loss, suppressed_ids, token_logprobs
from qwen_tts_ext.grpo.rewards import RewardSpec, builtin_terms, combine
from qwen_tts_ext.grpo.rollout import Prompt, Rollout, decode, layout_batch, sample_group


@dataclass
class Settings:
    samples_per_prompt: int = 4
    temperature: float = 1.0
    top_k: int = 0  # 0 = off (on-policy ratios need the full distribution)
    top_p: float = 1.0
    subtalker_temperature: float = 1.0
    subtalker_top_k: int = 0
    max_frames: int = 0  # 0 = frame_cap(text)
    clip_eps: float = 0.2
    kl_beta: float = 0.04
    normalize_std: bool = True
    subtalker: bool = False  # include codebooks 1..15 in the log-probabilities
    inner_epochs: int = 1  # updates per batch of rollouts (ratio != 1 from the second on)

    def gen_kwargs(self) -> dict:
        return {"do_sample": True, "temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p,
                "repetition_penalty": 1.0, "subtalker_dosample": True, "subtalker_temperature": self.subtalker_temperature,
                "subtalker_top_k": self.subtalker_top_k, "subtalker_top_p": 1.0}


class GRPOModule(torch.nn.Module):
    """The policy and its speaker table; ``forward`` returns the GRPO loss of one batch of rollouts."""

    def __init__(self, model, speaker_vectors: torch.Tensor, settings: Settings):
        super().__init__()
        self.model = model
        self.register_buffer("speaker_vectors", speaker_vectors.float(), persistent=False)
        self.s = settings
        cfg = model.config.talker_config
        self.suppress = suppressed_ids(cfg.vocab_size, cfg.codec_eos_token_id)

    def logprobs(self, batch, stopped) -> LogProbs:
        return logprobs_of(self.model, batch, self.speaker_vectors, stopped, self.s, self.suppress)

    def forward(self, batch, stopped, old_logp, ref_logp, advantages):
        lp = self.logprobs(batch, stopped)
        parts = grpo_loss(lp.total(self.s.subtalker), old_logp, ref_logp, lp.mask, advantages,
                          clip_eps=self.s.clip_eps, kl_beta=self.s.kl_beta)
        return {"loss": parts.loss, "kl": parts.kl, "clip_fraction": parts.clip_fraction, "ratio": parts.ratio_mean}


def logprobs_of(model, batch, vectors, stopped, s: Settings, suppress) -> LogProbs:
    return token_logprobs(model.talker, batch, vectors, temperature=s.temperature, suppress=suppress,
                          subtalker=s.subtalker, subtalker_temperature=s.subtalker_temperature, stopped=stopped)


@dataclass
class Scored:
    rollouts: list[Rollout]
    rewards: torch.Tensor  # [R]
    terms: list[dict]  # per rollout, signed terms
    audio: list = field(default_factory=list)  # (wav, sr) per rollout when decoded


def collect(model, processor, prompts: list[Prompt], picks: list[int], vectors: torch.Tensor, names: list[str],
            s: Settings) -> list[Rollout]:
    """``s.samples_per_prompt`` rollouts of each picked prompt (the group id is the prompt's index)."""
    was = model.training
    model.eval()
    out = []
    for i in picks:
        p = prompts[i]
        out += sample_group(model, processor, p, i, vectors[names.index(p.speaker)], s.samples_per_prompt,
                            max_frames=s.max_frames, gen=s.gen_kwargs())
    model.train(was)
    return out


def score(model, rollouts: list[Rollout], prompts: list[Prompt], spec: RewardSpec, judges=(), refs=None,
          keep_audio: bool = False) -> Scored:
    """Rewards of the rollouts: built-in terms, plus the judges' metrics on the decoded audio when any."""
    terms = [builtin_terms(prompts[r.prompt].text, r.frames, r.stopped, spec) for r in rollouts]
    audio = decode(model, rollouts) if (judges or keep_audio) else []
    judged = [{} for _ in rollouts]
    if judges:
        from qwen_tts_ext.evaluation.judges import Clip, score_clips

        clips = []
        for n, (r, (wav, sr)) in enumerate(zip(rollouts, audio)):
            p = prompts[r.prompt]
            ref = (refs or {}).get(p.speaker)
            clips.append(Clip(wav, sr, id=str(n), text=p.text, language=None if p.language == "auto" else p.language,
                              ref=ref[0] if ref else None, ref_sample_rate=ref[1] if ref else None,
                              meta={"stopped_by_eos": r.stopped, "frame_cap": r.cap, "frames": r.frames}))
        judged = score_clips(clips, list(judges))
    rewards, rows = combine(terms, judged, [r.stopped for r in rollouts], spec)
    return Scored(rollouts, torch.tensor(rewards, dtype=torch.float32), rows, audio)


class Reference(torch.nn.Module):
    """The frozen KL anchor: a copy of a model's talker (all the log-prob pass needs)."""

    def __init__(self, talker):
        super().__init__()
        self.talker = copy.deepcopy(talker).eval().requires_grad_(False)


@torch.no_grad()
def reference_logprobs(ref_model, batch, vectors, stopped, s: Settings, suppress) -> torch.Tensor | None:
    if ref_model is None or s.kl_beta == 0:
        return None
    return logprobs_of(ref_model, batch, vectors, stopped, s, suppress).total(s.subtalker)


def stats(scored: Scored, extra: dict | None = None) -> dict:
    """What a step logs about its rollouts: reward and each term (mean, std), EOS rate, durations."""
    from qwen_tts_ext.constants import FRAME_RATE

    r = scored.rewards.numpy()
    out = {"reward/mean": float(r.mean()), "reward/std": float(r.std())}
    for k in sorted({k for t in scored.terms for k in t}):
        v = np.array([t.get(k, 0.0) for t in scored.terms], dtype=np.float64)
        out[f"reward/{k}"] = float(v.mean())
        out[f"reward/{k}_std"] = float(v.std())
    frames = np.array([x.frames for x in scored.rollouts], dtype=np.float64)
    out.update({"rollout/eos_rate": float(np.mean([x.stopped for x in scored.rollouts])),
                "rollout/mean_seconds": float(frames.mean() / FRAME_RATE),
                "rollout/std_seconds": float(frames.std() / FRAME_RATE), "rollout/count": len(scored.rollouts)})
    return {**out, **(extra or {})}


def update(module: GRPOModule, ref_model, optimizer, scored: Scored, prompts: list[Prompt], tok, ids,
           names: list[str], *, backward=None, clip=None) -> dict:
    """Advantages, old/ref log-probs, then ``inner_epochs`` optimizer steps on the rollouts. ``backward``
    and ``clip`` (accelerate's) default to plain torch. Returns the loss, KL, clip fraction, mean ratio."""
    core = getattr(module, "module", module)  # under DDP the GRPOModule is wrapped
    s = core.s
    device = core.speaker_vectors.device
    batch = layout_batch(scored.rollouts, prompts, tok, ids, names).to(device)
    stopped = torch.tensor([r.stopped for r in scored.rollouts], device=device)
    groups = torch.tensor([r.prompt for r in scored.rollouts], device=device)
    adv = group_advantages(scored.rewards.to(device), groups, s.normalize_std)
    with torch.no_grad():
        old = core.logprobs(batch, stopped).total(s.subtalker)
    ref = reference_logprobs(ref_model, batch, core.speaker_vectors, stopped, s, core.suppress)
    out = {}
    for _ in range(max(1, s.inner_epochs)):
        res = module(batch, stopped, old, ref, adv)
        (backward or (lambda loss: loss.backward()))(res["loss"])
        grad_norm = clip() if clip else None
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        out = {"train/loss": float(res["loss"].detach()), "train/kl": res["kl"], "train/clip_fraction": res["clip_fraction"],
               "train/ratio": res["ratio"], **({"train/grad_norm": float(grad_norm)} if grad_norm is not None else {})}
    return out
