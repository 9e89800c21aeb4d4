"""One candidate of the Darwin search, measured in memory: blend the resident model, speak, judge.

The model is loaded once. For each candidate its FFNs are re-blended from the original weights
(``blend.runtime.apply_blend_to_model``: the same plan and float32 arithmetic as the ``blend`` command, so
the winner written by ``darwin_blend.py`` holds the same bytes), then it speaks

- every test sentence once per seed (sentence *i*, seed *s*: synthesis seed ``synthesis.seed + s + 1000 * i``, the same
  at every candidate, so comparisons are paired as in the alpha sweep);
- the contrast sentence once per emotion tag (``[Happy] ...``, ``[Sad] ...``: same seed for each);

with the text-derived frame caps of ``synthesis.bounds``, and the offline judges score the test
sentences (``spk_sim`` against the alpha-0 rendering of the same sentence and seed: "is it still the same
voice"). :mod:`blend.search_fitness` turns the result into one number.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import replace
from typing import Any

import numpy as np


class Evaluator:
    def __init__(self, synth, voice, options, fit, judges: list, llm, language: str | None = None):
        self.synth, self.voice, self.options, self.fit = synth, voice, options, fit
        self.judges = list(judges)
        self.llm = llm  # an open StreamingCheckpoint (or a folder) of the LLM
        self.language = language
        self.baseline_audio: dict[str, np.ndarray] | None = None  # clip id -> alpha-0 audio (spk_sim reference)

    # ------------------------------------------------------------------ what is spoken

    def items(self) -> list[dict[str, Any]]:
        """Every utterance of one evaluation: id, text, seed, and whether the judges score it."""
        out = []
        base = int(self.options.seed)
        for i, text in enumerate(self.fit.sentences):
            for s in self.fit.seeds:
                out.append({"id": f"s{i:02d}_seed{s}", "text": text, "seed": base + int(s) + 1000 * i,
                            "judged": True})
        for tag in self.fit.emotions:
            out.append({"id": f"emo_{tag}", "text": f"[{tag}] {self.fit.contrast_sentence}",
                        "seed": base + int(self.fit.seeds[0]), "judged": False, "plain": self.fit.contrast_sentence})
        return out

    # ------------------------------------------------------------------ blending

    def blend(self, settings: dict[str, Any] | None) -> None:
        """Blend ``settings`` (``Layout.blend_settings``) from the original weights; None: the unblended model."""
        from qwen_tts_ext.blend.runtime import apply_blend_to_model, restore_ffn

        if settings is None:
            restore_ffn(self.synth.model)
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the >= 10% warning would repeat for every candidate
            apply_blend_to_model(self.synth.model, self.llm, 0.0, **settings)

    def restore(self) -> None:
        self.blend(None)

    # ------------------------------------------------------------------ measuring

    def measure(self, settings: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Blend, speak every item, judge; returns (metrics, audio by clip id)."""
        from qwen_tts_ext.blend.search_fitness import contrast

        t0 = time.perf_counter()
        self.blend(settings)
        t_blend = time.perf_counter() - t0
        audio: dict[str, np.ndarray] = {}
        rows = []
        gen_s = audio_s = 0.0
        sr = self.synth.sample_rate
        for item in self.items():
            res = self.synth.synthesize(item["text"], self.voice, replace(self.options, seed=item["seed"]))
            hits = sum(1 for s in res.segments if not s.stopped_by_eos)
            rows.append({"id": item["id"], "seconds": res.seconds, "segments": len(res.segments), "cap_hits": hits,
                         "frames": sum(s.frames for s in res.segments),
                         "frame_cap": sum(s.frame_cap for s in res.segments), "judged": item["judged"]})
            audio[item["id"]] = np.asarray(res.audio, dtype=np.float32)
            sr = res.sample_rate
            gen_s += sum(s.gen_seconds for s in res.segments)
            audio_s += res.seconds
        plain = [r for r in rows if r["judged"]]
        metrics: dict[str, Any] = {
            "segments": sum(r["segments"] for r in rows),
            "cap_hits": sum(r["cap_hits"] for r in rows),
            "seconds": float(np.mean([r["seconds"] for r in plain])),
            "contrast": contrast([(audio[f"emo_{t}"], sr) for t in self.fit.emotions]) if self.fit.emotions else None,
            "rtf": gen_s / audio_s if audio_s > 0 else None,
            "audio_seconds": audio_s,
            "blend_seconds": t_blend,
        }
        if self.judges:
            metrics.update(self._judge(plain, audio, sr))
        metrics["clips"] = rows
        return metrics, audio

    def _judge(self, plain: list[dict], audio: dict[str, np.ndarray], sr: int) -> dict[str, float | None]:
        from qwen_tts_ext.evaluation.judges import Clip, score_clips

        texts = {it["id"]: it["text"] for it in self.items()}
        ref = self.baseline_audio or {}
        clips = []
        for r in plain:
            cid = r["id"]
            base = ref.get(cid, audio[cid])
            clips.append(Clip(audio[cid], sr, id=cid, text=texts[cid], language=self.language, ref=base,
                              ref_sample_rate=sr, meta={"stopped_by_eos": r["cap_hits"] == 0, "frames": r["frames"],
                                                        "frame_cap": r["frame_cap"]}))
        got = score_clips(clips, self.judges)
        out: dict[str, float | None] = {}
        names = [m.name for j in self.judges for m in j.metrics]
        for m in names:
            vals = [g[m] for g in got if g.get(m) is not None]
            out[m] = float(np.mean(vals)) if vals else None
        for r, g in zip(plain, got):
            r.update({k: v for k, v in g.items() if k != "id"})
        return out
