"""Render takes with a VoiceDesign checkpoint: sentences x seeds, the description as the instruction.

Each take goes through the stock ``Qwen3TTSModel.generate_voice_design(text, instruct=description)``
with its own seed and a frame cap from its text (``synthesis.bounds.frame_cap``: a runaway costs
seconds, not minutes); a take that fills its cap did not stop by EOS and says so in its record.
Takes are written as 24 kHz WAVs under ``takes/`` with one JSON record each in ``takes.jsonl``:
id, audio (relative to the output folder; an extra take's own absolute path), text, language, seed,
frames, frame_cap, stopped_by_eos, source ("designer" | "extra").

``extra_takes`` (a JSONL of audio,text) adds recordings to be judged beside the rendered takes; they
pass the same filter. The end-to-end test plants off-voice takes this way (espeak-ng clips of
another voice), because a tiny random designer need not change its voice with the description.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from qwen_tts_ext.constants import SAMPLE_RATE, SAMPLES_PER_FRAME
from qwen_tts_ext.errors import UserError

_DTYPES = ("float32", "bfloat16", "float16")


def read_sentences(path: Path) -> list[str]:
    """One sentence a line; blank lines and lines starting with '#' are skipped."""
    if not path.is_file():
        raise UserError(f"sentences file {path} does not exist (render.sentences, or render.language for a shipped "
                        "list in data/design_sentences/)")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    out = [ln for ln in lines if ln and not ln.startswith("#")]
    if not out:
        raise UserError(f"sentences file {path} has no sentences (one a line; '#' starts a comment)")
    return out


def split_sentences(sentences: list[str], num: int, report: int) -> tuple[list[str], list[str], bool]:
    """``(training sentences, report sentences, overlap)``: the report takes the last ``report`` lines; the
    corpus the first ``num`` of the others (0: all). When the list is too short for both, the report reuses
    training sentences and ``overlap`` says so."""
    report_part = sentences[-report:] if report else []
    rest = sentences[: len(sentences) - len(report_part)]
    overlap = not rest
    pool = rest or sentences
    return (pool[:num] if num else pool), report_part, overlap


def read_extra_takes(path: str) -> list[dict]:
    """The rows of an ``extra_takes`` JSONL (audio relative to the file's folder, text required)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"render.extra_takes {file} does not exist (a JSONL file of audio,text rows)")
    rows, problems = [], []
    for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"render.extra_takes {file} line {n}: not JSON ({exc.msg})")
            continue
        audio = Path(str(row.get("audio", ""))).expanduser()
        audio = audio if audio.is_absolute() else file.parent / audio
        if not row.get("audio") or not audio.is_file():
            problems.append(f"render.extra_takes {file} line {n}: audio {row.get('audio')!r} not found")
        elif not str(row.get("text", "")).strip():
            problems.append(f"render.extra_takes {file} line {n}: no text")
        else:
            rows.append({"audio": str(audio.resolve()), "text": str(row["text"]).strip()})
    UserError.collect(problems)
    return rows


def load_designer(path: str | Path, device: str = "cpu", dtype: str = "float32") -> Any:
    """The stock ``qwen_tts.Qwen3TTSModel`` of a VoiceDesign folder (identified from config.json first)."""
    import torch
    from qwen_tts import Qwen3TTSModel

    from qwen_tts_ext.checkpoint_io import require_tts_checkpoint

    folder = require_tts_checkpoint(path, what="--designer", types=("voice_design",), llm_flag=None)
    tts = Qwen3TTSModel.from_pretrained(str(folder), device_map=device, dtype=getattr(torch, dtype))
    tts.model.eval()
    return tts


@dataclass
class Rendered:
    audio: np.ndarray  # mono float32 at 24 kHz
    frames: int
    frame_cap: int
    stopped_by_eos: bool


def speak(tts: Any, text: str, instruct: str, language: str, seed: int, cap: int, sampling: dict) -> Rendered:
    """One seeded, capped ``generate_voice_design`` call."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    # N new tokens decode to at most N-1 frames (as synthesis): ask for cap + 1, a full cap is no EOS
    wavs, sr = tts.generate_voice_design(text=text, instruct=instruct, language=language, max_new_tokens=cap + 1,
                                         **sampling)
    audio = np.asarray(wavs[0], dtype=np.float32).reshape(-1)
    if sr != SAMPLE_RATE:
        import soxr

        audio = soxr.resample(audio, sr, SAMPLE_RATE).astype(np.float32)
    frames = int(round(len(audio) / SAMPLES_PER_FRAME))
    return Rendered(audio, frames, cap, frames < cap)


def sampling_kwargs(render_cfg) -> dict:
    return {k: v for k, v in (("temperature", render_cfg.temperature), ("top_k", render_cfg.top_k),
                              ("top_p", render_cfg.top_p)) if v is not None}


def cap_for(text: str, render_cfg) -> int:
    from qwen_tts_ext.synthesis.bounds import frame_cap

    return frame_cap(text, render_cfg.cap_margin, render_cfg.cap_slack_seconds, render_cfg.max_segment_seconds)


def render_takes(tts: Any, sentences: list[str], description: str, render_cfg, out_dir: Path,
                 tick: Callable[[], Any] | None = None) -> list[dict]:
    """Render ``render_cfg.takes`` seeds of every sentence into ``out_dir`` (WAVs); return their records.

    A take whose record (``<id>.json``, written after its WAV) is already in ``out_dir`` for the same text and
    seed is reused, not rendered again: an interrupted run resumes. The caller keys ``out_dir`` to everything
    else that shapes a take (designer, description, language, sampling, caps, dtype).
    """
    import soundfile as sf

    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    sampling = sampling_kwargs(render_cfg)
    for i, text in enumerate(sentences):
        cap = cap_for(text, render_cfg)
        for k in range(render_cfg.takes):
            seed = render_cfg.seed + 1000 * i + k
            take_id = f"s{i:03d}-t{k}"
            path, rec_path = out_dir / f"{take_id}.wav", out_dir / f"{take_id}.json"
            done = json.loads(rec_path.read_text(encoding="utf-8")) if rec_path.is_file() and path.is_file() else None
            if done is not None and done.get("text") == text and done.get("seed") == seed:
                records.append(done)
            else:
                got = speak(tts, text, description, render_cfg.language, seed, cap, sampling)
                part = out_dir / f".{take_id}.part.wav"
                sf.write(str(part), got.audio, SAMPLE_RATE, subtype="PCM_16")
                os.replace(part, path)
                rec = {"id": take_id, "audio": f"{out_dir.name}/{path.name}", "text": text,
                       "language": render_cfg.language, "sentence": i, "seed": seed, "frames": got.frames,
                       "frame_cap": got.frame_cap, "stopped_by_eos": got.stopped_by_eos, "source": "designer"}
                rec_path.write_text(json.dumps(rec, ensure_ascii=False), encoding="utf-8")  # last: the take is done
                records.append(rec)
            if tick is not None:
                tick()
    return records


def extra_take_records(rows: list[dict], language: str) -> list[dict]:
    return [{"id": f"x{n:03d}", "audio": r["audio"], "text": r["text"], "language": language, "sentence": None,
             "seed": None, "frames": None, "frame_cap": None, "stopped_by_eos": None, "source": "extra"}
            for n, r in enumerate(rows)]
