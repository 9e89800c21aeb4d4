"""GRPO post-training of the talker with measured rewards (``qwen-tts-ext grpo``).

rollout.py (K samples per prompt, stock ``generate()``), rewards.py (weighted judge metrics, duration, stop),
objective.py (log-probs through the SFT layout, group advantages, clipped ratio, k3 KL), step.py (one
update), config.py / cli.py / loop.py (the command under accelerate).
"""
