"""The GRPO run under accelerate: the policy (fp32 master weights, full or LoRA), a frozen reference,
rollouts -> rewards -> update per step, metrics, checkpoints (``accelerator.save_state``, like SFT) and a
custom_voice export that keeps the built-in speakers (``train/export.export_custom_voice``).

Each process samples its own prompts (``rollout.prompts_per_step`` groups per process per step, drawn by a
seeded shuffle of (seed, step)) with an RNG seeded by (seed, step, rank), so a resumed run draws the same
rollouts as an uninterrupted one. The step's statistics are computed over every process's rollouts.

``metrics.jsonl``, one row per step::

    reward/mean, reward/std, reward/<term>, reward/<term>_std, reward/speaker/<name>
    rollout/eos_rate, rollout/mean_seconds, rollout/std_seconds, rollout/count
    train/loss, train/kl, train/clip_fraction, train/ratio, train/grad_norm
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, gather_object, set_seed
from tqdm.auto import tqdm

from qwen_tts_ext.grpo.config import GRPOConfig
from qwen_tts_ext.grpo.rewards import RewardSpec, judge_metrics, judges_for
from qwen_tts_ext.grpo.rollout import load_prompts, speaker_vectors
from qwen_tts_ext.grpo.step import GRPOModule, Reference, Scored, Settings, collect, score, stats, update
from qwen_tts_ext.train.loop import save_checkpoint


@dataclass
class GRPOState:
    step: int = 0

    @property
    def global_step(self) -> int:  # what train.loop.save_checkpoint names the folder by
        return self.step

    def state_dict(self):
        return asdict(self)

    def load_state_dict(self, d):
        self.step = int(d["step"])


def settings_of(cfg: GRPOConfig) -> Settings:
    r, o = cfg.rollout, cfg.objective
    return Settings(samples_per_prompt=r.samples_per_prompt, temperature=r.temperature, top_k=r.top_k, top_p=r.top_p,
                    subtalker_temperature=r.subtalker_temperature, subtalker_top_k=r.subtalker_top_k,
                    max_frames=r.max_frames, clip_eps=o.clip_eps, kl_beta=o.kl_beta, normalize_std=o.normalize_std,
                    subtalker=o.subtalker, inner_epochs=o.inner_epochs)


def spec_of(cfg: GRPOConfig) -> RewardSpec:
    w = cfg.reward
    return RewardSpec(weights=dict(w.weights), cap_penalty=w.cap_penalty, duration_target=w.duration_target,
                      stop_margin=w.stop_margin, stop_slack_s=w.stop_slack_s)


def picks(step: int, rank: int, processes: int, per_process: int, n_prompts: int, seed: int) -> list[int]:
    """The prompts process ``rank`` rolls out at ``step``: a seeded shuffle, cycled."""
    order = list(range(n_prompts))
    random.Random(seed * 1_000_003 + step).shuffle(order)
    start = rank * per_process
    return [order[(start + i) % n_prompts] for i in range(per_process)]


def load_tts(path: Path):
    from qwen_tts import Qwen3TTSModel

    return Qwen3TTSModel.from_pretrained(str(path), dtype=torch.float32)  # fp32 master weights


def make_trainable(model, cfg: GRPOConfig, say=print) -> bool:
    """Freeze all but the talker (the code predictor only with objective.subtalker); LoRA when asked."""
    from qwen_tts_ext.train.lora import apply_lora

    t = cfg.train
    model.requires_grad_(False)
    model.talker.requires_grad_(True)
    model.talker.model.text_embedding.requires_grad_(False)
    model.talker.code_predictor.requires_grad_(t.train_code_predictor)
    if t.lora_rank > 0:
        n = apply_lora(model, t.lora_rank, t.lora_alpha, 0.0, t.lora_targets, t.train_code_predictor)
        say(f"LoRA rank {t.lora_rank}: {n:,} trainable parameters")
        return True
    return False


def reference_audio_of(prompt_file: str) -> dict:
    """Per speaker, reference audio (16 kHz) from the prompts' ``ref_audio`` fields (for speaker similarity)."""
    from qwen_tts_ext.train.judged_eval import reference_audio

    paths: dict[str, list[str]] = {}
    for line in Path(prompt_file).read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            if row.get("ref_audio"):
                paths.setdefault(str(row["speaker"]).strip().lower(), []).append(str(row["ref_audio"]))
    return {k: reference_audio(v) for k, v in paths.items()}


def train(cfg: GRPOConfig, plan) -> dict:
    from qwen_tts_ext.grpo.cli import start_run_dir
    from qwen_tts_ext.train.data import TextTokenizer
    from qwen_tts_ext.train.export import export_custom_voice
    from qwen_tts_ext.train.layout import SpecialIds
    from qwen_tts_ext.train.speaker_lock import build_speaker_table

    out_dir, t = plan.output_dir, cfg.train
    trackers = [] if cfg.log.tracker == "none" else [cfg.log.tracker]
    accelerator = Accelerator(mixed_precision=t.precision, log_with=trackers or None,
                              project_config=ProjectConfiguration(project_dir=str(out_dir), logging_dir=str(out_dir / "logs")))
    set_seed(t.seed, device_specific=False)
    main, say = accelerator.is_main_process, accelerator.print
    accelerator.wait_for_everyone()
    if main:
        start_run_dir(plan)

    tts = load_tts(plan.model_dir)
    model = tts.model
    anchor = load_tts(plan.reference_dir).model.talker if plan.reference_dir else model.talker
    ref = Reference(anchor).to(accelerator.device)  # taken before LoRA: the anchor is the starting weights
    del anchor
    prompts = load_prompts(cfg.prompts)
    names = sorted({p.speaker for p in prompts})
    vectors = speaker_vectors(model, names, cfg.speakers)
    tconf = model.config.talker_config
    table = build_speaker_table(names, dict(zip(names, vectors)), tconf, tconf.hidden_size)
    lora = make_trainable(model, cfg, say)
    s = settings_of(cfg)
    module = GRPOModule(model, vectors, s)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    module, optimizer = accelerator.prepare(module, optimizer)
    state = GRPOState()
    accelerator.register_for_checkpointing(state)
    if plan.mode == "resume":
        accelerator.load_state(str(plan.resume_from))
        say(f"resumed from {plan.resume_from} (step {state.step})")
    if main:
        (out_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
        (out_dir / "speakers.json").write_text(json.dumps(table.spk_id(), indent=2))
        if trackers:
            accelerator.init_trackers(cfg.log.project, config={"recipe": json.dumps(asdict(cfg))})

    judges = []
    wanted = judges_for(judge_metrics(cfg.reward.weights))
    if wanted:
        from qwen_tts_ext.evaluation.judges import load_judges

        opts = {"threads": cfg.reward.threads, **({"asr": cfg.reward.asr} if cfg.reward.asr else {})}
        judges, notes = load_judges(wanted, **opts)
        for note in notes:
            say(f"reward judges: {note}")
    refs = reference_audio_of(cfg.prompts) if judges else {}
    tok, ids = TextTokenizer(tts.processor.tokenizer), SpecialIds.from_config(model.config)
    spec, rank, n_proc = spec_of(cfg), accelerator.process_index, accelerator.num_processes
    bar = tqdm(total=t.steps, initial=state.step, disable=not main, desc="grpo", unit="step")
    last: dict = {}
    while state.step < t.steps:
        step = state.step
        torch.manual_seed(t.seed * 1_000_003 + step * 1009 + rank)
        policy = accelerator.unwrap_model(module).model
        want_audio = bool(cfg.log.samples_every) and (step + 1) % cfg.log.samples_every == 0
        rollouts = collect(policy, tts.processor, prompts, picks(step, rank, n_proc, cfg.rollout.prompts_per_step,
                                                                 len(prompts), t.seed), vectors, names, s)
        scored = score(policy, rollouts, prompts, spec, judges, refs, keep_audio=want_audio)
        with accelerator.autocast():
            upd = update(module, ref, optimizer, scored, prompts, tok, ids, names, backward=accelerator.backward,
                         clip=lambda: accelerator.clip_grad_norm_(module.parameters(), t.max_grad_norm))
        state.step += 1
        last = log_step(accelerator, cfg, out_dir, state.step, scored, upd, prompts, trackers)
        if want_audio and main:
            write_samples(out_dir / "samples" / f"step-{state.step:08d}", scored, prompts, cfg.log.samples)
            log_audio(accelerator, trackers, state.step, scored, prompts, cfg.log.samples)
        bar.update(1)
        bar.set_postfix(reward=f"{last['reward/mean']:.3f}", kl=f"{last['train/kl']:.4f}")
        if cfg.checkpoint.every_steps and state.step % cfg.checkpoint.every_steps == 0 and state.step < t.steps:
            save_checkpoint(accelerator, state, out_dir / "checkpoints", cfg.checkpoint.keep_last)
    bar.close()
    save_checkpoint(accelerator, state, out_dir / "checkpoints", cfg.checkpoint.keep_last)
    export = out_dir / "export"
    if main:
        import qwen_tts_ext

        provenance = {"grpo": asdict(cfg), "step": state.step, "lora": lora,
                      "versions": {"qwen_tts_ext": qwen_tts_ext.__version__, "torch": torch.__version__}}
        export_custom_voice(accelerator.unwrap_model(module).model, plan.model_dir, export, table,
                            dtype=cfg.export_dtype, provenance=provenance)
        write_card(export, cfg, state.step, last)
    accelerator.wait_for_everyone()
    summary = {"step": state.step, "num_processes": n_proc, "export": str(export),
               **{k: v for k, v in last.items() if not k.startswith("reward/speaker/")}}
    if main:
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    accelerator.end_training()
    return summary


def log_step(accelerator, cfg, out_dir: Path, step: int, scored: Scored, upd: dict, prompts, trackers) -> dict:
    """Gather every process's rollouts, compute the step's statistics, write them (main) and return them."""
    mine = [(float(r), t, x.frames, x.stopped, prompts[x.prompt].speaker)
            for r, t, x in zip(scored.rewards.tolist(), scored.terms, scored.rollouts)]
    rows = gather_object(mine) if accelerator.num_processes > 1 else mine
    upd_all = gather_object([upd]) if accelerator.num_processes > 1 else [upd]
    from qwen_tts_ext.grpo.rollout import Rollout

    merged = Scored([Rollout(0, torch.zeros(f, 1), ok, 0) for _, _, f, ok, _ in rows],
                    torch.tensor([r for r, *_ in rows]), [t for _, t, *_ in rows])
    mean_upd = {k: float(np.mean([u[k] for u in upd_all if k in u])) for k in upd_all[0]}
    values = stats(merged, mean_upd)
    for name in sorted({sp for *_, sp in rows}):
        values[f"reward/speaker/{name}"] = float(np.mean([r for r, *_, sp in rows if sp == name]))
    if trackers:
        accelerator.log(values, step=step)
    if accelerator.is_main_process:
        with open(out_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
    return values


def write_samples(folder: Path, scored: Scored, prompts, n: int) -> None:
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (r, (wav, sr)) in enumerate(list(zip(scored.rollouts, scored.audio))[:n]):
        sf.write(folder / f"{i:02d}.wav", wav, sr)
        rows.append({"file": f"{i:02d}.wav", "text": prompts[r.prompt].text, "speaker": prompts[r.prompt].speaker,
                     "frames": r.frames, "stopped_by_eos": r.stopped, "reward": float(scored.rewards[i]),
                     **scored.terms[i]})
    (folder / "rollouts.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows), encoding="utf-8")


def log_audio(accelerator, trackers: list[str], step: int, scored: Scored, prompts, n: int) -> None:
    """The first ``n`` rollouts' audio to the trackers (TensorBoard audio, W&B Audio), captioned."""
    for name in trackers:
        tracker = accelerator.get_tracker(name, unwrap=True)
        for i, (r, (wav, sr)) in enumerate(list(zip(scored.rollouts, scored.audio))[:n]):
            caption = (f"{prompts[r.prompt].speaker}: {prompts[r.prompt].text} | {r.frames} frames, "
                       f"{'EOS' if r.stopped else 'cap'}, reward {float(scored.rewards[i]):.3f}")
            if name == "tensorboard":
                tracker.add_audio(f"samples/{i:02d}", torch.from_numpy(np.asarray(wav, dtype=np.float32)), step,
                                  sample_rate=sr)
                tracker.add_text(f"samples/{i:02d}", caption, step)
            elif name == "wandb":
                import wandb  # only with log.tracker=wandb

                tracker.log({f"samples/{i:02d}": wandb.Audio(wav, sample_rate=sr, caption=caption)}, step=step)


def write_card(export: Path, cfg: GRPOConfig, step: int, last: dict) -> None:
    terms = ", ".join(f"{w:g} x {k}" for k, w in cfg.reward.weights.items())
    lines = [
        "# GRPO post-trained Qwen3-TTS talker", "",
        f"Made by `qwen-tts-ext grpo` from `{cfg.model}` ({step} steps; KL anchor `{cfg.reference or cfg.model}`, "
        f"beta {cfg.objective.kl_beta:g}). A custom_voice checkpoint: built-in speakers are kept.", "",
        f"- reward: {terms} - {cfg.reward.cap_penalty:g} per frame-cap hit",
        f"- rollouts: {cfg.rollout.samples_per_prompt} per prompt, temperature {cfg.rollout.temperature:g}",
        f"- last step: reward {last.get('reward/mean', float('nan')):.4f}, EOS rate "
        f"{last.get('rollout/eos_rate', float('nan')):.3f}, mean {last.get('rollout/mean_seconds', float('nan')):.2f} s, "
        f"KL {last.get('train/kl', float('nan')):.4f}", "",
        "Provenance: `sft_export.json` (the GRPO recipe under `grpo`, versions); the run folder's metrics.jsonl.",
    ]
    (export / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
