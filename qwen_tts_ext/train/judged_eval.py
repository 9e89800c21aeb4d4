"""The judged evaluation of an SFT run: does the voice get better, measured by independent judges.

At step 0 (the base model with the speakers' vectors at their slots), every ``log.eval_every_steps`` and
at the end, every trained speaker speaks ``eval.clips_per_speaker`` held-out sentences (the eval split's
transcripts of that speaker first, then ``eval.sentences``) and, per ``eval.emotion_tags`` entry, the first
of them again with that tag's instruction. Each clip is sampled with the same seed at every step, with the
training RNG set aside, so steps compare and a resumed run trains exactly as an uninterrupted one.

The offline judges (``evaluation/judges``: resemblyzer speaker similarity against that speaker's own
recordings, DistillMOS, silero-vad timing, ASR when asked) score the clips. Logged per eval, to the
trackers and ``metrics.jsonl``::

    judge/<metric>            mean over clips (e.g. judge/spk_sim, judge/mos_distill, judge/stopped_by_eos)
    judge/<metric>_delta      minus the same mean at step 0
    judge/spk_sim/<speaker>   per speaker
    judge/composite           evaluation/composite.py: what checkpoint.select=best ranks by

The clips are written to ``samples/step-NNNNNNNN/`` with ``scores.jsonl`` (one row per clip), and with
``log.log_samples`` an audio table goes to W&B (``wandb.Table``) or TensorBoard (audio + a markdown table).
Only the main process synthesizes and judges; :meth:`JudgedEval.decide` turns the numbers into the
decisions every process must share (a new best to export, the speaker-similarity guard).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from qwen_tts_ext.evaluation.composite import DEFAULT_WEIGHTS, composite, means, terms
from qwen_tts_ext.synthesis.bounds import frame_cap
from qwen_tts_ext.train.config import SFTConfig
from qwen_tts_ext.train.sampling import mel_image, synthesize_with_vector

REF_SECONDS = 10.0  # reference audio per speaker for speaker similarity (resemblyzer is steadiest from ~10 s)


@dataclass(frozen=True)
class EvalPrompt:
    id: str  # file stem: <speaker>-<n>[-<tag>]
    speaker: str
    text: str
    language: str
    tag: str = ""  # emotion tag ("" = none)
    instruct: str = ""  # the tag's instruction


def eval_prompts(rows: list[dict], speakers: list[str], cfg: SFTConfig) -> list[EvalPrompt]:
    """The clips every eval synthesizes: per speaker, its held-out ``rows`` (``text``, ``speaker``,
    ``language``) first, then ``eval.sentences``, up to ``eval.clips_per_speaker``; then one clip per
    emotion tag (the speaker's first sentence, with the tag's instruction from configs/emotions.yaml)."""
    from qwen_tts_ext.synthesis.emotions import load_emotions

    ec, emotions = cfg.eval, load_emotions() if cfg.eval.emotion_tags else None
    out = []
    for name in speakers:
        own = [r for r in rows if str(r["speaker"]).lower() == name]
        language = _language(own) if cfg.data.use_language else "auto"
        picks = [(r["text"], _language([r]) if cfg.data.use_language else "auto") for r in own]
        picks += [(s, language) for s in ec.sentences]
        for i, (text, lang) in enumerate(picks[: ec.clips_per_speaker]):
            out.append(EvalPrompt(f"{name}-{i}", name, text, lang))
        first_text, first_lang = picks[0]
        for tag in ec.emotion_tags:
            slug = "".join(ch for ch in tag.lower() if ch.isalnum()) or "tag"
            out.append(EvalPrompt(f"{name}-{slug}", name, first_text, first_lang, tag, emotions.resolve(tag).text))
    return out


def _language(rows: list[dict]) -> str:
    langs = [str(r.get("language") or "").strip().lower() for r in rows]
    langs = [x for x in langs if x and x != "auto"]
    return max(set(langs), key=langs.count) if langs else "auto"


def reference_audio(paths: list[str], seconds: float = REF_SECONDS) -> tuple[np.ndarray, int] | None:
    """Up to ``seconds`` of a speaker's recordings (the readable ``paths`` in order, joined), or None."""
    from qwen_tts_ext.evaluation.judges import resample

    parts, total = [], 0.0
    for p in dict.fromkeys(paths):
        if total >= seconds or not p or not Path(p).is_file():
            continue
        try:
            audio, sr = sf.read(p, dtype="float32", always_2d=False)
        except Exception:  # noqa: BLE001 - an unreadable reference only costs that clip's similarity
            continue
        audio = resample(audio, int(sr), 16000)
        parts.append(audio)
        total += len(audio) / 16000
    return (np.concatenate(parts), 16000) if parts else None


@dataclass
class EvalState:
    """What the judged eval remembers across evals (saved with every checkpoint through ``TrainerState``)."""

    base: dict  # step 0's judge/* means (the reference for deltas and the guard)
    best_step: int = -1
    best_composite: float | None = None


class JudgedEval:
    """Build once per run (every process); call on every process, it works on the main one."""

    def __init__(self, cfg: SFTConfig, rows: list[dict], speaker_audio: dict[str, list[str]], table, out_dir: Path,
                 main: bool, say=print, sharded: bool = False):
        """``rows``: the held-out rows (text, speaker, language); ``speaker_audio``: per speaker, paths of its
        recordings (reference clips first); ``table``: the run's ``SpeakerTable`` (names, vectors).
        ``sharded`` (FSDP): the main process alone cannot generate with weights split across processes, so
        the judged eval is off (one line says so); judge the export with ``qwen-tts-ext score`` instead."""
        self.cfg, self.out_dir, self.main, self.say = cfg, out_dir, main, say
        self.off = ""
        if sharded and (cfg.eval.judges or cfg.log.log_samples):
            self.off = ("the judged eval is off under FSDP (generation needs the whole model on one process); "
                        "checkpoint.select and eval.guard fall back to the last step")
            say(self.off)
            cfg = self.cfg = _without_judges(cfg)
        speakers = list(table.names)
        self.vectors = dict(zip(speakers, table.vectors))
        self.prompts = eval_prompts(rows, speakers, cfg)
        self.speaker_audio = speaker_audio
        self.judges, self.measured = [], set()
        self.weights = dict(cfg.eval.composite or DEFAULT_WEIGHTS)
        self._refs: dict[str, Any] = {}
        if main and cfg.eval.judges:
            from qwen_tts_ext.evaluation.judges import load_judges

            options = {"threads": cfg.eval.threads, **({"asr": cfg.eval.asr} if cfg.eval.asr else {})}
            self.judges, notes = load_judges(cfg.eval.judges, **options)
            for note in notes:
                say(f"judged eval: {note}")
            self.measured = {m.name for j in self.judges for m in j.metrics}
            if cfg.eval.guard and "spk_sim" not in self.measured:
                from qwen_tts_ext.errors import UserError

                raise UserError("eval.guard watches spk_sim, but the speaker judge could not load (see above)")
            say(f"judged eval: {len(self.prompts)} clips per eval ({len(speakers)} speaker(s)); judges: "
                f"{', '.join(j.name for j in self.judges) or 'none'}; composite = "
                + " + ".join(f"{w:g} x {m}" for m, w in terms(self.weights, self.measured).items()))

    @property
    def active(self) -> bool:
        return bool(self.cfg.eval.judges) or self.cfg.log.log_samples

    @torch.no_grad()
    def __call__(self, model, processor, step: int, base: dict | None) -> tuple[dict, list[dict], list]:
        """Synthesize and judge (main process). Returns ``(values, rows, audio)``: the ``judge/*`` values to
        log (deltas against ``base`` when given), one row per clip, and the clips' ``(wav, sr)``."""
        from qwen_tts_ext.evaluation.judges import Clip, score_clips

        was_training = model.training
        model.eval()
        step_dir = self.out_dir / "samples" / f"step-{step:08d}"
        step_dir.mkdir(parents=True, exist_ok=True)
        clips, audio, rows = [], [], []
        devices = [model.device] if model.device.type == "cuda" else []
        for i, p in enumerate(self.prompts):
            cap = self.cfg.eval.max_frames or frame_cap(p.text)
            with torch.random.fork_rng(devices=devices):  # the training RNG is left as it was
                torch.manual_seed(self.cfg.eval.seed + i)
                wav, sr, stopped = synthesize_with_vector(model, processor, p.text, self.vectors[p.speaker], language=p.language,
                                                          max_frames=cap, instruct=p.instruct or None)
            sf.write(step_dir / f"{p.id}.wav", wav, sr)
            ref = self._ref(p.speaker)
            clips.append(Clip(wav, sr, id=p.id, text=p.text, language=None if p.language == "auto" else p.language,
                              ref=ref[0] if ref else None, ref_sample_rate=ref[1] if ref else None,
                              meta={"stopped_by_eos": stopped, "frame_cap": cap}))
            audio.append((wav, sr))
            rows.append({"id": p.id, "speaker": p.speaker, "tag": p.tag, "text": p.text, "stopped_by_eos": float(stopped)})
        model.train(was_training)
        for row, got in zip(rows, score_clips(clips, self.judges) if self.judges else [{} for _ in rows]):
            row.update({k: v for k, v in got.items() if k != "id"})
        with open(step_dir / "scores.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        return self.values(rows, base), rows, audio

    def values(self, rows: list[dict], base: dict | None) -> dict:
        """``judge/<metric>`` means, per-speaker similarity, the composite and deltas against ``base``."""
        measured = sorted(self.measured | {"stopped_by_eos"})
        avg = means(rows, measured)
        out = {f"judge/{k}": v for k, v in avg.items() if v is not None}
        if "spk_sim" in self.measured:
            for name in dict.fromkeys(r["speaker"] for r in rows):
                got = means([r for r in rows if r["speaker"] == name], ["spk_sim"])["spk_sim"]
                if got is not None:
                    out[f"judge/spk_sim/{name}"] = got
        score = composite(avg, self.weights, self.measured | {"stopped_by_eos"}) if self.judges else None
        if score is not None:
            out["judge/composite"] = score
        elif self.judges:
            missing = [m for m in terms(self.weights, self.measured | {"stopped_by_eos"}) if avg.get(m) is None]
            self.say(f"judged eval: no composite at this eval: no clip has a value for {', '.join(missing)} "
                     "(e.g. truncated needs speech that silero-vad detects); set eval.composite to leave it out")
        for key, value in list(out.items()):
            if base and key in base and "/" not in key[len("judge/"):]:
                out[f"{key}_delta"] = value - base[key]
        return out

    def decide(self, values: dict, state: EvalState, step: int) -> tuple[bool, str]:
        """After an eval at ``step`` > 0: ``(new_best, guard_reason)``. ``new_best``: its composite beats every
        earlier eval's (``checkpoint.select=best`` exports it); ``guard_reason``: why the guard stops the
        run ("" = it does not)."""
        score = values.get("judge/composite")
        new_best = score is not None and (state.best_composite is None or score > state.best_composite)
        if new_best:
            state.best_step, state.best_composite = step, score
        reason = ""
        ec = self.cfg.eval
        now, then = values.get("judge/spk_sim"), state.base.get("judge/spk_sim")
        if ec.guard and now is not None and then is not None and now < then - ec.guard_margin:
            reason = (f"speaker similarity {now:.3f} fell below the base model's {then:.3f} by more than "
                      f"eval.guard_margin={ec.guard_margin:g} (step {step})")
        return new_best, reason

    def log_audio(self, accelerator, trackers: list[str], step: int, rows: list[dict], audio: list) -> None:
        """The clips as an audio table (W&B) or audio + a markdown table (TensorBoard), and one mel image per speaker."""
        cols = ["id", "speaker", "tag", "text"] + sorted({k for r in rows for k in r} - {"id", "speaker", "tag", "text"})
        for name in trackers:
            tracker = accelerator.get_tracker(name, unwrap=True)
            if name == "wandb":
                import wandb  # only with log.tracker=wandb

                data = [[*(_cell(r.get(c)) for c in cols), wandb.Audio(w, sample_rate=sr, caption=r["id"])]
                        for r, (w, sr) in zip(rows, audio)]
                tracker.log({"samples/table": wandb.Table(columns=cols + ["audio"], data=data)}, step=step)
            elif name == "tensorboard":
                for r, (w, sr) in zip(rows, audio):
                    tracker.add_audio(f"samples/{r['id']}", torch.from_numpy(np.asarray(w, dtype=np.float32)), step,
                                      sample_rate=sr)
                lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
                lines += ["| " + " | ".join(str(_cell(r.get(c))) for c in cols) + " |" for r in rows]
                tracker.add_text("samples/table", "\n".join(lines), step)
            seen = set()
            for r, (w, sr) in zip(rows, audio):
                if r["speaker"] in seen:
                    continue
                seen.add(r["speaker"])
                img = mel_image(w, sr)
                if name == "wandb":
                    tracker.log({f"samples/{r['speaker']}_mel": wandb.Image(img)}, step=step)
                elif name == "tensorboard":
                    tracker.add_image(f"samples/{r['speaker']}_mel", img, step, dataformats="HWC")

    def _ref(self, speaker: str):
        if speaker not in self._refs:
            self._refs[speaker] = reference_audio(self.speaker_audio.get(speaker, [])) if "spk_sim" in self.measured else None
            if self._refs[speaker] is None and "spk_sim" in self.measured:
                self.say(f"judged eval: no readable recording of {speaker!r} (audio_path/ref_audio in the prepared "
                         "data): its speaker similarity is empty")
        return self._refs[speaker]


def _without_judges(cfg: SFTConfig) -> SFTConfig:
    import copy

    cfg = copy.deepcopy(cfg)
    cfg.eval.judges, cfg.eval.guard, cfg.log.log_samples = [], False, False
    return cfg


def _cell(value):
    if isinstance(value, float):
        return None if not math.isfinite(value) else round(value, 4)
    return value
