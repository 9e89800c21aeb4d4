"""Checkpoint folders on disk: find them, read tensors lazily, write new ones atomically and in shards.

Every command that reads or writes a Hugging Face style checkpoint goes through this module:

- ``resolve_checkpoint("path/or/org/name")`` -> a local folder (a Hub id is downloaded if possible).
- ``weight_files(dir)`` -> ``model.safetensors`` or the shards named in ``model.safetensors.index.json``.
- ``LazyCheckpoint(dir)`` -> name -> tensor access over single or sharded safetensors. Shapes, dtypes
  and byte ranges come from the file headers, so nothing is loaded until asked for; ``get`` reads one
  tensor with ``safetensors.safe_open`` and ``read_into`` reads its raw bytes into a caller's buffer
  (no allocation, no memory map), which is what the streaming blend uses.
- ``SafetensorsStreamWriter`` / ``write_safetensors_sharded`` -> write ``model.safetensors`` (or
  ``model-0000i-of-0000n.safetensors`` + index) one tensor at a time; untouched tensors can be copied
  file-to-file by the kernel (``copy_tensor_from``) without passing through Python.
- ``copy_support_files`` (config, tokenizer, ``speech_tokenizer/``... everything but the weights),
  ``sha256_file``. Output folders are written through :mod:`qwen_tts_ext.outputs` (the one output policy).
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from qwen_tts_ext.errors import UserError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

# safetensors dtype strings <-> torch dtypes (the subset torch can hold).
ST_TO_TORCH: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
for _name, _attr in (("U16", "uint16"), ("U32", "uint32"), ("U64", "uint64")):
    if hasattr(torch, _attr):
        ST_TO_TORCH[_name] = getattr(torch, _attr)
TORCH_TO_ST: dict[torch.dtype, str] = {v: k for k, v in ST_TO_TORCH.items()}
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")

_HAS_PREADV = hasattr(os, "preadv")


def _read_into(fd: int, view: memoryview) -> int:
    data = os.read(fd, len(view))
    view[: len(data)] = data
    return len(data)


_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_COPY_CHUNK = 16 << 20


# --------------------------------------------------------------------------- locating checkpoints


def resolve_checkpoint(path_or_hub_id: str | os.PathLike, *, what: str = "checkpoint") -> Path:
    """Return the local folder of a checkpoint given a folder path or a Hugging Face Hub id.

    A local folder is used as is. Anything else that looks like ``org/name`` is fetched with
    ``huggingface_hub.snapshot_download`` (served from the local cache when offline). ``what`` names
    the argument in error messages (e.g. ``"--llm"``).
    """
    text = str(path_or_hub_id).strip()
    if not text:
        raise UserError(f"{what}: empty path; pass a checkpoint folder or a Hugging Face Hub id")
    path = Path(text).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise UserError(f"{what} {text} is a file; pass the checkpoint folder that contains it")
    if _HUB_ID.match(text) and not text.startswith((".", "~")):
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(repo_id=text)).resolve()
        except Exception as exc:  # offline, unknown repo, gated repo, ...
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(
                f"{what} {text!r} is not a local folder and fetching it from the Hugging Face Hub failed "
                f"({type(exc).__name__}: {reason[:160]}); pass a local checkpoint folder"
            ) from None
    raise UserError(f"{what} {text}: no such folder")


def weight_files(ckpt_dir: str | os.PathLike) -> list[Path]:
    """The safetensors files holding a checkpoint's weights, in index order (shards) or ``[model.safetensors]``."""
    ckpt_dir = Path(ckpt_dir)
    index = ckpt_dir / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{index} is not a valid safetensors index (no 'weight_map')") from None
        names = list(dict.fromkeys(weight_map.values()))
        files = [ckpt_dir / n for n in names]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise UserError(f"{ckpt_dir}: shards listed in {INDEX_FILE} are missing: {', '.join(missing[:5])}")
        return files
    single = ckpt_dir / SINGLE_FILE
    if single.is_file():
        return [single]
    others = sorted(ckpt_dir.glob("*.safetensors"))
    if len(others) == 1:
        return others
    if any(ckpt_dir.glob("*.bin")) or any(ckpt_dir.glob("*.pt")):
        raise UserError(f"{ckpt_dir} holds only PyTorch pickle weights; convert them to safetensors first")
    raise UserError(f"{ckpt_dir}: no {SINGLE_FILE} or {INDEX_FILE} (is this a checkpoint folder?)")


def read_config(ckpt_dir: str | os.PathLike) -> dict:
    """``config.json`` of a checkpoint folder as a dict (UserError if absent or invalid)."""
    path = Path(ckpt_dir) / "config.json"
    if not path.is_file():
        raise UserError(f"{ckpt_dir}: no config.json (is this a checkpoint folder?)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise UserError(f"{path} is not valid JSON") from None


# --------------------------------------------------------------------------- what a folder holds

# model_type in config.json -> what it is, in words (for "X is a ..., not a ..." messages)
_KINDS = {
    "qwen3_tts": "a Qwen3-TTS checkpoint",
    "qwen3_tts_tokenizer_12hz": "a Qwen3-TTS speech tokenizer (the speech_tokenizer/ folder of a checkpoint)",
    "qwen3": "a Qwen3 LLM",
    "qwen2": "a Qwen2 LLM",
    "llama": "a Llama LLM",
}


def describe_model_type(config: dict) -> str:
    mt = str(config.get("model_type") or "?")
    if mt == "qwen3_tts":
        return f"a Qwen3-TTS {config.get('tts_model_type', '?')} checkpoint"
    return _KINDS.get(mt, f"a {mt!r} model")


def require_tts_checkpoint(path: str | os.PathLike, *, what: str = "--model",
                           types: tuple[str, ...] = ("base", "custom_voice", "voice_design"),
                           llm_flag: str | None = "--llm") -> Path:
    """The local folder of a Qwen3-TTS checkpoint of one of ``types``, identified from ``config.json``
    alone (no weights are read); a UserError naming what the folder is otherwise. ``llm_flag``: the
    option a Qwen3 LLM given here belongs to (the message says so), None for a command without one."""
    folder = resolve_checkpoint(path, what=what)
    config = read_config(folder)
    if config.get("model_type") != "qwen3_tts":
        hint = f"; pass it as {llm_flag}" if llm_flag and config.get("model_type") == "qwen3" else ""
        raise UserError(f"{what} {folder} is {describe_model_type(config)}, not a Qwen3-TTS checkpoint{hint}")
    kind = str(config.get("tts_model_type", "base"))
    if kind not in types:
        raise UserError(f"{what} {folder} is {describe_model_type(config)}; this needs a "
                        f"{' or '.join(types)} checkpoint")
    return folder


def require_llm_checkpoint(path: str | os.PathLike, *, what: str = "--llm") -> Path:
    """The local folder of a causal LM (``model_type`` qwen3, or another LLM), never a TTS checkpoint."""
    folder = resolve_checkpoint(path, what=what)
    config = read_config(folder)
    if str(config.get("model_type", "")).startswith("qwen3_tts"):
        raise UserError(f"{what} {folder} is {describe_model_type(config)}, not an LLM; pass the Qwen3 LLM "
                        "(e.g. Qwen3-1.7B) whose FFNs are blended in")
    return folder


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class TensorLocation:
    """Where one tensor's bytes live: ``file[offset : offset + nbytes]`` (absolute offsets)."""

    name: str
    file: Path
    offset: int
    nbytes: int
    dtype: str  # safetensors spelling, e.g. "BF16"
    shape: tuple[int, ...]

    @property
    def torch_dtype(self) -> torch.dtype:
        return ST_TO_TORCH[self.dtype]


def read_safetensors_header(path: str | os.PathLike) -> tuple[dict[str, TensorLocation], dict[str, str]]:
    """Parse a safetensors header: ``({name: TensorLocation}, metadata)``; tensors ordered by offset."""
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise UserError(f"{path} is not a safetensors file (truncated header)")
        (size,) = struct.unpack("<Q", raw)
        if size > 100_000_000:
            raise UserError(f"{path} is not a safetensors file (header size {size})")
        try:
            header = json.loads(f.read(size))
        except ValueError:
            raise UserError(f"{path} is not a safetensors file (bad header)") from None
    base = 8 + size
    metadata = header.pop("__metadata__", None) or {}
    entries = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
    locs: dict[str, TensorLocation] = {}
    for name, info in entries:
        begin, end = info["data_offsets"]
        locs[name] = TensorLocation(name, path, base + begin, end - begin, info["dtype"], tuple(info["shape"]))
    return locs, dict(metadata)


class LazyCheckpoint:
    """Name -> tensor access over a checkpoint's safetensors files, loading nothing until asked.

    >>> with LazyCheckpoint("ckpt_dir") as ck:
    ...     ck.shape("talker.model.norm.weight"), ck.dtype("talker.model.norm.weight")
    ...     w = ck.get("talker.model.norm.weight")

    ``path`` is a checkpoint folder (single or sharded) or one ``.safetensors`` file.
    """

    def __init__(self, path: str | os.PathLike):
        path = Path(path)
        self.root = path if path.is_dir() else path.parent
        self.files = weight_files(path) if path.is_dir() else [path]
        self._locs: dict[str, TensorLocation] = {}
        self._metadata: dict[str, str] = {}
        for file in self.files:
            locs, meta = read_safetensors_header(file)
            for name in locs:
                if name in self._locs:
                    raise UserError(f"{self.root}: tensor {name} appears in two shards")
            self._locs.update(locs)
            for k, v in meta.items():
                self._metadata.setdefault(k, v)
        self._handles: dict[Path, Any] = {}
        self._fds: dict[Path, int] = {}

    # context manager ---------------------------------------------------------------------------
    def __enter__(self) -> "LazyCheckpoint":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release open files (safe to call twice)."""
        self._handles.clear()
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()

    # header facts --------------------------------------------------------------------------------
    def keys(self) -> list[str]:
        """Tensor names, shard by shard, in on-disk order."""
        return list(self._locs)

    def __contains__(self, name: object) -> bool:
        return name in self._locs

    def __len__(self) -> int:
        return len(self._locs)

    def _loc(self, name: str) -> TensorLocation:
        try:
            return self._locs[name]
        except KeyError:
            raise KeyError(f"{name} is not in {self.root}") from None

    def location(self, name: str) -> TensorLocation:
        return self._loc(name)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._loc(name).shape

    def dtype(self, name: str) -> torch.dtype:
        return self._loc(name).torch_dtype

    def st_dtype(self, name: str) -> str:
        """The dtype as safetensors spells it ("BF16", "F32", ...)."""
        return self._loc(name).dtype

    def nbytes(self, name: str) -> int:
        return self._loc(name).nbytes

    @property
    def total_bytes(self) -> int:
        return sum(loc.nbytes for loc in self._locs.values())

    def metadata(self) -> dict[str, str]:
        """The safetensors ``__metadata__`` (first shard wins on conflicting keys)."""
        return dict(self._metadata)

    def config(self) -> dict:
        return read_config(self.root)

    # data --------------------------------------------------------------------------------------
    def get(self, name: str, device: str | torch.device = "cpu") -> torch.Tensor:
        """Load one tensor (``safetensors.safe_open``)."""
        from safetensors import safe_open

        file = self._loc(name).file
        handle = self._handles.get(file)
        if handle is None:
            handle = self._handles[file] = safe_open(str(file), framework="pt", device=str(device))
        return handle.get_tensor(name)

    def _fd(self, file: Path) -> int:
        fd = self._fds.get(file)
        if fd is None:
            fd = self._fds[file] = os.open(file, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        return fd

    def read_into(self, name: str, out: torch.Tensor) -> torch.Tensor:
        """Read a tensor's raw bytes into the CPU ``uint8`` buffer ``out`` (at least ``nbytes`` long).

        Returns a view of ``out`` with the tensor's dtype and shape. No allocation and no memory map:
        the pages go through the page cache only, so resident memory stays at the buffer size.
        """
        loc = self._loc(name)
        if out.dtype != torch.uint8 or out.device.type != "cpu" or not out.is_contiguous():
            raise ValueError("read_into needs a contiguous CPU uint8 buffer")
        if out.numel() < loc.nbytes:
            raise ValueError(f"buffer of {out.numel()} bytes is too small for {name} ({loc.nbytes} bytes)")
        view = memoryview(out.numpy())[: loc.nbytes]
        fd, done = self._fd(loc.file), 0
        while done < loc.nbytes:
            if _HAS_PREADV:
                n = os.preadv(fd, [view[done:]], loc.offset + done)
            else:  # e.g. macOS / Windows: seek + readinto on the same descriptor
                os.lseek(fd, loc.offset + done, os.SEEK_SET)
                n = os.readv(fd, [view[done:]]) if hasattr(os, "readv") else _read_into(fd, view[done:])
            if n <= 0:
                raise UserError(f"{loc.file} is truncated (reading {name})")
            done += n
        typed = out[: loc.nbytes]
        return typed.view(loc.torch_dtype).view(loc.shape) if loc.nbytes else torch.empty(loc.shape, dtype=loc.torch_dtype)


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class TensorSpec:
    """A tensor to be written: its name, safetensors dtype and shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        n = ST_TO_TORCH[self.dtype].itemsize
        for d in self.shape:
            n *= d
        return n

    @classmethod
    def of(cls, name: str, tensor: torch.Tensor) -> "TensorSpec":
        return cls(name, TORCH_TO_ST[tensor.dtype], tuple(tensor.shape))


def plan_shards(specs: list[TensorSpec], max_shard_bytes: int | None) -> list[list[TensorSpec]]:
    """Split ``specs`` (in order) into shards of at most ``max_shard_bytes`` (one shard if None)."""
    if not max_shard_bytes:
        return [list(specs)]
    shards: list[list[TensorSpec]] = [[]]
    size = 0
    for spec in specs:
        if shards[-1] and size + spec.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(spec)
        size += spec.nbytes
    return shards


def shard_file_names(n: int) -> list[str]:
    """``["model.safetensors"]`` for one shard, else the Hugging Face ``model-0000i-of-0000n`` names."""
    if n == 1:
        return [SINGLE_FILE]
    return [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]


def _header_bytes(specs: list[TensorSpec], metadata: Mapping[str, str] | None) -> bytes:
    header: dict[str, Any] = {}
    if metadata:
        bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise ValueError(f"safetensors metadata must map str -> str; bad keys: {bad[:3]}")
        header["__metadata__"] = dict(metadata)
    offset = 0
    for spec in specs:
        header[spec.name] = {"dtype": spec.dtype, "shape": list(spec.shape), "data_offsets": [offset, offset + spec.nbytes]}
        offset += spec.nbytes
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # data starts 8-byte aligned, as safetensors itself writes it
    return struct.pack("<Q", len(raw)) + raw


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The raw little-endian bytes of a tensor (a view when it is already contiguous on the CPU)."""
    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous().reshape(-1)
    if t.numel() == 0:
        return memoryview(b"")
    return memoryview(t.view(torch.uint8).numpy())


class SafetensorsStreamWriter:
    """Write tensors whose names, dtypes and shapes are known up front, one at a time, shard by shard.

    Memory use is whatever the caller holds for the current tensor. Tensors must be written in the
    order of ``specs``. ``max_shard_bytes=None`` writes one ``model.safetensors``; otherwise shards
    plus ``model.safetensors.index.json``. ``shards`` may instead give an explicit layout (lists of
    names, e.g. the input checkpoint's) with ``shard_names``.

        with SafetensorsStreamWriter(out_dir, specs, metadata={"format": "pt"}) as w:
            for spec in specs:
                w.write(spec.name, tensor)             # or w.copy_tensor_from(spec.name, location)
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        specs: Iterable[TensorSpec],
        *,
        max_shard_bytes: int | None = None,
        metadata: Mapping[str, str] | None = None,
        shards: list[list[str]] | None = None,
        shard_names: list[str] | None = None,
    ):
        self.out_dir = Path(out_dir)
        specs = list(specs)
        by_name = {s.name: s for s in specs}
        if len(by_name) != len(specs):
            raise ValueError("duplicate tensor names")
        if shards is not None:
            layout = [[by_name[n] for n in shard] for shard in shards]
            if sum(len(s) for s in layout) != len(specs):
                raise ValueError("explicit shard layout must list every tensor exactly once")
        else:
            layout = plan_shards(specs, max_shard_bytes)
        self.shard_names = shard_names or shard_file_names(len(layout))
        if len(self.shard_names) != len(layout):
            raise ValueError("one shard name per shard")
        self.metadata = dict(metadata or {})
        self._queue: list[tuple[int, TensorSpec]] = [(i, s) for i, shard in enumerate(layout) for s in shard]
        self._layout = layout
        self._pos = 0
        self._shard = -1
        self._fh = None
        self._remaining = 0
        self._files: list[Path] | None = None
        self._pending: list | None = None  # [file, start, end]: adjacent tensors copied in one call
        self._copy_buf: bytearray | None = None
        self.bytes_written = 0
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> "SafetensorsStreamWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        self._pending = None
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    @property
    def next_name(self) -> str | None:
        return self._queue[self._pos][1].name if self._pos < len(self._queue) else None

    def _advance(self, name: str, nbytes: int) -> TensorSpec:
        if self._pos >= len(self._queue):
            raise ValueError(f"{name}: all planned tensors were already written")
        shard, spec = self._queue[self._pos]
        if spec.name != name:
            raise ValueError(f"tensors must be written in plan order: expected {spec.name}, got {name}")
        if nbytes != spec.nbytes:
            raise ValueError(f"{name}: {nbytes} bytes given, {spec.nbytes} planned ({spec.dtype} {spec.shape})")
        if shard != self._shard:
            self._flush_copies()
            self._finish_shard()
            self._shard = shard
            self._fh = open(self.out_dir / self.shard_names[shard], "wb", buffering=0)
            self._fh.write(_header_bytes(self._layout[shard], self.metadata))
            self._remaining = sum(s.nbytes for s in self._layout[shard])
        self._pos += 1
        self._remaining -= nbytes
        self.bytes_written += nbytes
        return spec

    def _finish_shard(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def write(self, name: str, tensor: torch.Tensor | bytes | memoryview) -> None:
        """Append one tensor (its dtype and shape must match the plan)."""
        if isinstance(tensor, torch.Tensor):
            spec = self._queue[self._pos][1] if self._pos < len(self._queue) else None
            if spec is not None and spec.name == name and (
                TORCH_TO_ST.get(tensor.dtype) != spec.dtype or tuple(tensor.shape) != spec.shape
            ):
                raise ValueError(
                    f"{name}: got {tensor.dtype} {tuple(tensor.shape)}, planned {spec.dtype} {spec.shape}"
                )
            data = tensor_bytes(tensor)
        else:
            data = memoryview(tensor).cast("B")
        self._flush_copies()
        self._advance(name, data.nbytes)
        view, done = data, 0
        while done < data.nbytes:
            done += self._fh.write(view[done:])

    def copy_tensor_from(self, name: str, src: TensorLocation) -> None:
        """Append a tensor by copying its bytes file-to-file (kernel ``copy_file_range`` when possible)."""
        if self._pos < len(self._queue) and src.dtype != self._queue[self._pos][1].dtype:
            raise ValueError(f"{name}: source dtype {src.dtype} differs from the plan")
        p = self._pending
        if p is not None and (p[0] != src.file or p[2] != src.offset):
            self._flush_copies()
        self._advance(name, src.nbytes)  # flushes on a shard change
        if self._pending is None:
            self._pending = [src.file, src.offset, src.offset + src.nbytes]
        else:  # adjacent in the source: one copy for the whole run of untouched tensors
            self._pending[2] += src.nbytes

    def _flush_copies(self) -> None:
        if self._pending is None:
            return
        file, start, end = self._pending
        self._pending = None
        self._copy_buf = copy_byte_range(file, start, end - start, self._fh, self._copy_buf)

    def close(self) -> list[Path]:
        """Finish the last shard, write the index (several shards) and return the files written."""
        if self._files is not None:
            return self._files
        self._flush_copies()
        if self._pos != len(self._queue):
            missing = len(self._queue) - self._pos
            raise ValueError(f"{missing} planned tensors were never written (next: {self.next_name})")
        self._finish_shard()
        for i, shard in enumerate(self._layout):
            if not shard:  # an empty checkpoint still gets a valid (header-only) file
                (self.out_dir / self.shard_names[i]).write_bytes(_header_bytes([], self.metadata))
        files = [self.out_dir / n for n in self.shard_names]
        if len(files) > 1:
            weight_map = {s.name: self.shard_names[i] for i, shard in enumerate(self._layout) for s in shard}
            index = {"metadata": {"total_size": self.bytes_written}, "weight_map": weight_map}
            (self.out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2), encoding="utf-8")
        self._files = files
        return files


def patch_header_placeholders(path: str | os.PathLike, replacements: Mapping[str, str]) -> int:
    """Replace placeholder strings in a safetensors header in place; each value must have its placeholder's length.

    This lets a writer put values that are only known at the end (e.g. the sources' sha256, hashed
    while the weights stream out) into the metadata without rewriting the file. Returns the number
    of replacements made.
    """
    with open(path, "r+b") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = f.read(size)
        count = 0
        for old, new in replacements.items():
            ob, nb = old.encode("utf-8"), new.encode("utf-8")
            if len(ob) != len(nb):
                raise ValueError(f"replacement for {old!r} must be {len(ob)} bytes, got {len(nb)}")
            count += header.count(ob)
            header = header.replace(ob, nb)
        f.seek(8)
        f.write(header)
    return count


_NO_COPY_FILE_RANGE: set[tuple[int, int]] = set()  # (src dev, dst dev) pairs where the kernel refused


def copy_byte_range(
    src: Path, offset: int, nbytes: int, dst_fh, buf: bytearray | None = None
) -> bytearray | None:
    """Copy ``src[offset:offset+nbytes]`` to the current position of the open binary file ``dst_fh``.

    Uses the kernel's ``copy_file_range`` (no data through Python) when the filesystems allow it,
    else read/write through ``buf``, allocated only when needed. Returns the buffer for reuse.
    """
    with open(src, "rb", buffering=0) as fin:
        left, pos = nbytes, offset
        devs = (os.fstat(fin.fileno()).st_dev, os.fstat(dst_fh.fileno()).st_dev)
        if hasattr(os, "copy_file_range") and devs not in _NO_COPY_FILE_RANGE:
            try:
                while left:
                    n = os.copy_file_range(fin.fileno(), dst_fh.fileno(), min(left, 1 << 30), pos)
                    if n <= 0:
                        break
                    left -= n
                    pos += n
            except OSError:  # e.g. across filesystems: remember, and fall back to read/write
                _NO_COPY_FILE_RANGE.add(devs)
        if left:
            fin.seek(pos)
            if buf is None:
                buf = bytearray(_COPY_CHUNK)
            view = memoryview(buf)
            while left:
                n = fin.readinto(view[: min(left, len(buf))])
                if not n:
                    raise UserError(f"{src} is truncated")
                dst_fh.write(view[:n])
                left -= n
    return buf


def write_safetensors_sharded(
    tensors: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]],
    out_dir: str | os.PathLike,
    max_shard_bytes: int | None = None,
    metadata: Mapping[str, str] | None = None,
) -> list[Path]:
    """Write tensors as ``model.safetensors`` or as shards + index (Hugging Face layout).

    ``tensors`` is a mapping, or any iterable of ``(name, tensor)`` pairs (e.g. a generator that
    produces tensors lazily); at most one shard's worth of tensors is held at a time.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "pt", **dict(metadata or {})}
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    if isinstance(tensors, Mapping):
        specs = [TensorSpec.of(n, t) for n, t in tensors.items()]
        with SafetensorsStreamWriter(out_dir, specs, max_shard_bytes=max_shard_bytes, metadata=metadata) as w:
            for name, t in items:
                w.write(name, t)
        return [out_dir / n for n in w.shard_names]

    # Unknown sizes up front: gather one shard at a time under temporary names, rename at the end.
    shard_paths: list[Path] = []
    weight_map: dict[str, int] = {}
    pending: list[tuple[str, torch.Tensor]] = []
    pending_bytes, total = 0, 0

    def flush() -> None:
        nonlocal pending, pending_bytes
        if not pending:
            return
        path = out_dir / f".shard-{len(shard_paths):05d}.tmp"
        specs = [TensorSpec.of(n, t) for n, t in pending]
        with SafetensorsStreamWriter(out_dir, specs, metadata=metadata, shard_names=[path.name]) as w:
            for n, t in pending:
                w.write(n, t)
                weight_map[n] = len(shard_paths)
        shard_paths.append(path)
        pending, pending_bytes = [], 0

    for name, t in items:
        if name in weight_map or any(name == n for n, _ in pending):
            raise ValueError(f"duplicate tensor name {name}")
        nbytes = t.numel() * t.element_size()
        if max_shard_bytes and pending and pending_bytes + nbytes > max_shard_bytes:
            flush()
        pending.append((name, t))
        pending_bytes += nbytes
        total += nbytes
    flush()
    if not shard_paths:
        with SafetensorsStreamWriter(out_dir, [], metadata=metadata):
            pass
        return [out_dir / SINGLE_FILE]
    names = shard_file_names(len(shard_paths))
    finals = [out_dir / n for n in names]
    for tmp, final in zip(shard_paths, finals):
        os.replace(tmp, final)
    if len(finals) > 1:
        index = {"metadata": {"total_size": total},
                 "weight_map": {n: names[i] for n, i in weight_map.items()}}
        (out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2), encoding="utf-8")
    return finals


# --------------------------------------------------------------------------- folders

# Never copied by ``copy_support_files``: the weights and VCS / download-cache clutter.
WEIGHT_PATTERNS = ("*.safetensors", INDEX_FILE, "pytorch_model*.bin", "pytorch_model.bin.index.json")
CLUTTER_PATTERNS = (".git", ".gitattributes", ".cache", ".huggingface", "__pycache__", ".DS_Store")


def copy_support_files(
    src_dir: str | os.PathLike, dst_dir: str | os.PathLike, *, exclude: Iterable[str] = ()
) -> list[Path]:
    """Copy everything a checkpoint needs except its root weights into ``dst_dir``.

    That is config.json, generation_config.json, tokenizer and preprocessor files, and whole
    sub-folders such as ``speech_tokenizer/`` (its own weights included). Root ``*.safetensors``,
    the safetensors index and ``pytorch_model*.bin`` are skipped, as is VCS/cache clutter and any
    root name matching a glob in ``exclude`` (e.g. ``"README.md"``). Symlinks (Hugging Face cache
    snapshots) are followed. Returns the copied top-level paths in ``dst_dir``.
    """
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    dst_dir.mkdir(parents=True, exist_ok=True)
    skip = (*WEIGHT_PATTERNS, *CLUTTER_PATTERNS, *exclude)
    copied = []
    for item in sorted(src_dir.iterdir()):
        if any(fnmatch.fnmatch(item.name, pat) for pat in skip):
            continue
        dst = dst_dir / item.name
        if item.is_dir():
            shutil.copytree(item, dst, symlinks=False, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns(*CLUTTER_PATTERNS))
        else:
            shutil.copy2(item, dst)
        copied.append(dst)
    return copied


def sha256_file(path: str | os.PathLike, *, chunk_bytes: int = 16 << 20, progress=None) -> str:
    """Hex sha256 of a file, read in chunks (``progress`` is an optional callable fed byte counts)."""
    h = hashlib.sha256()
    buf = bytearray(chunk_bytes)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(view)
            if not n:
                break
            h.update(view[:n])
            if progress is not None:
                progress(n)
    return h.hexdigest()


def _hash_cache_file() -> Path | None:
    if os.environ.get("QWEN_TTS_EXT_HASH_CACHE", "1").lower() in ("0", "false", "no", "off"):
        return None
    root = os.environ.get("QWEN_TTS_EXT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "qwen-tts-ext"
    )
    return Path(root) / "sha256.json"


def sha256_file_cached(path: str | os.PathLike, *, progress=None) -> str:
    """``sha256_file`` remembered per (real path, size, mtime, inode), so re-blending the same parents
    (an alpha sweep) does not hash gigabytes again. The cache lives in ``$QWEN_TTS_EXT_CACHE`` (default
    ``~/.cache/qwen-tts-ext/sha256.json``); ``QWEN_TTS_EXT_HASH_CACHE=0`` turns it off. A Hugging Face
    cache blob's name is its sha256 and is used directly.
    """
    known = hf_cache_sha256(path)
    if known:
        return known
    real = os.path.realpath(path)
    st = os.stat(real)
    key = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}
    cache_file = _hash_cache_file()
    cache: dict = {}
    if cache_file is not None and cache_file.is_file():
        with contextlib.suppress(OSError, ValueError):
            cache = json.loads(cache_file.read_text(encoding="utf-8"))
        hit = cache.get(real)
        if isinstance(hit, dict) and all(hit.get(k) == v for k, v in key.items()) and hit.get("sha256"):
            return hit["sha256"]
    digest = sha256_file(real, progress=progress)
    if cache_file is not None:
        with contextlib.suppress(OSError, ValueError):
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            if cache_file.is_file():  # merge with entries written meanwhile
                cache = {**json.loads(cache_file.read_text(encoding="utf-8")), **cache}
            cache[real] = {**key, "sha256": digest}
            tmp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(cache, indent=1), encoding="utf-8")
            os.replace(tmp, cache_file)
    return digest


def hf_cache_sha256(path: str | os.PathLike) -> str | None:
    """The sha256 of a Hugging Face cache file, free: LFS blobs are named by it. None otherwise."""
    real = Path(os.path.realpath(path))
    if real.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{64}", real.name):
        return real.name
    return None


def drop_empty_model_type(config: dict) -> dict:
    """Fix a Qwen3-TTS ``config.json`` dict in place: ``save_pretrained`` writes
    ``speaker_encoder_config.model_type = ""``, which the stock loader then rejects."""
    sec = config.get("speaker_encoder_config")
    if isinstance(sec, dict) and sec.get("model_type", None) == "":
        del sec["model_type"]
    return config
