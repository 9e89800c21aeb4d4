"""What ``qwen-tts-ext score`` scores: ``--audio`` (a folder, one audio file, a manifest) -> one :class:`ClipSpec`
per clip, with its transcript, language, reference and generation record; and the per-clip decoder.

A folder is searched recursively for audio files (hidden files and folders skipped), sorted by relative path. A
clip's transcript comes from ``--text`` (every clip), ``--texts`` (one line per clip, in that order), our synthesis
JSON sidecar (``NAME.json``: the segments' texts without the script's ``[tags]``, the language, and whether every
segment stopped by EOS), ``NAME.txt`` or ``NAME.lab``. A manifest (JSONL/CSV, or an audiofolder with
``metadata.csv``/``metadata.jsonl``) is read by data prep's reader (:mod:`qwen_tts_ext.prep.manifest`): columns
``audio,text[,ref_audio,speaker,language]``; a row it cannot parse becomes a clip with a problem, not an error.
Decoding uses data prep's reader too, so an unreadable clip carries prep's reject code (``unreadable``,
``missing_file``, ``empty_audio``, ``truncated``, ``nan_or_inf``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qwen_tts_ext.errors import UserError
from qwen_tts_ext.evaluation.score_config import ScoreConfig

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3")
MANIFEST_SUFFIXES = (".jsonl", ".json", ".ndjson", ".csv", ".tsv", ".tab")
TEXT_SIDECARS = (".txt", ".lab")  # NAME.txt / NAME.lab beside NAME.wav (after our own NAME.json sidecar)


@dataclass
class ClipSpec:
    """One clip to score, before decoding."""

    id: str
    source: Any  # a path (str) or the encoded file's bytes (a dataset row); None: the row has no audio
    path: str  # for the report
    text: str | None = None
    language: str | None = None
    ref: Any = None  # path or bytes of this clip's reference (None: --ref-audio, or none)
    ref_path: str = ""
    speaker: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None  # the row could not be read from the manifest ("code: message")


def supported_languages() -> set[str]:
    from qwen_tts_ext.constants import CODEC_LANGUAGE_IDS

    return {k for k in CODEC_LANGUAGE_IDS if "dialect" not in k}


def language_name(value: Any, default: str = "auto") -> str | None:
    """A language value as a qwen_tts name, or None for auto/unknown; raises ``Rejected``."""
    from qwen_tts_ext.prep.manifest import normalize_language

    lang = normalize_language(value, default, supported_languages())
    return None if lang == "auto" else lang


def _clean_text(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    text = " ".join(value.split())
    return text or None


def _sidecar_facts(path: Path) -> tuple[str | None, str | None, dict[str, Any]]:
    """(text, language, meta) from our synthesis sidecar ``NAME.json`` (or any JSON with a ``text``)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None, {}
    if not isinstance(data, dict):
        return None, None, {}
    text = None
    segments = data.get("segments") if isinstance(data.get("segments"), list) else []
    seg_texts = [s.get("text") for s in segments if isinstance(s, dict)]
    if seg_texts and all(isinstance(t, str) for t in seg_texts):
        text = _clean_text(" ".join(seg_texts))  # the spoken words, without the script's [tags]
    elif isinstance(data.get("text"), str):
        from qwen_tts_ext.synthesis.tags import TAG_PATTERN

        text = _clean_text(TAG_PATTERN.sub(" ", data["text"]))
    language = data.get("language") if isinstance(data.get("language"), str) else None
    meta: dict[str, Any] = {}
    if isinstance(data.get("all_stopped_by_eos"), bool):
        meta["stopped_by_eos"] = data["all_stopped_by_eos"]
    frames = [s.get("frames") for s in segments if isinstance(s, dict)]
    caps = [s.get("frame_cap") for s in segments if isinstance(s, dict)]
    if frames and all(isinstance(f, int) for f in frames):
        meta["frames"] = sum(frames)
    if caps and all(isinstance(c, int) for c in caps):
        meta["frame_cap"] = sum(caps)
    return text, language, meta


def _transcript_beside(audio: Path) -> tuple[str | None, str | None, dict[str, Any], str]:
    """(text, language, meta, where) for a clip in a folder: NAME.json sidecar, NAME.txt, NAME.lab."""
    side = audio.with_suffix(".json")
    if side.is_file():
        text, language, meta = _sidecar_facts(side)
        if text or meta:
            return text, language, meta, "sidecar" if text else ""
    for suffix in TEXT_SIDECARS:
        p = audio.with_suffix(suffix)
        if p.is_file():
            try:
                return _clean_text(p.read_text(encoding="utf-8-sig")), None, {}, suffix[1:]
            except (OSError, UnicodeDecodeError):
                return None, None, {}, ""
    return None, None, {}, ""


def _audio_files(folder: Path) -> list[Path]:
    found = []
    for p in folder.rglob("*"):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue  # hidden files and folders (our own temp folders among them)
        if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file():
            found.append(p)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _read_texts_file(path_s: str) -> list[str | None]:
    path = Path(path_s).expanduser()
    if not path.exists():
        raise UserError(f"--texts {path} does not exist; give a text file with one transcript per clip")
    if not path.is_file():
        raise UserError(f"--texts {path} is a folder; give a text file with one transcript per clip")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"--texts {path} is not UTF-8 text") from None
    while lines and not lines[-1].strip():
        lines.pop()
    return [_clean_text(ln) for ln in lines]


def _from_folder(cfg: ScoreConfig, files: list[Path], root: Path) -> tuple[list[ClipSpec], str]:
    texts = _read_texts_file(cfg.texts) if cfg.texts else None
    if texts is not None and len(texts) != len(files):
        first = ", ".join(f.relative_to(root).as_posix() if root != f else f.name for f in files[:2])
        raise UserError(f"--texts {cfg.texts} has {len(texts)} line(s) but --audio {cfg.audio} holds {len(files)} "
                        f"clip(s); give one line per clip, in the order of the sorted file names ({first}, ...)")
    specs, sources = [], set()
    for i, f in enumerate(files):
        rel = f.name if root == f else f.relative_to(root).as_posix()
        side_text, language, meta, where = _transcript_beside(f)
        if cfg.text:
            text, where = _clean_text(cfg.text), "--text"
        elif texts is not None:
            text, where = texts[i], "--texts"
        else:
            text = side_text
        sources.add(where or "none")
        specs.append(ClipSpec(id=rel, source=str(f), path=str(f), text=text, language=language, meta=meta))
    if cfg.text:
        return specs, "--text (one transcript for every clip)"
    if cfg.texts:
        return specs, f"--texts {cfg.texts}"
    named = sorted(s for s in sources if s != "none")
    desc = ", ".join({"sidecar": "JSON sidecars", "txt": "NAME.txt", "lab": "NAME.lab"}.get(s, s) for s in named)
    missing = sum(1 for s in specs if s.text is None)
    return specs, (desc or "none") + (f" ({missing} clip(s) without a transcript)" if missing and desc else "")


def _from_manifest(cfg: ScoreConfig, path: Path) -> list[ClipSpec]:
    from qwen_tts_ext.prep.manifest import Columns, read_manifest

    if cfg.text or cfg.texts:
        flag = "--text" if cfg.text else "--texts"
        raise UserError(f"{flag} with a manifest: the manifest's text column gives each clip's transcript; "
                        f"drop {flag} (or pass --audio a folder of audio files)")
    try:
        rows = read_manifest(path, Columns())
    except UserError as exc:  # prep's messages name prep's column flags; score reads fixed column names
        raise UserError(*(p.split("; name the right one with")[0].split("; fix --")[0] +
                          ("; a manifest for score has columns audio,text[,ref_audio,speaker,language]"
                           if "has no column" in p else "") for p in exc.problems)) from None
    base = path.parent.resolve() if path.is_file() else path.resolve()
    specs, seen = [], set()
    for r in rows:
        problem = None
        if r.error is not None:
            problem = f"{r.error.code}: {r.error.message}"
        elif r.audio is None:
            problem = "missing_file: the row has no audio value"
        where = r.audio_path or f"row {r.row}"
        if isinstance(r.audio, str):
            try:
                ident = Path(r.audio).relative_to(base).as_posix()
            except ValueError:
                ident = r.audio
        else:
            ident = f"row{r.row}"
        if ident in seen:
            ident = f"{ident}#{r.row}"
        seen.add(ident)
        specs.append(ClipSpec(
            id=ident, source=r.audio, path=where, text=_clean_text(r.text), language=r.language,
            ref=r.ref_audio, ref_path=r.ref_path, speaker=None if r.speaker is None else str(r.speaker),
            problem=problem,
        ))
    return specs


def discover(cfg: ScoreConfig) -> tuple[list[ClipSpec], str, str]:
    """``--audio`` -> (clips, kind, where the transcripts come from); a UserError for bad input."""
    path = Path(str(cfg.audio)).expanduser()
    if not path.exists():
        raise UserError(f"--audio {path} does not exist; give a folder of audio files, one audio file, or a "
                        "manifest (.jsonl/.csv)")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in MANIFEST_SUFFIXES:
            return _from_manifest(cfg, path), "manifest", f"manifest {path.name} (text column)"
        if suffix in AUDIO_SUFFIXES:
            specs, where = _from_folder(cfg, [path], path)
            return specs, "file", where
        raise UserError(f"--audio {path}: unknown file type {suffix or '(none)'!r}; give a folder of audio files, an "
                        f"audio file ({', '.join(AUDIO_SUFFIXES)}) or a manifest (.jsonl/.csv)")
    if any((path / name).is_file() for name in ("metadata.csv", "metadata.jsonl")):
        return _from_manifest(cfg, path), "manifest", f"audiofolder metadata in {path.name} (text column)"
    files = _audio_files(path)
    if not files:
        raise UserError(f"--audio {path} holds no audio files ({', '.join(AUDIO_SUFFIXES)}); give the folder that "
                        "holds the clips, or a manifest")
    specs, where = _from_folder(cfg, files, path)
    return specs, "folder", where


# --------------------------------------------------------------------------- decoding


def load_clip_audio(source: Any) -> tuple[Any, int]:
    """(mono float32 audio at its own rate, sample rate); raises prep's ``Rejected`` with a reject code."""
    import numpy as np

    from qwen_tts_ext.prep.audio import AudioError, read_audio, to_mono

    data, sr = read_audio(source)
    if data.size == 0:
        raise AudioError("empty_audio", "the file holds no samples")
    if not np.all(np.isfinite(data)):
        raise AudioError("nan_or_inf", f"{int(np.count_nonzero(~np.isfinite(data)))} NaN/Inf samples")
    return to_mono(data), sr
