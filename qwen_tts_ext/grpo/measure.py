"""Before/after numbers for a GRPO run: the same prompts, the same seeds, any checkpoint.

    from qwen_tts_ext.grpo.measure import measure
    before = measure("out/blend-010", "prompts.jsonl", samples=8, weights={"stop_in_time": 1, "spk_sim": 0.5})
    after = measure("runs/repair/export", "prompts.jsonl", samples=8, weights={"stop_in_time": 1, "spk_sim": 0.5})

Each prompt is sampled ``samples`` times (seed ``seed + prompt index``) through the rollout code the training
uses, and scored with the same reward terms and judges. Returns the step statistics of ``grpo/step.stats``
(reward and each term's mean and std, EOS rate, mean/std seconds) plus ``durations`` (every clip's seconds).
"""

from __future__ import annotations

import torch

from qwen_tts_ext.grpo.rewards import RewardSpec, judge_metrics, judges_for
from qwen_tts_ext.grpo.rollout import load_prompts, speaker_vectors
from qwen_tts_ext.grpo.step import Settings, collect, score, stats


def measure(model_dir: str, prompts_file: str, *, samples: int = 8, weights: dict | None = None, seed: int = 0,
            speakers: str = "", settings: Settings | None = None, spec: RewardSpec | None = None) -> dict:
    from qwen_tts import Qwen3TTSModel

    from qwen_tts_ext.constants import FRAME_RATE
    from qwen_tts_ext.grpo.loop import reference_audio_of

    tts = Qwen3TTSModel.from_pretrained(str(model_dir), dtype=torch.float32)
    prompts = load_prompts(prompts_file)
    names = sorted({p.speaker for p in prompts})
    vectors = speaker_vectors(tts.model, names, speakers)
    spec = spec or RewardSpec(weights=dict(weights or {"stop_in_time": 1.0}))
    s = settings or Settings()
    s.samples_per_prompt = samples
    judges = []
    wanted = judges_for(judge_metrics(spec.weights))
    if wanted:
        from qwen_tts_ext.evaluation.judges import load_judges

        judges, _ = load_judges(wanted)
    refs = reference_audio_of(prompts_file) if judges else {}
    rollouts = []
    for i in range(len(prompts)):
        torch.manual_seed(seed + i)
        rollouts += collect(tts.model, tts.processor, prompts, [i], vectors, names, s)
    scored = score(tts.model, rollouts, prompts, spec, judges, refs)
    return {**stats(scored), "durations": [round(r.frames / FRAME_RATE, 2) for r in rollouts]}
