"""Checkpoint folders every stage shares: find them, read their headers, write new weights in shards.

Prep, training, export, blend, synthesis and evaluation all meet Hugging Face style checkpoint
folders, and this module is their one meeting point: ``resolve_checkpoint`` (a folder or a Hub id ->
a local folder), ``require_tts_checkpoint`` / ``require_llm_checkpoint`` (what a folder holds, from
``config.json`` alone), ``weight_files`` (``model.safetensors`` or the indexed shards),
``LazyCheckpoint`` (names, shapes and dtypes from the safetensors headers; one tensor at a time via
``safetensors.safe_open``), ``write_safetensors_sharded`` (``model.safetensors`` or Hugging Face
shards + index, one shard held at a time), ``copy_support_files`` (everything but the root weights)
and ``drop_empty_model_type``. The raw byte-range reads, the streaming writer with its file-to-file
copy, header patching and the sha256 cache serve the blend alone and live next to it, in
:mod:`qwen_tts_ext.blend.stream_io`. What stays (about 470 lines) is used outside the blend; the
shard plan and the header bytes are defined here once, for the export's writer and the blend's.
Output folders are published through :mod:`qwen_tts_ext.outputs`.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, TypeVar

import torch

from qwen_tts_ext.errors import UserError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

# safetensors dtype strings <-> torch dtypes (the subset torch can hold).
ST_TO_TORCH: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
for _name, _attr in (("U16", "uint16"), ("U32", "uint32"), ("U64", "uint64")):
    if hasattr(torch, _attr):
        ST_TO_TORCH[_name] = getattr(torch, _attr)
TORCH_TO_ST: dict[torch.dtype, str] = {v: k for k, v in ST_TO_TORCH.items()}

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


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

    ``path`` is a checkpoint folder (single or sharded) or one ``.safetensors`` file. The blend's
    raw reads into caller buffers are added by :class:`qwen_tts_ext.blend.stream_io.StreamingCheckpoint`.
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

    # context manager ---------------------------------------------------------------------------
    def __enter__(self) -> "LazyCheckpoint":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release open files (safe to call twice)."""
        self._handles.clear()

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
        """Where the tensor's bytes are (file, offset, nbytes) and its dtype and shape, from the header."""
        return self._loc(name)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._loc(name).shape

    def dtype(self, name: str) -> torch.dtype:
        return self._loc(name).torch_dtype

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


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class TensorSpec:
    """A tensor to be written: its name, safetensors dtype and shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return ST_TO_TORCH[self.dtype].itemsize * math.prod(self.shape)

    @classmethod
    def of(cls, name: str, tensor: torch.Tensor) -> "TensorSpec":
        return cls(name, TORCH_TO_ST[tensor.dtype], tuple(tensor.shape))


@dataclass(frozen=True)
class Deferred:
    """A tensor to write without holding it: dtype and shape up front, its bytes made piece by piece while
    it is written (``pieces()`` yields CPU tensors of ``dtype`` whose bytes, in order, are the tensor's).
    The export writes every tensor this way, so it holds one piece (:data:`PIECE_BYTES`) beyond training."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    pieces: Callable[[], Iterator[torch.Tensor]]

    def numel(self) -> int:
        return math.prod(self.shape)

    def element_size(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()


PIECE_BYTES = 64 << 20  # what one piece of a Deferred conversion holds at most (a row block of the tensor)


def converted(tensor: torch.Tensor | Deferred, dtype: torch.dtype, piece_bytes: int = PIECE_BYTES) -> Deferred:
    """``tensor`` cast to ``dtype`` on the CPU, a block of rows at a time (a Deferred is cast piece by piece)."""
    if isinstance(tensor, Deferred):
        return Deferred(dtype, tensor.shape, lambda: (p.to("cpu", dtype).contiguous() for p in tensor.pieces()))
    t = tensor.detach()
    shape = tuple(t.shape)

    def pieces() -> Iterator[torch.Tensor]:
        if t.dim() == 0 or t.numel() == 0:
            yield t.to("cpu", dtype).contiguous()
            return
        row = max(1, t[0].numel() * max(t.element_size(), torch.empty((), dtype=dtype).element_size()))
        step = max(1, piece_bytes // row)
        for i in range(0, t.shape[0], step):
            yield t[i:i + step].to("cpu", dtype).contiguous()

    return Deferred(dtype, shape, pieces)


_T = TypeVar("_T")


def split_shards(items: Iterable[_T], nbytes: Callable[[_T], int], max_shard_bytes: int | None) -> Iterator[list[_T]]:
    """Group ``items`` (in order, lazily) into shards of at most ``max_shard_bytes`` (one shard if None;
    a single larger item gets a shard of its own). Always yields at least one, possibly empty, shard."""
    shard: list[_T] = []
    size = 0
    for item in items:
        n = nbytes(item)
        if max_shard_bytes and shard and size + n > max_shard_bytes:
            yield shard
            shard, size = [], 0
        shard.append(item)
        size += n
    yield shard


def plan_shards(specs: list[TensorSpec], max_shard_bytes: int | None) -> list[list[TensorSpec]]:
    """Split ``specs`` (in order) into shards of at most ``max_shard_bytes`` (one shard if None)."""
    return list(split_shards(specs, lambda s: s.nbytes, max_shard_bytes))


def shard_file_names(n: int) -> list[str]:
    """``["model.safetensors"]`` for one shard, else the Hugging Face ``model-0000i-of-0000n`` names."""
    if n == 1:
        return [SINGLE_FILE]
    return [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]


def safetensors_header(specs: list[TensorSpec], metadata: Mapping[str, str] | None) -> bytes:
    """The bytes a safetensors file starts with: size, JSON header (``specs`` laid out back to back)."""
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


def write_fully(fh, data: memoryview) -> None:
    """Write all of ``data`` to the unbuffered binary file ``fh`` (raw writes may be partial)."""
    done = 0
    while done < data.nbytes:
        done += fh.write(data[done:])


def write_index(out_dir: Path, weight_map: Mapping[str, str], total_bytes: int) -> None:
    """``model.safetensors.index.json``: which shard holds each tensor, and the total tensor bytes."""
    index = {"metadata": {"total_size": total_bytes}, "weight_map": dict(weight_map)}
    (out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2), encoding="utf-8")


def write_safetensors_sharded(
    tensors: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]],
    out_dir: str | os.PathLike,
    max_shard_bytes: int | None = None,
    metadata: Mapping[str, str] | None = None,
) -> list[Path]:
    """Write tensors as ``model.safetensors`` or as shards + index (Hugging Face layout).

    ``tensors`` is a mapping, or any iterable of ``(name, tensor)`` pairs (e.g. a generator that
    produces tensors lazily); at most one shard's worth of tensors is held at a time, and a
    :class:`Deferred` value is not held at all: its pieces are made and written one after another.
    Sizes need not be known up front: shards are written under temporary names and renamed at the end.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "pt", **dict(metadata or {})}
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    seen: set[str] = set()

    def unique(pairs: Iterable[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
        for name, t in pairs:
            if name in seen:
                raise ValueError(f"duplicate tensor name {name}")
            seen.add(name)
            yield name, t

    temps: list[Path] = []
    shard_of: dict[str, int] = {}
    total = 0
    for i, shard in enumerate(split_shards(unique(items), lambda kv: kv[1].numel() * kv[1].element_size(),
                                           max_shard_bytes)):
        temps.append(out_dir / f".shard-{i:05d}.tmp")
        with open(temps[-1], "wb", buffering=0) as fh:
            fh.write(safetensors_header([TensorSpec.of(n, t) for n, t in shard], metadata))
            for name, t in shard:
                written = 0
                for piece in t.pieces() if isinstance(t, Deferred) else (t,):
                    data = tensor_bytes(piece)
                    write_fully(fh, data)
                    written += data.nbytes
                if isinstance(t, Deferred) and written != t.numel() * t.element_size():
                    raise ValueError(f"{name}: its pieces gave {written} bytes, its shape and dtype say "
                                     f"{t.numel() * t.element_size()}")
                shard_of[name] = i
                total += written
    names = shard_file_names(len(temps))
    finals = [out_dir / n for n in names]
    for tmp, final in zip(temps, finals):
        os.replace(tmp, final)
    if len(finals) > 1:
        write_index(out_dir, {n: names[i] for n, i in shard_of.items()}, total)
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


def drop_empty_model_type(config: dict) -> dict:
    """Fix a Qwen3-TTS ``config.json`` dict in place: ``save_pretrained`` writes
    ``speaker_encoder_config.model_type = ""``, which the stock loader then rejects."""
    sec = config.get("speaker_encoder_config")
    if isinstance(sec, dict) and sec.get("model_type", None) == "":
        del sec["model_type"]
    return config
