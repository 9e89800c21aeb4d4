"""The blend arithmetic and the streaming checkpoint writer.

``Lerper`` computes ``(1 - alpha) * W_tts + alpha * W_llm`` in float32, chunk by cache-sized chunk,
in two small buffers it reuses (fresh 50 MB float32 temporaries per tensor cost more in page faults
and memory traffic than the arithmetic itself), casting each chunk straight back to the TTS dtype. The same object serves the streaming CLI and
the in-memory ``runtime`` blend, so both produce bit-identical tensors.

``stream_blend`` walks the TTS checkpoint tensor by tensor in on-disk order: tensors outside the
plan (and blended tensors whose alpha is 0) are copied file-to-file by the kernel, byte for byte;
blended tensors are read raw into two reused byte buffers (no memory map, no allocation), mixed in
place and written. Peak memory is two raw buffers of the largest FFN tensor plus 2 MiB, whatever
the model size.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping

import torch

from qwen_tts_ext.blend.plan import BlendEntry, BlendPlan
from qwen_tts_ext.blend.stream_io import SafetensorsStreamWriter, StreamingCheckpoint
from qwen_tts_ext.checkpoint_io import TensorSpec, plan_shards

CPU_CHUNK = 1 << 18  # elements per step on the CPU: 1 MiB float32 per buffer, stays in cache
GPU_CHUNK = 1 << 24


@contextlib.contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run torch CPU ops on ``n`` threads inside the block (restored afterwards).

    The blend's chunks are cache-sized; splitting each over several OpenMP threads costs more in
    synchronisation than it saves, and on a busy machine (a waiting thread descheduled) it was
    measured 50-80x slower than one thread.
    """
    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if before != n:
            torch.set_num_threads(before)


class Lerper:
    """Float32 linear interpolation in cache-sized chunks, with buffers reused across tensors.

    Nothing tensor-sized is ever allocated in float32: each chunk of both parents is converted into
    two small float32 buffers, mixed there and cast straight into the output, which may be the TTS
    tensor itself (in-place blend).
    """

    def __init__(self, device: str | torch.device = "cpu", chunk: int | None = None):
        self.device = torch.device(device)
        self.chunk = chunk or (CPU_CHUNK if self.device.type == "cpu" else GPU_CHUNK)
        self._bufs: dict[tuple[str, torch.dtype], torch.Tensor] = {}

    def buffer(self, key: str, numel: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A flat buffer of at least ``numel`` elements, grown (never shrunk) and reused across calls."""
        buf = self._bufs.get((key, dtype))
        if buf is None or buf.numel() < numel:
            self._bufs.pop((key, dtype), None)
            buf = torch.empty(numel, dtype=dtype, device=self.device)
            self._bufs[(key, dtype)] = buf
        return buf[:numel]

    @staticmethod
    def mix(x: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
        """In place: ``x = (1 - alpha) * x + alpha * y`` in float32, exactly as written (no fused multiply-add).

        alpha 0 and 1 return ``x`` and ``y`` untouched, so the ends reproduce a parent bit for bit
        (``0 * inf`` would otherwise poison them).
        """
        if alpha == 0.0:
            return x
        if alpha == 1.0:
            return y
        torch.mul(x, 1.0 - alpha, out=x)
        torch.mul(y, alpha, out=y)
        return x.add_(y)

    def _chunks(self, *tensors: torch.Tensor):
        flat = []
        for t in tensors:
            if not t.is_contiguous():
                raise ValueError("the blend needs contiguous tensors")
            flat.append(t.view(-1))
        n = flat[0].numel()
        x, y = self.buffer("x", min(n, self.chunk)), self.buffer("y", min(n, self.chunk))
        for start in range(0, n, self.chunk):
            stop = min(n, start + self.chunk)
            yield x[: stop - start], y[: stop - start], [f[start:stop] for f in flat]

    def blend(
        self, tts: torch.Tensor, llm: torch.Tensor, alpha: float, *, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``(1 - alpha) * tts + alpha * llm`` in float32, cast to ``out``'s dtype (default: a buffer of ``tts.dtype``).

        ``out`` may be ``tts`` itself. Without ``out`` the result is a view of an internal buffer
        that the next call overwrites.
        """
        if tts.shape != llm.shape:
            raise ValueError(f"shape mismatch {tuple(tts.shape)} vs {tuple(llm.shape)}")
        if out is None:
            out = self.buffer("out", tts.numel(), tts.dtype).view(tts.shape)
        if out.shape != tts.shape:
            raise ValueError("out must have the shape of the tensors")
        for xs, ys, (t, l, o) in self._chunks(tts, llm, out):
            xs.copy_(t)
            ys.copy_(l)
            o.copy_(self.mix(xs, ys, alpha))
        return out

    def compare(self, tts: torch.Tensor, llm: torch.Tensor) -> dict[str, float]:
        """MRI statistics: ``||llm - tts|| / ||tts||``, cosine, ``||llm|| / ||tts||`` (and both norms).

        Chunked float32 dot products, accumulated in float64; no tensor-sized temporary.
        """
        xx = yy = xy = dd = 0.0
        for xs, ys, (t, l) in self._chunks(tts, llm):
            xs.copy_(t)
            ys.copy_(l)
            xx += float(torch.dot(xs, xs))
            yy += float(torch.dot(ys, ys))
            xy += float(torch.dot(xs, ys))
            ys.sub_(xs)
            dd += float(torch.dot(ys, ys))
        nx, ny = xx**0.5, yy**0.5
        return {
            "rel_distance": (dd**0.5) / nx if nx else float("inf"),
            "cosine": xy / (nx * ny) if nx and ny else 0.0,
            "norm_ratio": ny / nx if nx else float("inf"),
            "tts_norm": nx,
            "llm_norm": ny,
        }


class PairReader:
    """Reads an entry's TTS and LLM tensors raw into reused byte buffers (no allocation per tensor)."""

    def __init__(self, tts: StreamingCheckpoint, llm: StreamingCheckpoint, lerper: Lerper | None = None):
        self.tts, self.llm = tts, llm
        self.lerper = lerper or Lerper()

    def _raw(self, key: str, ck: StreamingCheckpoint, name: str) -> torch.Tensor:
        buf = self.lerper.buffer(key, ck.nbytes(name), torch.uint8)
        return ck.read_into(name, buf)

    def read(self, entry: BlendEntry) -> tuple[torch.Tensor, torch.Tensor]:
        """The entry's tensors in their stored dtypes (views of internal buffers)."""
        return self._raw("raw_tts", self.tts, entry.tts_name), self._raw("raw_llm", self.llm, entry.llm_name)


@dataclass
class StreamResult:
    """What ``stream_blend`` did."""

    files: list[Path]
    blended: list[str]
    copied: int
    bytes_written: int
    seconds: float
    stats: dict[str, dict[str, float]] = field(default_factory=dict)  # tts name -> MRI statistics


def output_layout(
    tts: StreamingCheckpoint, max_shard_bytes: int | None
) -> tuple[list[TensorSpec], list[list[str]] | None, list[str] | None]:
    """Tensor specs in on-disk order and the output layout: the input's files when ``max_shard_bytes``
    is None, one file when it is 0, else shards of at most that many bytes."""
    specs = [TensorSpec(n, tts.st_dtype(n), tts.shape(n)) for n in tts.keys()]
    if max_shard_bytes is None:
        shards: list[list[str]] = []
        names: list[str] = []
        for name in tts.keys():
            file = tts.location(name).file.name
            if not names or names[-1] != file:
                names.append(file)
                shards.append([])
            shards[-1].append(name)
        return specs, shards, names
    return specs, [[s.name for s in shard] for shard in plan_shards(specs, max_shard_bytes or None)], None


def stream_blend(
    plan: BlendPlan,
    tts: StreamingCheckpoint,
    llm: StreamingCheckpoint,
    out_dir: str | Path,
    *,
    metadata: Mapping[str, str] | None = None,
    max_shard_bytes: int | None = None,
    measure: bool = False,
    progress: Callable[[int], None] | None = None,
) -> StreamResult:
    """Write the blended weights of ``plan`` into ``out_dir``, one tensor at a time.

    ``max_shard_bytes=None`` keeps the input's files (same names, same tensors per file, same order);
    0 writes one ``model.safetensors``; otherwise shards of that size plus an index. ``measure`` also records the MRI statistics of every
    mapped tensor (frozen ones included). ``progress`` is fed byte counts.
    """
    t0 = time.perf_counter()
    entries = {e.tts_name: e for e in plan.entries}
    specs, shards, shard_names = output_layout(tts, max_shard_bytes)
    lerper = Lerper()
    reader = PairReader(tts, llm, lerper)
    blended: list[str] = []
    stats: dict[str, dict[str, float]] = {}
    copied = 0
    with torch_threads(1), SafetensorsStreamWriter(out_dir, specs, metadata=metadata, shards=shards, shard_names=shard_names) as w:
        for spec in specs:
            entry = entries.get(spec.name)
            if entry is not None and (entry.alpha > 0 or measure):
                raw_t, raw_l = reader.read(entry)
                if measure:
                    stats[spec.name] = lerper.compare(raw_t, raw_l)
                if entry.alpha > 0:
                    w.write(spec.name, lerper.blend(raw_t, raw_l, entry.alpha, out=raw_t))  # in place
                    blended.append(spec.name)
                else:
                    w.copy_tensor_from(spec.name, tts.location(spec.name))
                    copied += 1
            else:
                w.copy_tensor_from(spec.name, tts.location(spec.name))
                copied += 1
            if progress is not None:
                progress(spec.nbytes)
        files = w.close()
    return StreamResult(files, blended, copied, w.bytes_written, time.perf_counter() - t0, stats)
