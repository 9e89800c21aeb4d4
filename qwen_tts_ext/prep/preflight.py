"""Data prep's checks before any audio is read: which folders serve as model, speech tokenizer and
speaker encoder (from ``config.json`` and safetensors headers alone), outputs that would overlap the
inputs, whether ``--output`` already holds this job, another job, or a dry-run report, and the
cheap identity (fingerprint inputs) of the checkpoints. :func:`~qwen_tts_ext.prep.pipeline.prepare`
calls these before it loads a model or decodes a clip."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from qwen_tts_ext.constants import CODEC_LANGUAGE_IDS
from qwen_tts_ext.errors import UserError
from qwen_tts_ext.prep.config import PrepareConfig
from qwen_tts_ext.prep.manifest import Columns, ManifestRow
from qwen_tts_ext.prepared import FORMAT_VERSION


def file_identity(path: Path) -> dict:
    """Cheap identity of a weights/config file: size + sha256 of its first and last MiB."""
    if not path.is_file():
        return {}
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        if st.st_size > (2 << 20):
            f.seek(-(1 << 20), os.SEEK_END)
            h.update(f.read(1 << 20))
    return {"file": path.name, "size": st.st_size, "sha256_head_tail": h.hexdigest()}


def checkpoint_identity(path: Path | None) -> dict:
    if path is None:
        return {}
    ident = {"path": str(path), "config": file_identity(path / "config.json")}
    for name in ("model.safetensors", "model.safetensors.index.json"):
        if (path / name).is_file():
            ident["weights"] = file_identity(path / name)
    return ident


def supported_languages(model_dir: Path | None) -> set[str]:
    if model_dir is not None and (model_dir / "config.json").is_file():
        try:
            cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
            langs = cfg.get("talker_config", {}).get("codec_language_id")
            if isinstance(langs, dict) and langs:
                return {str(k).lower() for k in langs}
        except ValueError:
            raise UserError(f"{model_dir / 'config.json'} is not valid JSON") from None
    return set(CODEC_LANGUAGE_IDS)


def resolve_models(cfg: PrepareConfig) -> tuple[Path | None, Path | None, Path | None]:
    """(model, speech tokenizer, speaker encoder) folders, identified from their config.json and the
    safetensors headers alone; a UserError for a folder that cannot serve (no weights are read)."""
    from qwen_tts_ext.checkpoint_io import require_tts_checkpoint, resolve_checkpoint
    from qwen_tts_ext.prep.encode import check_tokenizer
    from qwen_tts_ext.prep.speakers import check_speaker_encoder

    model_dir = require_tts_checkpoint(cfg.model, what="--model", llm_flag=None) if cfg.model else None
    if cfg.tokenizer:
        tok_dir = check_tokenizer(resolve_checkpoint(cfg.tokenizer, what="--tokenizer"))
    else:
        tok_dir = check_tokenizer(model_dir / "speech_tokenizer") if model_dir is not None else None
    if cfg.speaker_encoder:
        spk_dir = require_tts_checkpoint(cfg.speaker_encoder, what="--speaker-encoder", llm_flag=None)
    else:
        spk_dir = model_dir
    if spk_dir is not None:
        check_speaker_encoder(spk_dir, what="--speaker-encoder" if cfg.speaker_encoder else "--model")
    return model_dir, tok_dir, spk_dir


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(os.path.expanduser(str(path))))


def check_manifest_overlap(out: Path, manifest: str) -> None:
    """Refuse an output folder that is, holds or lies inside the manifest (replacing it would lose inputs)."""
    m = Path(os.path.expanduser(manifest))
    if not m.exists():
        return
    f, m = _real(out), _real(m)
    if f == m:
        raise UserError(f"--output {out} is the --manifest itself; choose a new folder for the prepared data")
    if f in m.parents:
        raise UserError(f"--output {out} contains the --manifest ({m}); choose a folder outside it")
    if m.is_dir() and m in f.parents:
        raise UserError(f"--output {out} is inside the --manifest dataset folder {m}; choose a folder outside it")


def check_audio_overlap(out: Path, rows: list[ManifestRow]) -> None:
    """Refuse an existing output folder that holds audio the manifest reads (replacing it would lose it)."""
    if not out.is_dir():
        return
    f = _real(out)
    for row in rows:
        for value, what in ((row.audio, "audio"), (row.ref_audio, "ref_audio")):
            if isinstance(value, str) and _inside(_real(value), f):
                raise UserError(f"--output {out} holds input audio ({what} of manifest row {row.row}: {value}); "
                                "choose a new folder for the prepared data")


def manifest_columns(cfg: PrepareConfig) -> Columns:
    defaults = PrepareConfig()
    explicit = {name for name in ("speaker", "language", "instruct", "ref_audio")
                if getattr(cfg, f"{name}_column") != getattr(defaults, f"{name}_column")}
    return Columns(audio=cfg.audio_column, text=cfg.text_column, speaker=cfg.speaker_column,
                   language=cfg.language_column, instruct=cfg.instruct_column, ref_audio=cfg.ref_audio_column,
                   required_optional=explicit)


def check_existing_output(out: Path, fingerprint: str, cfg: PrepareConfig) -> bool:
    """True when ``out`` is already this exact dataset. Raise ``UserError`` when it holds another one.

    ``out`` is absent, empty or a previous ``prepare`` output (``check_output_dir`` refused the rest).
    A previous dry-run report is replaced freely; a dataset of other inputs only with ``overwrite``.
    """
    if not out.is_dir() or not any(out.iterdir()):
        return False
    meta_path = out / "prepare_config.json"
    meta = None
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except ValueError:
            meta = None
    if not isinstance(meta, dict):
        meta = None
    if (meta is not None and meta.get("fingerprint") == fingerprint and not meta.get("dry_run") and not cfg.dry_run
            and not cfg.overwrite):
        return True
    if cfg.overwrite or (meta is not None and meta.get("dry_run")):
        return False
    if cfg.dry_run and meta is not None:
        raise UserError(f"--output {out} holds a prepared dataset; give the dry run another --output (it writes "
                        "rejects.jsonl + stats.json there)")
    if meta is None:
        raise UserError(f"--output {out} holds a previous `prepare` output without a readable prepare_config.json; "
                        "pass --overwrite to replace it, or choose another --output")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:  # same job or not: the fingerprint covers the format
        raise UserError(f"--output {out} holds a dataset in prepared-data format {version} (this prepare writes "
                        f"{FORMAT_VERSION}); pass --overwrite to rebuild it, or choose another --output")
    raise UserError(f"--output {out} holds a dataset prepared from different inputs or settings; "
                    "choose another --output or pass --overwrite to replace it")
