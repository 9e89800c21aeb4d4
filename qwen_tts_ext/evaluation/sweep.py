"""The alpha sweep: blend in memory, synthesize test sentences and a tagged script, measure.

For each alpha (always including the baseline 0) the loaded model is blended from its original
weights (``synthesis.blending.RuntimeBlend`` -> the blend module's ``apply_blend_to_model``), then

- every test sentence is synthesized (same seed per sentence across alphas, so the comparison is
  paired) with the usual text-derived frame cap: *stop rate* = share that ended by EOS;
- the speaker encoder embeds every output: *similarity* = mean cosine to the reference voice;
- a tagged script is synthesized: *identity drift* = 1 - mean pairwise cosine of its segments;
- *RTF* = generation seconds / audio seconds; *CER* when an ASR transcriber is given;
- the offline judges (``evaluation.judges``, when given) score every test sentence: the independent
  speaker similarity ``spk_sim`` to the reference clip, MOS, speaking rate, truncation, WER/CER...;
  each alpha's row holds their means over the sentences (None where no sentence could be scored).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qwen_tts_ext.evaluation.config import DEFAULT_ALPHAS, DEFAULT_SCRIPT, DEFAULT_SENTENCES  # noqa: F401
from qwen_tts_ext.evaluation.metrics import cer as char_error_rate
from qwen_tts_ext.evaluation.metrics import cosine, identity_drift

log = logging.getLogger(__name__)

MIN_EMBED_SECONDS = 0.3


@dataclass
class AlphaRow:
    alpha: float
    n: int
    stop_rate: float
    cap_hits: int
    mean_seconds: float
    duration_ratio: float | None
    similarity: float | None
    similarity_min: float | None
    drift: float | None
    rtf: float
    cer: float | None = None
    judged: dict[str, float | None] = field(default_factory=dict)  # judge metric -> mean over the sentences
    per_sentence: list[dict[str, Any]] = field(default_factory=list)
    script_segments: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Flat: the judges' means are columns beside the sweep's own (``cer`` from the asr judge when it ran)."""
        out = {k: v for k, v in self.__dict__.items() if k not in ("judged", "per_sentence", "script_segments")}
        out.update(self.judged)
        out.update(per_sentence=self.per_sentence, script_segments=self.script_segments)
        return out


# A judge metric whose name is already a sweep column with another meaning gets another name in the rows.
RENAMED = {"duration_ratio": "duration_ratio_text"}


def judge_column(metric: str) -> str:
    return RENAMED.get(metric, metric)


def metric_of(column: str) -> str:
    return next((m for m, c in RENAMED.items() if c == column), column)


class Embedder:
    """x-vectors of generated audio (24 kHz mono) via ``prep.speakers.SpeakerEncoder``."""

    def __init__(self, encoder: Any):
        self.encoder = encoder

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> "Embedder":
        from qwen_tts_ext.prep.speakers import SpeakerEncoder

        return cls(SpeakerEncoder.from_checkpoint(str(path)))

    def __call__(self, audio: np.ndarray, sample_rate: int) -> np.ndarray | None:
        if len(audio) < MIN_EMBED_SECONDS * sample_rate:
            return None
        if sample_rate != 24000:
            import soxr

            audio = soxr.resample(audio, sample_rate, 24000)
        return np.asarray(self.encoder.embed(np.asarray(audio, dtype=np.float32)), dtype=np.float32)


def run_sweep(
    synth,
    voice,
    options,
    *,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    llm: str | None = None,
    sentences: Sequence[str] = DEFAULT_SENTENCES,
    script: str | None = DEFAULT_SCRIPT,
    embedder: Callable[[np.ndarray, int], np.ndarray | None] | None = None,
    reference: np.ndarray | None = None,
    transcribe: Callable[[np.ndarray, int], str] | None = None,
    audio_dir: str | Path | None = None,
    progress: bool = True,
    judges: Sequence[Any] = (),
    ref_audio: tuple[np.ndarray, int] | None = None,
    language: str | None = None,
) -> tuple[list[AlphaRow], str]:
    """Run the sweep; returns (rows sorted by alpha, description of the similarity reference).

    ``reference``: the voice's x-vector to compare against. If None and an ``embedder`` is given,
    the mean embedding of the alpha-0 outputs is used (similarity then measures "same voice as
    without blending").

    ``judges``: loaded offline judges (``judges.load_judges``) scoring every test sentence, with
    ``ref_audio`` ``(audio, sample_rate)`` as the speaker reference (``spk_sim``), ``language`` for the
    asr judge (None: auto) and the segment's stop flag in ``Clip.meta``. When the asr judge runs, its
    ``cer`` replaces ``transcribe``'s.
    """
    from dataclasses import replace

    from tqdm.auto import tqdm

    from qwen_tts_ext.synthesis.output import write_wav

    alphas = sorted({0.0, *(float(a) for a in alphas)})
    judges = list(judges or ())
    judges_asr = any(j.name == "asr" for j in judges)
    judge_metrics = [judge_column(m.name) for j in judges for m in j.metrics]
    if any(a > 0 for a in alphas) and not llm:
        from qwen_tts_ext.errors import UserError

        raise UserError("alphas above 0 need --llm: the Qwen3 LLM checkpoint whose FFNs are blended in")
    if not sentences:
        from qwen_tts_ext.errors import UserError

        raise UserError("no test sentences")
    ref_desc = "given reference voice" if reference is not None else ("alpha-0 outputs" if embedder else "none")
    n_script = len(synth.plan(script, options)) if script else 0
    total = len(alphas) * (len(sentences) + n_script)
    raw: list[dict[str, Any]] = []
    bar = tqdm(total=total, desc="alpha sweep", unit="seg", disable=not progress)
    try:
        for alpha in alphas:
            bar.set_postfix(alpha=alpha)
            synth.blend.set(alpha, llm if alpha > 0 else None)
            sent_rows, embs, clips = [], [], []
            gen_s = audio_s = 0.0
            for i, text in enumerate(sentences):
                res = synth.synthesize(text, voice, replace(options, seed=options.seed + 1000 * i))
                seg_stop = all(s.stopped_by_eos for s in res.segments)
                emb = embedder(res.audio, res.sample_rate) if embedder else None
                row = {
                    "text": text,
                    "seconds": res.seconds,
                    "frames": sum(s.frames for s in res.segments),
                    "frame_cap": sum(s.frame_cap for s in res.segments),
                    "stopped_by_eos": seg_stop,
                }
                if judges:
                    clips.append(_clip(res, text, alpha, i, seg_stop, row, ref_audio, language))
                if transcribe is not None and not judges_asr:
                    hyp = transcribe(res.audio, res.sample_rate)
                    row.update(transcript=hyp, cer=char_error_rate(text, hyp))
                if audio_dir is not None:
                    write_wav(Path(audio_dir) / f"alpha{alpha:g}_s{i:02d}.wav", res.audio, res.sample_rate)
                gen_s += sum(s.gen_seconds for s in res.segments)
                audio_s += res.seconds
                sent_rows.append(row)
                embs.append(emb)
                bar.update(len(res.segments))
            if clips:
                from qwen_tts_ext.evaluation.judges import score_clips

                for row, got in zip(sent_rows, score_clips(clips, judges)):
                    got.pop("id", None)
                    got.pop("stopped_by_eos", None)  # the row's own flag says the same
                    row.update({judge_column(k): v for k, v in got.items()})
            script_rows, script_embs = [], []
            if script:
                res = synth.synthesize(script, voice, options)
                for s in res.segments:
                    e = embedder(s.audio, s.sample_rate) if embedder else None
                    script_embs.append(e)
                    script_rows.append({"tag": s.tag, "seconds": s.seconds, "stopped_by_eos": s.stopped_by_eos})
                    gen_s += s.gen_seconds
                    audio_s += s.seconds
                if audio_dir is not None:
                    write_wav(Path(audio_dir) / f"alpha{alpha:g}_script.wav", res.audio, res.sample_rate)
                bar.update(len(res.segments))
            raw.append(dict(alpha=alpha, sentences=sent_rows, embs=embs, script=script_rows, script_embs=script_embs,
                            gen_s=gen_s, audio_s=audio_s))
    finally:
        synth.blend.restore()
        bar.close()

    if reference is None and embedder is not None:
        base_embs = [e for e in raw[0]["embs"] if e is not None]
        reference = np.mean(base_embs, axis=0) if base_embs else None
        if reference is None:
            ref_desc = "none (alpha-0 outputs too short to embed)"

    rows: list[AlphaRow] = []
    base_mean = None
    for r in raw:
        secs = [s["seconds"] for s in r["sentences"]]
        mean_s = float(np.mean(secs))
        if base_mean is None:
            base_mean = mean_s
        sims = [cosine(e, reference) for e in r["embs"] if e is not None] if reference is not None else []
        for s, e in zip(r["sentences"], r["embs"]):
            if reference is not None and e is not None:
                s["similarity"] = cosine(e, reference)
        cers = [s["cer"] for s in r["sentences"] if s.get("cer") is not None]
        judged = {}
        for m in judge_metrics:
            if m == "stopped_by_eos":
                vals = [float(s["stopped_by_eos"]) for s in r["sentences"]]
            else:
                vals = [s[m] for s in r["sentences"] if s.get(m) is not None]
            judged[m] = float(np.mean(vals)) if vals else None
        stops = [s["stopped_by_eos"] for s in r["sentences"]]
        rows.append(
            AlphaRow(
                alpha=r["alpha"],
                n=len(stops),
                stop_rate=float(np.mean(stops)),
                cap_hits=int(len(stops) - sum(stops)),
                mean_seconds=mean_s,
                duration_ratio=mean_s / base_mean if base_mean else None,
                similarity=float(np.mean(sims)) if sims else None,
                similarity_min=float(np.min(sims)) if sims else None,
                drift=identity_drift(r["script_embs"]) if embedder else None,
                rtf=r["gen_s"] / r["audio_s"] if r["audio_s"] > 0 else float("inf"),
                cer=float(np.mean(cers)) if cers else None,
                judged={m: v for m, v in judged.items() if m != "cer"},
                per_sentence=r["sentences"],
                script_segments=r["script"],
            )
        )
    return rows, ref_desc


def _clip(res, text: str, alpha: float, i: int, stopped: bool, row: dict, ref_audio, language: str | None):
    from qwen_tts_ext.evaluation.judges import Clip

    ref, ref_sr = ref_audio if ref_audio is not None else (None, None)
    return Clip(np.asarray(res.audio, dtype=np.float32), res.sample_rate, id=f"alpha{alpha:g}_s{i:02d}", text=text,
                language=language, ref=ref, ref_sample_rate=ref_sr,
                meta={"stopped_by_eos": stopped, "frames": row["frames"], "frame_cap": row["frame_cap"]})


def asr_transcriber(model_dir: str | Path | None, device: str = "cpu") -> tuple[Callable | None, str | None]:
    """A ``(audio, sr) -> text`` function from a local transformers ASR model, or (None, reason)."""
    if not model_dir:
        return None, None
    path = Path(model_dir)
    if not path.is_dir():
        return None, f"ASR model {path} not found: CER skipped"
    try:
        from transformers import pipeline

        asr = pipeline("automatic-speech-recognition", model=str(path), device=device)
    except Exception as exc:  # any loading problem: skip the metric, keep the sweep
        return None, f"ASR model {path} could not be loaded ({type(exc).__name__}: {exc}): CER skipped"
    target_sr = getattr(getattr(asr, "feature_extractor", None), "sampling_rate", 16000) or 16000

    def transcribe(audio: np.ndarray, sr: int) -> str:
        import soxr

        if len(audio) == 0:
            return ""
        x = soxr.resample(audio, sr, target_sr) if sr != target_sr else audio
        out = asr({"raw": np.asarray(x, dtype=np.float32), "sampling_rate": target_sr})
        return str(out.get("text", "")).strip()

    return transcribe, None
