"""Manifest readers: JSONL, CSV/TSV, and Hugging Face ``datasets`` (saved, audiofolder, parquet, hub).

All readers yield :class:`ManifestRow` objects with the audio *source* resolved (an absolute path,
or the encoded file's bytes for datasets that embed audio) and the raw text/speaker/language/
instruct values; normalisation and per-row validation happen in :func:`normalize_row`.

Top-level mistakes (missing manifest, unknown column, unparsable file) raise ``UserError``; a bad
individual row never does - it becomes a :class:`~qwen_tts_ext.prep.audio.Rejected`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qwen_tts_ext.errors import UserError
from qwen_tts_ext.prep.audio import Rejected
from qwen_tts_ext.synthesis.tags import TAG_PATTERN

# ISO codes and common spellings -> qwen_tts language names.
LANGUAGE_ALIASES = {
    "en": "english", "eng": "english", "en-us": "english", "en-gb": "english",
    "zh": "chinese", "cmn": "chinese", "zh-cn": "chinese", "mandarin": "chinese",
    "de": "german", "deu": "german", "ger": "german",
    "es": "spanish", "spa": "spanish",
    "fr": "french", "fra": "french", "fre": "french",
    "it": "italian", "ita": "italian",
    "ja": "japanese", "jpn": "japanese",
    "ko": "korean", "kor": "korean",
    "pt": "portuguese", "por": "portuguese", "pt-br": "portuguese",
    "ru": "russian", "rus": "russian",
}


@dataclass
class ManifestRow:
    """One row of the user's manifest, before validation."""

    row: int  # 0-based record index in the manifest
    audio: Any  # absolute path (str) or the audio file's bytes; None if the row has no audio value
    audio_path: str  # human-readable location (the path, or "<manifest>#row")
    text: Any
    speaker: Any = None
    language: Any = None
    instruct: Any = None
    ref_audio: Any = None
    ref_path: str = ""
    line: int | None = None  # 1-based line in a JSONL/CSV file
    error: Rejected | None = None  # the row could not even be parsed


@dataclass
class Columns:
    audio: str = "audio"
    text: str = "text"
    speaker: str = "speaker"
    language: str = "language"
    instruct: str = "instruct"
    ref_audio: str = "ref_audio"
    required_optional: set[str] = field(default_factory=set)  # optional columns the user named explicitly


# --------------------------------------------------------------------------- helpers


def _resolve(value: Any, base: Path) -> str | None:
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        return value  # type: ignore[return-value]
    s = str(value).strip()
    if not s:
        return None
    p = Path(os.path.expanduser(s))
    if not p.is_absolute():
        p = base / p
    return str(p.resolve(strict=False))


def _check_columns(present: set[str], cols: Columns, where: str) -> None:
    for need in (cols.audio, cols.text):
        if need not in present:
            hint = ", ".join(sorted(present)[:12]) or "none"
            flag = "--audio-column" if need == cols.audio else "--text-column"
            raise UserError(f"{where} has no column {need!r} (columns: {hint}); name the right one with {flag}")
    for attr in sorted(cols.required_optional):
        name = getattr(cols, attr)
        if name not in present:
            hint = ", ".join(sorted(present)[:12]) or "none"
            raise UserError(f"{where} has no column {name!r} (columns: {hint}); fix --{attr.replace('_', '-')}-column")


def _row_from_mapping(idx: int, rec: dict, cols: Columns, base: Path, where: str, line: int | None) -> ManifestRow:
    audio = _resolve(rec.get(cols.audio), base)
    ref = _resolve(rec.get(cols.ref_audio), base)
    return ManifestRow(
        row=idx,
        audio=audio,
        audio_path=audio if isinstance(audio, str) else f"{where}#{idx}",
        text=rec.get(cols.text),
        speaker=rec.get(cols.speaker),
        language=rec.get(cols.language),
        instruct=rec.get(cols.instruct),
        ref_audio=ref,
        ref_path=ref if isinstance(ref, str) else ("" if ref is None else f"{where}#{idx}:ref"),
        line=line,
    )


# --------------------------------------------------------------------------- readers


def read_jsonl(path: Path, cols: Columns) -> list[ManifestRow]:
    base = path.parent.resolve()
    rows: list[ManifestRow] = []
    present: set[str] = set()
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"manifest {path} is not UTF-8 text; a JSONL manifest has one JSON object per line") from None
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        idx = len(rows)
        try:
            rec = json.loads(raw)
            if not isinstance(rec, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            rows.append(ManifestRow(row=idx, audio=None, audio_path="", text=None, line=lineno,
                                    error=Rejected("bad_row", f"line {lineno} is not a JSON object: {exc}")))
            continue
        present.update(rec)
        rows.append(_row_from_mapping(idx, rec, cols, base, str(path), lineno))
    if not rows:
        raise UserError(f"manifest {path} is empty")
    if all(r.error for r in rows):
        raise UserError(f"manifest {path}: no line is a JSON object; expected one {{\"audio\": ..., \"text\": ...}} per line")
    _check_columns(present, cols, f"manifest {path}")
    return rows


def read_csv(path: Path, cols: Columns) -> list[ManifestRow]:
    base = path.parent.resolve()
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        if not reader.fieldnames:
            raise UserError(f"manifest {path} is empty (a CSV manifest needs a header row: audio,text,...)")
        _check_columns(set(reader.fieldnames), cols, f"manifest {path}")
        rows = []
        for idx, rec in enumerate(reader):
            rec = {k: (v if v != "" else None) for k, v in rec.items() if k is not None}
            rows.append(_row_from_mapping(idx, rec, cols, base, str(path), reader.line_num))
    if not rows:
        raise UserError(f"manifest {path} has a header but no rows")
    return rows


def _load_hf(source: str, split: str):
    """Load a local saved dataset / parquet / audiofolder, or a hub id; return (Dataset, base_dir, label)."""
    import datasets

    path = Path(source)
    try:
        if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()
                              or (path / "state.json").exists()):
            ds = datasets.load_from_disk(str(path))
        elif path.is_dir() and any(path.rglob("*.parquet")):
            files = sorted(str(p) for p in path.rglob("*.parquet"))
            ds = datasets.load_dataset("parquet", data_files=files)
        elif path.is_file() and path.suffix.lower() == ".parquet":
            ds = datasets.load_dataset("parquet", data_files=[str(path)])
        else:
            ds = datasets.load_dataset(source)
    except UserError:
        raise
    except Exception as exc:
        cause = exc.__cause__ or exc
        msg = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise UserError(f"cannot load dataset {source}: {msg}") from None
    if isinstance(ds, (datasets.DatasetDict, dict)):
        names = list(ds.keys())
        pick = split or ("train" if "train" in names else (names[0] if len(names) == 1 else ""))
        if pick not in names:
            raise UserError(f"dataset {source} has splits {names}; choose one with split=NAME")
        ds = ds[pick]
    elif split and split != "train":
        raise UserError(f"dataset {source} has no splits; drop split={split}")
    base = path.resolve() if path.is_dir() else path.parent.resolve()
    return ds, base


def read_hf(source: str, cols: Columns, split: str = "") -> list[ManifestRow]:
    import datasets

    ds, base = _load_hf(source, split)
    _check_columns(set(ds.column_names), cols, f"dataset {source}")
    # Never let `datasets` decode audio (it needs torchcodec, and we decode/resample ourselves).
    for name in (cols.audio, cols.ref_audio):
        if name in ds.column_names and isinstance(ds.features[name], datasets.Audio):
            ds = ds.cast_column(name, datasets.Audio(decode=False))
    wanted = [c for c in (cols.audio, cols.text, cols.speaker, cols.language, cols.instruct, cols.ref_audio)
              if c in ds.column_names]
    ds = ds.select_columns(wanted)
    rows = []

    def audio_value(v):
        if isinstance(v, dict):
            if v.get("bytes"):
                return v["bytes"], v.get("path") or None
            v = v.get("path")
        r = _resolve(v, base)
        return r, r

    for idx, rec in enumerate(ds):
        audio, apath = audio_value(rec.get(cols.audio))
        ref, rpath = audio_value(rec.get(cols.ref_audio)) if cols.ref_audio in rec else (None, None)
        rows.append(ManifestRow(
            row=idx, audio=audio,
            audio_path=str(apath) if apath else f"{source}#{idx}",
            text=rec.get(cols.text), speaker=rec.get(cols.speaker), language=rec.get(cols.language),
            instruct=rec.get(cols.instruct), ref_audio=ref,
            ref_path=str(rpath) if rpath else ("" if ref is None else f"{source}#{idx}:ref"),
        ))
    if not rows:
        raise UserError(f"dataset {source} has no rows")
    return rows


AUDIOFOLDER_METADATA = ("metadata.csv", "metadata.jsonl")


def read_audiofolder(path: Path, cols: Columns) -> list[ManifestRow]:
    """An ``audiofolder`` (audio files + ``metadata.csv``/``metadata.jsonl`` with a ``file_name`` column).

    Read directly (``datasets``' builder would need torchcodec to encode audio): ``file_name``
    resolves against the metadata file's folder and becomes the ``audio`` column, as in ``datasets``.
    """
    metas = sorted(p for name in AUDIOFOLDER_METADATA for p in path.rglob(name))
    if not metas:
        raise UserError(f"{path} is a folder without metadata.csv/metadata.jsonl; an audiofolder needs one "
                        "(columns: file_name, text, ...), or pass a JSONL/CSV manifest")
    rows: list[ManifestRow] = []
    for meta in metas:
        sub = read_jsonl(meta, _af_cols(cols)) if meta.suffix == ".jsonl" else read_csv(meta, _af_cols(cols))
        for r in sub:
            r.row = len(rows)
            rows.append(r)
    return rows


def _af_cols(cols: Columns) -> Columns:
    return Columns(audio="file_name" if cols.audio == "audio" else cols.audio, text=cols.text, speaker=cols.speaker,
                   language=cols.language, instruct=cols.instruct, ref_audio=cols.ref_audio,
                   required_optional=cols.required_optional)


def _is_hf_folder(path: Path) -> bool:
    markers = ("dataset_info.json", "dataset_dict.json", "state.json")
    return any((path / m).exists() for m in markers) or any(path.rglob("*.parquet"))


def read_manifest(source: str | os.PathLike, cols: Columns, split: str = "") -> list[ManifestRow]:
    """Read any supported manifest; raise ``UserError`` for a missing/unknown source or a missing column."""
    source = str(source)
    if not source:
        raise UserError("no manifest given: pass --manifest FILE.jsonl|FILE.csv|DATASET_DIR")
    path = Path(os.path.expanduser(source))
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".json", ".ndjson"):
            return read_jsonl(path, cols)
        if suffix in (".csv", ".tsv", ".tab"):
            return read_csv(path, cols)
        if suffix == ".parquet":
            return read_hf(str(path), cols, split)
        raise UserError(f"manifest {path}: unknown type {suffix!r}; use .jsonl, .csv/.tsv, .parquet or a dataset folder")
    if path.is_dir():
        if _is_hf_folder(path):
            return read_hf(str(path), cols, split)
        return read_audiofolder(path, cols)
    looks_like_hub = source.count("/") == 1 and not source.startswith((".", "/", "~"))
    if looks_like_hub and not os.environ.get("HF_HUB_OFFLINE"):
        return read_hf(source, cols, split)
    raise UserError(f"manifest {source} does not exist (expected a .jsonl/.csv file or a dataset folder)")


def manifest_fingerprint(source: str | os.PathLike) -> str:
    """A content hash of the manifest (file bytes, or a dataset folder's file names/sizes/mtimes)."""
    h = hashlib.sha256()
    path = Path(os.path.expanduser(str(source)))
    if path.is_file():
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    elif path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file():
                st = p.stat()
                h.update(f"{p.relative_to(path)}\0{st.st_size}\0{int(st.st_mtime)}\n".encode())
    else:
        h.update(str(source).encode())
    return h.hexdigest()


# --------------------------------------------------------------------------- normalisation


def normalize_text(value: Any) -> str:
    """Strip and collapse whitespace; raise ``empty_text`` / ``non_text`` rejects."""
    if value is None or (isinstance(value, float) and value != value):
        raise Rejected("empty_text", "the transcript is missing")
    if not isinstance(value, str):
        raise Rejected("non_text", f"the transcript is a {type(value).__name__} ({value!r}), not text")
    text = " ".join(value.split())
    if not text:
        raise Rejected("empty_text", "the transcript is empty")
    if not any(unicodedata.category(ch)[0] in ("L", "N") for ch in text):
        raise Rejected("non_text", f"the transcript {text[:40]!r} has no letters or digits")
    return text


def apply_text_tags(text: str, mode: str) -> str:
    """Handle inline synthesis tags (``[Whispering]``, ``[Angry]``) in a normalised transcript.

    ``mode`` is ``PrepareConfig.text_tags``: ``"reject"`` raises a ``markup_in_text`` reject naming the
    first tag, ``"strip"`` removes every tag and re-normalises the text (nothing left -> ``empty_text``,
    only punctuation left -> ``non_text``), ``"keep"`` returns ``text`` unchanged. A tag is whatever the
    synthesis script parser reads as one (:data:`qwen_tts_ext.synthesis.tags.TAG_PATTERN`); escaped
    ``\\[`` brackets are not tags and are left as written.
    """
    if mode == "keep":
        return text
    tags = [m.group(0) for m in TAG_PATTERN.finditer(text)]
    if not tags:
        return text
    if mode == "reject":
        more = f" (and {len(tags) - 1} more tag{'s' if len(tags) > 2 else ''})" if len(tags) > 1 else ""
        raise Rejected("markup_in_text",
                       f"the transcript contains the tag {tags[0]}{more}, which the model would learn to read "
                       "aloud; set text_tags=strip to remove tags, or text_tags=keep to train on the text as written")
    if mode != "strip":
        raise ValueError(f"unknown text_tags mode {mode!r}")
    stripped = " ".join(TAG_PATTERN.sub(" ", text).split())
    if not stripped:
        raise Rejected("empty_text", f"the transcript is only tag markup ({' '.join(tags)[:60]}); "
                                     "nothing is left to speak after text_tags=strip")
    return normalize_text(stripped)


def normalize_speaker(value: Any, default: str) -> str:
    s = "" if value is None else " ".join(str(value).split())
    return (s or default).lower()


def normalize_language(value: Any, default: str, supported: set[str]) -> str:
    """Map a language value to a lower-case qwen_tts name (or ``"auto"``); raise ``bad_language``."""
    s = "" if value is None else str(value).strip().lower().replace("_", "-")
    if not s:
        s = default.lower()
    if s == "auto":
        return "auto"
    s = LANGUAGE_ALIASES.get(s, s).replace("-", "_")
    if supported and s not in supported:
        raise Rejected("bad_language", f"language {value!r} is not one of auto, {', '.join(sorted(supported))}")
    return s


def normalize_instruct(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return " ".join(str(value).split())
