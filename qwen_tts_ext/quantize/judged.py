"""The quality gate's judges on a few sentences spoken by the float and by the INT4 model (same seeds).

Each sentence is synthesized twice through the suite's engine (``synthesis.engine.Synthesizer``, the
frame cap of ``synthesize``), once with the float projections and once with the INT4 ones, with the
same seed. The offline judges (``evaluation.judges``) score both; the float rendering is the speaker
reference of both (spk_sim of the float clip to itself is 1, so the int4 value says how far the voice
moved). Only a checkpoint with a speaker (custom_voice) can speak; a Base checkpoint gets a note.
"""

from __future__ import annotations

import math
from typing import Callable

DEFAULT_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "We will meet again when the morning comes.",
)


def _mean(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return sum(vals) / len(vals) if vals else None


def judge_renderings(tts, speaker: str, swap: Callable[[str], None], names: list[str], *, language: str = "auto",
                     sentences=DEFAULT_SENTENCES, seed: int = 0, log=print) -> dict:
    """``swap("float")`` / ``swap("int4")`` put the model's projections in place; returns the judged summary."""
    import torch

    from qwen_tts_ext.evaluation.judges import Clip, load_judges, metric_info, score_clips
    from qwen_tts_ext.synthesis.engine import SynthesisOptions, Synthesizer

    speakers = sorted(str(s).lower() for s in (tts.model.get_supported_speakers() or []))
    if not speakers:
        return {"skipped": "the checkpoint has no speaker (a Base model): nothing to synthesize"}
    speaker = speaker.lower() if speaker else speakers[0]
    if speaker not in speakers:
        return {"skipped": f"speaker {speaker!r} is not in the checkpoint ({', '.join(speakers)})"}
    judges, notes = load_judges(names)
    if not judges:
        return {"skipped": "no judge could be loaded", "notes": notes}
    synth = Synthesizer(tts)
    voice = synth.voice(speaker=speaker)
    opts = SynthesisOptions(language=language, seed=seed)
    audio: dict[str, list] = {}
    for label in ("float", "int4"):
        swap(label)
        with torch.no_grad():
            audio[label] = [synth.synthesize(s, voice, opts).segments[0] for s in sentences]
    swap("float")
    rows = {}
    for label in ("float", "int4"):
        clips = [Clip(seg.audio, seg.sample_rate, id=f"{label}-{i}", text=s, language=language,
                      ref=audio["float"][i].audio, ref_sample_rate=audio["float"][i].sample_rate,
                      meta={"stopped_by_eos": seg.stopped_by_eos, "frames": seg.frames, "frame_cap": seg.frame_cap})
                 for i, (s, seg) in enumerate(zip(sentences, audio[label]))]
        rows[label] = score_clips(clips, judges)
    info = metric_info()
    metrics = sorted({k for r in rows["float"] + rows["int4"] for k in r if k != "id"})
    table = {m: {"float": _mean(rows["float"], m), "int4": _mean(rows["int4"], m),
                 "better": getattr(info.get(m), "direction", None)} for m in metrics}
    log(f"judged {len(sentences)} sentences as {speaker}: " + ", ".join(
        f"{m} {v['float']:.3g}->{v['int4']:.3g}" for m, v in table.items()
        if v["float"] is not None and v["int4"] is not None))
    return {"speaker": speaker, "sentences": list(sentences), "seed": seed, "metrics": table, "notes": notes,
            "rows": rows, "frames": {k: [seg.frames for seg in v] for k, v in audio.items()}}
