"""Audio in: decode anything libsndfile reads, downmix, resample to 24 kHz, validate, trim.

Every problem with one clip is a :class:`Rejected` exception carrying a stable short ``code``
(machine-readable, used in ``rejects.jsonl`` and ``stats.json``) and a human ``message``. The
preparation loop catches it, records it, and carries on: one bad file never stops a run.

Reject codes produced here:

=============  =========================================================
``missing_file``  the path does not exist
``empty_audio``   0-byte file, or a valid header with no samples
``unreadable``    libsndfile cannot decode it (corrupt, unknown format)
``truncated``     a WAV whose header declares more audio than the file holds (cut copy, still being written)
``nan_or_inf``    NaN or infinite samples
``silent``        the loudest 50 ms window is below ``silence_db`` dBFS
``no_speech``     ``trim="vad"`` found no speech
``too_short``     shorter than ``min_seconds`` (before or after trimming; checked before silence)
``too_long``      longer than ``max_seconds`` (after trimming)
=============  =========================================================

Clipping is not a reject: :func:`check_audio` returns it as a warning.
"""

from __future__ import annotations

import io
import math
import os
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qwen_tts_ext.constants import SAMPLE_RATE, SAMPLES_PER_FRAME

# Peak level that resampled audio is scaled down to when it would exceed full scale.
PEAK_LIMIT = 0.999


class Rejected(Exception):
    """One clip (or row) is unusable. ``code`` is a stable short identifier, ``message`` says why."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class AudioError(Rejected):
    """The audio of a clip could not be used (raised by :func:`load_audio` and :func:`check_audio`)."""


AudioSource = str | os.PathLike | bytes | tuple


def _describe(source) -> str:
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes>"
    if isinstance(source, tuple):
        return "<array>"
    return str(source)


# A WAV ``data`` chunk size of 0, or this large or larger (0xFFFFFFFF, SoX's 0x7FFFF000, ...), is what
# streaming writers put in a header when the length is not known yet; it promises nothing.
_WAV_UNSPECIFIED_SIZE = 0x7FFF0000


def wav_truncation(f, file_size: int) -> tuple[float, float] | None:
    """``(promised_s, held_s)`` when ``f`` (a binary file object at offset 0) is a RIFF/RIFX WAV whose
    ``data`` chunk declares more audio than the file holds; ``None`` otherwise.

    libsndfile silently decodes what is there, so a cut copy would otherwise surface as ``too_short``
    (or as a clip missing its last words). Not flagged: other formats, RF64/BW64, a header too damaged
    to walk (libsndfile judges those), streaming writers' unspecified sizes (``_WAV_UNSPECIFIED_SIZE``),
    and a shortfall of at most one sample frame or 10 ms (writers that round the size or drop a pad byte).
    """
    head = f.read(12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
        return None
    endian = "<" if head[:4] == b"RIFF" else ">"
    pos, byte_rate, block_align = 12, 0, 0
    for _ in range(64):  # chunks before "data": fmt, fact, LIST, bext, JUNK, ...
        f.seek(pos)
        hdr = f.read(8)
        if len(hdr) < 8:
            return None
        cid, size = hdr[:4], struct.unpack(endian + "I", hdr[4:])[0]
        if cid == b"fmt ":
            fmt = f.read(min(size, 16))
            if len(fmt) >= 14:
                byte_rate, block_align = struct.unpack(endian + "IH", fmt[8:14])
        elif cid == b"data":
            if byte_rate <= 0 or size == 0 or size >= _WAV_UNSPECIFIED_SIZE:
                return None
            held = max(0, file_size - (pos + 8))
            if size - held <= max(block_align, byte_rate // 100):
                return None
            return size / byte_rate, held / byte_rate
        pos += 8 + size + (size & 1)  # chunks are word-aligned
    return None


def _check_truncated(source, handle) -> None:
    try:
        if isinstance(handle, io.BytesIO):
            found = wav_truncation(handle, len(source))
            handle.seek(0)
        else:
            with open(handle, "rb") as f:
                found = wav_truncation(f, os.fstat(f.fileno()).st_size)
    except (OSError, struct.error):
        return  # let libsndfile report what is wrong with it
    if found is not None:
        promised, held = found
        digits = 2 if f"{promised:.2f}" != f"{held:.2f}" else 3
        raise AudioError("truncated", f"header promises {promised:.{digits}f} s of audio but the file holds "
                                      f"{held:.{digits}f} s "
                                      "(truncated or still being written); re-export or re-copy the file")


def read_audio(source: AudioSource) -> tuple[np.ndarray, int]:
    """Decode ``source`` (a path, the encoded file's bytes, or ``(array, sr)``) to ``(float32 [T, C], sr)``.

    Raises :class:`AudioError` with code ``missing_file``, ``empty_audio``, ``truncated`` or ``unreadable``.
    """
    import soundfile as sf

    if isinstance(source, tuple):
        data, sr = source
        data = np.asarray(data, dtype=np.float32)
        return (data[:, None] if data.ndim == 1 else data), int(sr)
    if isinstance(source, (bytes, bytearray)):
        if len(source) == 0:
            raise AudioError("empty_audio", "the audio bytes are empty")
        handle = io.BytesIO(source)
    else:
        path = Path(source)
        if not path.exists():
            raise AudioError("missing_file", f"{path} does not exist")
        if path.is_dir():
            raise AudioError("unreadable", f"{path} is a folder, not an audio file")
        if path.stat().st_size == 0:
            raise AudioError("empty_audio", f"{path} is an empty (0-byte) file")
        handle = str(path)
    _check_truncated(source, handle)
    try:
        data, sr = sf.read(handle, dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile raises LibsndfileError / RuntimeError / TypeError
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise AudioError("unreadable", f"cannot decode {_describe(source)}: {reason}") from None
    return data, int(sr)


def to_mono(data: np.ndarray) -> np.ndarray:
    """``[T, C]`` (or ``[T]``) -> ``[T]`` float32 by averaging channels."""
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 1:
        return data
    if data.shape[1] == 1:
        return data[:, 0]
    return data.mean(axis=1, dtype=np.float32)


def resample(wav: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling with soxr (VHQ); identity when rates match."""
    if orig_sr == target_sr:
        return np.ascontiguousarray(wav, dtype=np.float32)
    import soxr

    return soxr.resample(np.ascontiguousarray(wav, dtype=np.float32), orig_sr, target_sr, quality="VHQ").astype(
        np.float32, copy=False
    )


def peak_safe(wav: np.ndarray, limit: float = PEAK_LIMIT) -> np.ndarray:
    """Scale down (never up) so that ``max |x| <= limit``; resampling can overshoot full scale."""
    peak = float(np.max(np.abs(wav))) if wav.size else 0.0
    if peak > limit:
        wav = (wav * (limit / peak)).astype(np.float32)
    return wav


@dataclass
class Decoded:
    """A decoded clip at the target rate plus facts about the source file."""

    wav: np.ndarray  # float32 mono at the target rate, peak-safe
    source_sr: int
    channels: int
    clipped_fraction: float  # fraction of source samples at or above ``clip_level`` (any channel)


def decode(path: AudioSource, target_sr: int = SAMPLE_RATE, clip_level: float = 0.99) -> Decoded:
    """:func:`load_audio` that also reports the source rate, channel count and clipping.

    Clipping is measured on the *source* samples: resampling a clipped plateau rings around full
    scale, so it cannot be detected reliably afterwards.
    """
    data, sr = read_audio(path)
    if data.size == 0 or data.shape[0] == 0:
        raise AudioError("empty_audio", f"{_describe(path)} holds no samples")
    if not np.all(np.isfinite(data)):
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise AudioError("nan_or_inf", f"{_describe(path)} has {bad} NaN/Inf samples")
    clipped = float(np.count_nonzero(np.abs(data) >= clip_level)) / data.size
    wav = peak_safe(resample(to_mono(data), sr, target_sr))
    return Decoded(wav=wav, source_sr=sr, channels=int(data.shape[1]), clipped_fraction=clipped)


def load_audio(path: AudioSource, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Decode, downmix to mono, resample to ``target_sr`` and make peak-safe; return float32 ``[T]``.

    ``path`` may be a file path (wav, flac, ogg, mp3: whatever the installed libsndfile reads), the
    bytes of such a file, or an ``(array, sample_rate)`` tuple. Raises :class:`AudioError` (a
    :class:`Rejected`) with a reject code: ``missing_file``, ``empty_audio``, ``truncated``,
    ``unreadable``, ``nan_or_inf``.
    """
    return decode(path, target_sr).wav


# --------------------------------------------------------------------------- checks


@dataclass
class AudioChecks:
    """Thresholds of :func:`check_audio`."""

    min_seconds: float = 0.5
    max_seconds: float = 30.0
    silence_db: float = -60.0  # loudest 50 ms window below this (dBFS) = silent
    clip_level: float = 0.99  # |x| at or above this counts as a clipped sample
    clip_fraction: float = 0.001  # warn when more than this fraction of samples clip


@dataclass
class AudioReport:
    duration: float
    peak: float
    loudest_db: float
    clipped_fraction: float
    warnings: list[str] = field(default_factory=list)


def loudest_window_db(wav: np.ndarray, sr: int = SAMPLE_RATE, window_s: float = 0.05) -> float:
    """RMS level (dBFS) of the loudest ``window_s`` window; robust to a single click unlike the peak."""
    win = max(1, int(sr * window_s))
    n = len(wav) // win
    if n == 0:
        rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))) if len(wav) else 0.0
    else:
        frames = wav[: n * win].reshape(n, win).astype(np.float64)
        rms = float(np.sqrt(np.mean(frames * frames, axis=1)).max())
    return 20.0 * math.log10(max(rms, 1e-10))


def check_audio(wav: np.ndarray, checks: AudioChecks, sr: int = SAMPLE_RATE,
                source_clipped_fraction: float | None = None) -> AudioReport:
    """Validate a decoded mono clip; raise :class:`AudioError` (too_short/too_long, then silent) or return a report.

    ``source_clipped_fraction`` (from :func:`decode`) is used for the clipping warning when given;
    otherwise clipping is measured on ``wav`` itself.
    """
    duration = len(wav) / sr
    if len(wav) == 0:
        raise AudioError("empty_audio", "no samples left")
    if not np.all(np.isfinite(wav)):
        raise AudioError("nan_or_inf", "NaN/Inf samples")
    # Duration before level: a 50 ms blip is too_short whether or not it is also quiet (a silence verdict
    # on a clip that short says little, and min_seconds is the rule the user can act on).
    if duration < checks.min_seconds:
        raise AudioError("too_short", f"{duration:.2f} s is shorter than min_seconds={checks.min_seconds:g}")
    if duration > checks.max_seconds:
        raise AudioError("too_long", f"{duration:.2f} s is longer than max_seconds={checks.max_seconds:g}")
    level = loudest_window_db(wav, sr)
    if level < checks.silence_db:
        raise AudioError("silent", f"loudest 50 ms is {level:.1f} dBFS (threshold {checks.silence_db:g} dBFS)")
    peak = float(np.max(np.abs(wav)))
    clipped = (source_clipped_fraction if source_clipped_fraction is not None
               else float(np.count_nonzero(np.abs(wav) >= checks.clip_level)) / len(wav))
    report = AudioReport(duration=duration, peak=peak, loudest_db=level, clipped_fraction=clipped)
    if clipped > checks.clip_fraction:
        report.warnings.append("clipping")
    return report


def pad_to_frames(wav: np.ndarray, samples_per_frame: int = SAMPLES_PER_FRAME) -> np.ndarray:
    """Zero-pad to a whole number of codec frames (80 ms at 24 kHz).

    The 12 Hz tokenizer's last *partial* frame depends on how much zero padding follows it, so in a
    padded batch its code changes with the batch's longest clip (the official loop has this flaw).
    Whole-frame clips encode identically alone or in any batch.
    """
    rem = len(wav) % samples_per_frame
    if rem == 0:
        return wav
    return np.concatenate([wav, np.zeros(samples_per_frame - rem, dtype=np.float32)])


# --------------------------------------------------------------------------- edge-silence trimming


def trim_energy(wav: np.ndarray, sr: int = SAMPLE_RATE, threshold_db: float = -40.0, margin_s: float = 0.1,
                window_s: float = 0.02) -> np.ndarray:
    """Cut leading/trailing windows quieter than ``threshold_db`` relative to the loudest window.

    Keeps ``margin_s`` of context on each side. Interior pauses are never touched.
    """
    win = max(1, int(sr * window_s))
    n = len(wav) // win
    if n == 0:
        return wav
    frames = wav[: n * win].reshape(n, win).astype(np.float64)
    db = 10.0 * np.log10(np.maximum(np.mean(frames * frames, axis=1), 1e-20))
    active = np.nonzero(db >= db.max() + threshold_db)[0]
    if active.size == 0:
        return wav
    margin = int(margin_s * sr)
    start = max(0, active[0] * win - margin)
    end = min(len(wav), (active[-1] + 1) * win + margin)
    return wav[start:end]


_vad_local = threading.local()


def _silero():
    model = getattr(_vad_local, "model", None)
    if model is None:
        from silero_vad import load_silero_vad

        model = load_silero_vad()  # the JIT model ships inside the wheel: no download
        _vad_local.model = model
    return model


def trim_vad(wav: np.ndarray, sr: int = SAMPLE_RATE, margin_s: float = 0.1) -> np.ndarray:
    """Cut leading/trailing non-speech found by silero-vad (run at 16 kHz); keep ``margin_s`` around speech.

    Raises :class:`AudioError` ``no_speech`` when the VAD finds no speech at all.
    """
    import torch
    from silero_vad import get_speech_timestamps

    vad_sr = 16000
    wav16 = resample(wav, sr, vad_sr)
    with torch.no_grad():
        stamps = get_speech_timestamps(torch.from_numpy(wav16), _silero(), sampling_rate=vad_sr)
    if not stamps:
        raise AudioError("no_speech", "silero-vad found no speech (trim=vad)")
    scale = sr / vad_sr
    margin = int(margin_s * sr)
    start = max(0, int(stamps[0]["start"] * scale) - margin)
    end = min(len(wav), int(math.ceil(stamps[-1]["end"] * scale)) + margin)
    return wav[start:end]


def trim(wav: np.ndarray, mode: str, sr: int = SAMPLE_RATE, margin_s: float = 0.1) -> np.ndarray:
    """Apply edge-silence trimming: ``"none"``, ``"energy"`` or ``"vad"``."""
    if mode == "none":
        return wav
    if mode == "energy":
        return trim_energy(wav, sr, margin_s=margin_s)
    if mode == "vad":
        return trim_vad(wav, sr, margin_s=margin_s)
    raise ValueError(f"unknown trim mode {mode!r}")
