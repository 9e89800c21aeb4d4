"""Write synthesis results: a 24 kHz WAV plus a JSON sidecar, atomically (never half-written).

Both files follow the suite's output policy (``qwen_tts_ext.outputs``): ``check_synthesis_output``
before any work (a ``.wav`` path, not under a file, an existing pair replaced only with ``overwrite``
and only when its sidecar says this suite wrote it), then ``save_synthesis`` writes both beside their
destinations and renames them into place together.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from qwen_tts_ext.outputs import check_output_file, output_files

WRITTEN_BY = "qwen-tts-ext"  # the sidecar's ``written_by`` starts with this: the pair is ours to replace


def timestamped_path(out_dir: str | Path, text: str = "", suffix: str = ".wav") -> Path:
    """``outputs/20260121-153012-dont-wake-him.wav`` (a counter is appended if the name exists)."""
    out_dir = Path(out_dir)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    words = re.sub(r"\[[^\]]*\]", " ", text or "")
    slug = "-".join(re.findall(r"[a-z0-9]+", words.lower())[:5])[:40] or "speech"
    path = out_dir / f"{stamp}-{slug}{suffix}"
    n = 1
    while path.exists() or sidecar_path(path).exists():
        n += 1
        path = out_dir / f"{stamp}-{slug}-{n}{suffix}"
    return path


def sidecar_path(wav_path: str | Path) -> Path:
    return Path(wav_path).with_suffix(".json")


def _sidecar(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_own_sidecar(path: str | Path) -> bool:
    """True when ``path`` is a sidecar this suite wrote (``written_by``, or the shape of one written before
    that field existed: the WAV's name under ``audio`` plus ``segments`` and ``sample_rate``)."""
    data = _sidecar(Path(path))
    if data is None:
        return False
    if str(data.get("written_by", "")).startswith(WRITTEN_BY):
        return True
    return (data.get("audio") == Path(path).with_suffix(".wav").name and isinstance(data.get("segments"), list)
            and "sample_rate" in data)


def is_own_wav(path: str | Path) -> bool:
    """True when the WAV ``path`` has a sidecar saying this suite wrote the pair."""
    return is_own_sidecar(sidecar_path(path))


def check_synthesis_output(path: str | Path, *, overwrite: bool = False, flag: str = "--out") -> tuple[Path, Path]:
    """Check a WAV path and its sidecar before any work; return both as absolute paths.

    Refused: a name not ending in .wav, a folder, a path under a file, an unwritable folder, an existing
    WAV or sidecar that this suite did not write (even with ``overwrite``), and our own previous output
    without ``overwrite``.
    """
    wav = check_output_file(path, overwrite=overwrite, suffix=".wav", owned=is_own_wav, flag=flag)
    side = check_output_file(sidecar_path(wav), overwrite=overwrite, suffix=".json", owned=is_own_sidecar,
                             flag=f"{flag} sidecar")
    return wav, side


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int) -> Path:
    """16-bit PCM WAV (clipped to [-1, 1])."""
    import soundfile as sf

    path = Path(path)
    data = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    _atomic_write(path, lambda tmp: sf.write(tmp, data, int(sample_rate), subtype="PCM_16", format="WAV"))
    return path


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    path = Path(path)

    def _w(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False, default=_jsonable)
            f.write("\n")

    _atomic_write(path, _w)
    return path


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and obj != obj:
        return None
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def save_synthesis(result, wav_path: str | Path, meta: dict[str, Any], *, overwrite: bool = False,
                   command: str = "synthesize") -> tuple[Path, Path]:
    """Write ``result`` (a ``SynthesisResult``) and its sidecar; returns (wav, json) paths.

    The sidecar holds ``meta`` (text, model, voice, alpha, seed, options ...) plus the segments
    (tag, instruction, frames, cap, stopped_by_eos, timings), the warnings and ``written_by``. The
    destination is checked again (``check_synthesis_output``), both files are written beside it and
    renamed into place together.
    """
    wav_path, side_path = check_synthesis_output(wav_path, overwrite=overwrite)
    data = {"written_by": f"{WRITTEN_BY} {command}", **meta}
    data.update(
        audio=wav_path.name,
        sample_rate=result.sample_rate,
        seconds=round(result.seconds, 3),
        generation_seconds=round(sum(s.gen_seconds for s in result.segments), 3),
        all_stopped_by_eos=not result.cap_hits,
        segments=[_round(s.metadata()) for s in result.segments],
        warnings=list(result.warnings),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    import soundfile as sf

    audio = np.clip(np.asarray(result.audio, dtype=np.float32), -1.0, 1.0)
    with output_files(wav_path, side_path) as (tmp_wav, tmp_side):
        sf.write(str(tmp_wav), audio, int(result.sample_rate), subtype="PCM_16", format="WAV")
        with open(tmp_side, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False, default=_jsonable)
            f.write("\n")
    return wav_path, side_path


def _round(d: dict[str, Any]) -> dict[str, Any]:
    """Floats to 4 decimals; NaN/inf (e.g. the RTF of an empty segment) to null (valid JSON)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, float):
            v = round(v, 4) if math.isfinite(v) else None
        out[k] = v
    return out
