"""The prep -> train file format: one prepared folder, written by ``prepare`` and read by training.

    FOLDER/dataset/               ``datasets.save_to_disk``: the COLUMNS below; ``codes`` is int16
                                  [frames, NUM_CODE_GROUPS] per clip (codes 0..CODEBOOK_SIZE-1)
    FOLDER/speakers.safetensors   lower-cased speaker -> float32 mean x-vector; speakers.json: its clips
    FOLDER/prepare_config.json    {"format_version": FORMAT_VERSION, "fingerprint", "config", "identity", ...}

Format 1 (codes int32) reads as is: the same values. A folder of a newer format is refused with one line
that names the format it is. :func:`read_prepared` checks the version, the columns and every code
(range and shape, naming the first bad row) before training loads a model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from qwen_tts_ext.constants import CODEBOOK_SIZE, NUM_CODE_GROUPS
from qwen_tts_ext.errors import UserError

FORMAT_VERSION = 2  # 1: codes int32; 2: codes int16
META = "prepare_config.json"
COLUMNS = {"id": "string", "text": "string", "codes": "int16", "num_frames": "int32", "speaker": "string",
           "language": "string", "instruct": "string", "duration": "float32", "audio_path": "string",
           "ref_audio": "string"}


def features():
    import datasets

    return datasets.Features({c: datasets.List(datasets.List(datasets.Value(t), length=NUM_CODE_GROUPS))
                              if c == "codes" else datasets.Value(t) for c, t in COLUMNS.items()})


def write_meta(folder: Path, meta: dict) -> None:
    """``prepare_config.json`` with this format's version first."""
    meta = {"format_version": FORMAT_VERSION, **{k: v for k, v in meta.items() if k != "format_version"}}
    (Path(folder) / META).write_text(json.dumps(meta, indent=2, ensure_ascii=False, default=str), encoding="utf-8")


def check_version(version, where) -> None:
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise UserError(f"{where} was written by a newer `prepare` (prepared-data format {version}); this qwen-tts-ext "
                        f"reads formats 1..{FORMAT_VERSION}: update it, or re-run `qwen-tts-ext prepare` with this one")


def write_prepared(folder: Path, records: list[dict], codes: list[np.ndarray], progress: bool = True) -> None:
    """``folder/dataset`` from one record (the COLUMNS but codes) per clip and its codes [frames, groups]."""
    import pyarrow as pa

    offsets = np.zeros(len(codes) + 1, dtype=np.int32)
    offsets[1:] = np.cumsum([c.shape[0] for c in codes])
    flat = np.concatenate(codes).astype(np.int16).reshape(-1)
    frames = pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.int16()), NUM_CODE_GROUPS)
    columns = {c: [r[c] for r in records] for c in COLUMNS if c != "codes"}
    columns["codes"] = pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), frames)
    _save(pa.table({c: columns[c] for c in COLUMNS}), Path(folder) / "dataset", progress)


def concat_prepared(parts: list[Path], folder: Path, progress: bool = True):
    """``folder/dataset`` = the checked datasets of ``parts`` one after another (format 1 codes -> int16)."""
    import pyarrow as pa

    schema = features().arrow_schema
    tables = [read_prepared(p).data.table.select(list(COLUMNS)).cast(schema) for p in parts]
    return _save(pa.concat_tables(tables), Path(folder) / "dataset", progress)


def _save(table, path: Path, progress: bool):
    import datasets
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

    info = datasets.DatasetInfo(features=features(), description="qwen-tts-ext prepared 12 Hz codes",
                                version=f"{FORMAT_VERSION}.0.0")
    ds = datasets.Dataset(table.cast(features().arrow_schema), info=info)
    was_enabled = is_progress_bar_enabled()
    if not progress:
        disable_progress_bar()
    try:
        ds.save_to_disk(str(path))
    finally:
        if was_enabled and not progress:
            enable_progress_bar()
    return ds


def read_prepared(path: str | os.PathLike):
    """The checked ``datasets.Dataset`` of a prepared folder (or of its ``dataset/`` folder itself)."""
    from datasets import load_from_disk

    path = Path(os.path.expanduser(str(path)))
    ds_dir = path / "dataset" if (path / "dataset").is_dir() else path
    if not ds_dir.is_dir():
        raise UserError(f"prepared data {path} not found; pass the output folder of `qwen-tts-ext prepare`")
    meta = ds_dir.parent / META if ds_dir.name == "dataset" else ds_dir / META
    if meta.is_file():
        try:
            check_version(json.loads(meta.read_text(encoding="utf-8")).get("format_version"), meta.parent)
        except (ValueError, AttributeError):
            raise UserError(f"{meta} is not readable JSON; re-run `qwen-tts-ext prepare`") from None
    try:
        ds = load_from_disk(str(ds_dir))
    except Exception as exc:  # noqa: BLE001 - a user path that is not a saved dataset
        raise UserError(f"{ds_dir} is not a prepared dataset ({type(exc).__name__}); "
                        "run `qwen-tts-ext prepare`") from None
    check_version(ds.info.version.major if ds.info.version else None, ds_dir)
    missing = [c for c in COLUMNS if c not in ds.column_names]
    if missing:
        raise UserError(f"dataset {ds_dir} lacks column(s) {missing}; it was not written by `qwen-tts-ext prepare`")
    if len(ds) == 0:
        raise UserError(f"dataset {ds_dir} is empty")
    check_codes(ds, ds_dir)
    return ds


def check_codes(ds, where) -> None:
    """Every row's codes are [frames >= 1, NUM_CODE_GROUPS] integers in 0..CODEBOOK_SIZE-1; else one line
    naming the first bad row (a scan of the memory-mapped column: about a second for 1000 hours)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col, t = ds.data.column("codes"), ds.data.column("codes").type
    if not (pa.types.is_list(t) and (pa.types.is_list(t.value_type) or pa.types.is_fixed_size_list(t.value_type))
            and pa.types.is_integer(t.value_type.value_type)):
        raise UserError(f"dataset {where}: codes are {t}, not integer lists [frames][{NUM_CODE_GROUPS}]; "
                        "re-run `qwen-tts-ext prepare`")
    start = 0
    for chunk in col.chunks:
        lengths = pc.list_value_length(chunk).fill_null(0).to_numpy(zero_copy_only=False)
        ends, frames = np.cumsum(lengths), chunk.flatten()
        values, bad = frames.flatten(), None
        if pa.types.is_fixed_size_list(t.value_type):  # prepare's own: one width for every frame
            width = np.array([t.value_type.list_size])  # (frame 0 stands for all)
        else:
            width = pc.list_value_length(frames).to_numpy(zero_copy_only=False)
        if (lengths == 0).any():
            bad = (int(np.argmax(lengths == 0)), "has no frames")
        elif (width != NUM_CODE_GROUPS).any():
            f = int(np.argmax(width != NUM_CODE_GROUPS))
            bad = (int(np.searchsorted(ends, f, side="right")), f"has {width[f]} code groups, not {NUM_CODE_GROUPS}")
        else:
            lo_hi = pc.min_max(values)
            if lo_hi["min"].as_py() < 0 or lo_hi["max"].as_py() >= CODEBOOK_SIZE:
                v = values.to_numpy(zero_copy_only=False)
                k = int(np.argmax((v < 0) | (v >= CODEBOOK_SIZE)))
                bad = (int(np.searchsorted(ends, k // NUM_CODE_GROUPS, side="right")),
                       f"has code {v[k]}, outside 0..{CODEBOOK_SIZE - 1}")
        if bad:
            row, ident = start + bad[0], ds.data.column("id")[start + bad[0]].as_py()
            raise UserError(f"dataset {where}: row {row} (id {ident}) {bad[1]}; it was not prepared for a "
                            "Qwen3-TTS 12 Hz model: re-run `qwen-tts-ext prepare`")
        start += len(chunk)


class Rows:
    """Fast row reads (about 10x ``ds[i]``): codes as int64 [frames, NUM_CODE_GROUPS], the rest as Python values."""

    def __init__(self, ds, columns=("text", "speaker", "language", "instruct")):
        self.view, self.columns = ds.with_format("arrow"), columns

    def __len__(self) -> int:
        return len(self.view)

    def __getitem__(self, i: int) -> dict:
        tb = self.view[int(i)]
        row = {c: tb.column(c)[0].as_py() for c in self.columns}
        flat = tb.column("codes").combine_chunks().flatten().flatten().to_numpy(zero_copy_only=False)
        row["codes"] = flat.astype(np.int64).reshape(-1, NUM_CODE_GROUPS)
        return row


def save_speakers(vectors: dict[str, np.ndarray], clips: dict[str, list[str]], out_dir: Path,
                  sources: dict[str, str] | None = None) -> None:
    """Write ``speakers.safetensors`` (name -> float32 vector) and ``speakers.json`` into ``out_dir``."""
    from safetensors.numpy import save_file

    tensors = {name: np.ascontiguousarray(v, dtype=np.float32) for name, v in vectors.items()}
    save_file(tensors, str(out_dir / "speakers.safetensors"), metadata={"format": "pt", "kind": "qwen3-tts x-vectors"})
    os.chmod(out_dir / "speakers.safetensors", 0o644)
    meta = {
        name: {"clips": clips.get(name, []), "num_clips": len(clips.get(name, [])), "dim": int(vectors[name].shape[0]),
               **({"source": sources[name]} if sources and name in sources else {})}
        for name in vectors
    }
    (out_dir / "speakers.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")


def load_speakers(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a ``speakers.safetensors`` (or the folder holding it) into ``{name: float32 vector}``."""
    from safetensors import safe_open

    p = Path(path)
    if p.is_dir():
        p = p / "speakers.safetensors"
    if not p.is_file():
        raise UserError(f"{p} does not exist; run `qwen-tts-ext prepare` first")
    with safe_open(str(p), framework="np") as f:
        return {k: f.get_tensor(k).astype(np.float32) for k in f.keys()}
