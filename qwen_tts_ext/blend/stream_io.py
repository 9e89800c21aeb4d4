"""The blend's byte-level safetensors I/O: raw reads into reused buffers, a streaming writer, source hashes.

``qwen-tts-ext blend`` rewrites a multi-gigabyte checkpoint while holding about two FFN tensors in
memory, and this module is how: ``StreamingCheckpoint`` (a :class:`~qwen_tts_ext.checkpoint_io.LazyCheckpoint`
that also reads a tensor's bytes straight into a caller's buffer with ``preadv``: no allocation, no
memory map), ``SafetensorsStreamWriter`` (tensors written one at a time in a planned layout; untouched
ones copied file to file by the kernel, ``copy_byte_range``), ``patch_header_placeholders`` (values
known only at the end, such as the sources' sha256, written into the header in place) and
``sha256_file_cached`` / ``hf_cache_sha256`` (the parents' digests for the provenance, remembered
across an alpha sweep). Only the blend (``lerp``, ``mri``, ``pipeline``, ``runtime``, ``bench``) uses
it; what every stage shares (finding checkpoints, header-only reading, sharded writing) is in
:mod:`qwen_tts_ext.checkpoint_io`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import struct
from pathlib import Path
from typing import Iterable, Mapping

import torch

from qwen_tts_ext.checkpoint_io import (
    TORCH_TO_ST,
    LazyCheckpoint,
    TensorLocation,
    TensorSpec,
    plan_shards,
    safetensors_header,
    shard_file_names,
    tensor_bytes,
    write_fully,
    write_index,
)
from qwen_tts_ext.errors import UserError

_HAS_PREADV = hasattr(os, "preadv")
_COPY_CHUNK = 16 << 20


def _read_into(fd: int, view: memoryview) -> int:
    """``readv`` for a platform without it (Windows): one ``os.read`` copied into ``view``."""
    data = os.read(fd, len(view))
    view[: len(data)] = data
    return len(data)


# --------------------------------------------------------------------------- reading


class StreamingCheckpoint(LazyCheckpoint):
    """A :class:`LazyCheckpoint` that also reads tensors raw, by byte range, into a caller's buffer.

    >>> with StreamingCheckpoint("ckpt_dir") as ck:
    ...     buf = torch.empty(ck.nbytes(name), dtype=torch.uint8)
    ...     w = ck.read_into(name, buf)        # a view of buf with the tensor's dtype and shape
    """

    def __init__(self, path: str | os.PathLike):
        super().__init__(path)
        self._fds: dict[Path, int] = {}

    def close(self) -> None:
        """Release open files (safe to call twice)."""
        super().close()
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()

    def st_dtype(self, name: str) -> str:
        """The dtype as safetensors spells it ("BF16", "F32", ...)."""
        return self._loc(name).dtype

    def nbytes(self, name: str) -> int:
        return self._loc(name).nbytes

    @property
    def total_bytes(self) -> int:
        return sum(loc.nbytes for loc in self._locs.values())

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
            self._fh.write(safetensors_header(self._layout[shard], self.metadata))
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
        write_fully(self._fh, data)

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
                (self.out_dir / self.shard_names[i]).write_bytes(safetensors_header([], self.metadata))
        files = [self.out_dir / n for n in self.shard_names]
        if len(files) > 1:
            weight_map = {s.name: self.shard_names[i] for i, shard in enumerate(self._layout) for s in shard}
            write_index(self.out_dir, weight_map, self.bytes_written)
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


# --------------------------------------------------------------------------- source hashes


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
