"""The blend arithmetic and the streaming checkpoint writer.

``Lerper`` computes ``(1 - alpha) * W_tts + alpha * W_llm`` in float32 into buffers it reuses from
tensor to tensor (fresh 50 MB float32 temporaries per tensor cost more in page faults than the
arithmetic itself), then casts back to the TTS dtype. The same object serves the streaming CLI and
the in-memory ``runtime`` blend, so both produce bit-identical tensors.

``stream_blend`` walks the TTS checkpoint tensor by tensor in on-disk order: tensors outside the
plan (and blended tensors whose alpha is 0) are copied file-to-file by the kernel, byte for byte;
blended tensors are read raw into reused byte buffers (no memory map, no allocation), mixed and
written. Peak memory is a few buffers of the largest FFN tensor, whatever the model size.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import torch

from qwen_tts_ext.blend.plan import BlendEntry, BlendPlan
from qwen_tts_ext.checkpoint_io import LazyCheckpoint, SafetensorsStreamWriter, TensorSpec, plan_shards

_STATS_CHUNK = 1 << 20  # elements per chunk for the MRI statistics' scratch buffer


class Lerper:
    """Float32 linear interpolation with reusable buffers (one set per device).

    ``blend`` returns a view into an internal buffer that the next call overwrites: write or copy
    it before blending the next tensor.
    """

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self._bufs: dict[tuple[str, torch.dtype], torch.Tensor] = {}

    def buffer(self, key: str, numel: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A flat buffer of at least ``numel`` elements, grown (never shrunk) and reused across calls."""
        buf = self._bufs.get((key, dtype))
        if buf is None or buf.numel() < numel:
            self._bufs.pop((key, dtype), None)
            buf = torch.empty(numel, dtype=dtype, device=self.device)
            self._bufs[(key, dtype)] = buf
        return buf[:numel]

    def load_pair(self, tts: torch.Tensor, llm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both tensors as float32 copies in the reusable buffers ``x`` and ``y``."""
        if tts.shape != llm.shape:
            raise ValueError(f"shape mismatch {tuple(tts.shape)} vs {tuple(llm.shape)}")
        n = tts.numel()
        x = self.buffer("x", n).view(tts.shape)
        y = self.buffer("y", n).view(llm.shape)
        x.copy_(tts)
        y.copy_(llm)
        return x, y

    def mix(self, x: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
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

    def blend(
        self, tts: torch.Tensor, llm: torch.Tensor, alpha: float, *, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``(1 - alpha) * tts + alpha * llm`` in float32, cast to ``tts.dtype`` (into ``out`` if given)."""
        x, y = self.load_pair(tts, llm)
        mixed = self.mix(x, y, alpha)
        if out is None:
            out = self.buffer("out", tts.numel(), tts.dtype).view(tts.shape)
        return out.copy_(mixed)


def compare(x: torch.Tensor, y: torch.Tensor, scratch: torch.Tensor) -> dict[str, float]:
    """MRI statistics of two float32 tensors: ``||y - x|| / ||x||``, cosine, ``||y|| / ||x||`` (and the norms).

    Sums are taken over chunks (float32 dot products, accumulated in float64), and the difference
    goes through ``scratch`` so no tensor-sized temporary is allocated.
    """
    xf, yf = x.reshape(-1), y.reshape(-1)
    xx = yy = xy = dd = 0.0
    step = scratch.numel()
    for start in range(0, xf.numel(), step):
        a, b = xf[start : start + step], yf[start : start + step]
        d = scratch[: a.numel()]
        torch.sub(b, a, out=d)
        xx += float(torch.dot(a, a))
        yy += float(torch.dot(b, b))
        xy += float(torch.dot(a, b))
        dd += float(torch.dot(d, d))
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

    def __init__(self, tts: LazyCheckpoint, llm: LazyCheckpoint, lerper: Lerper | None = None):
        self.tts, self.llm = tts, llm
        self.lerper = lerper or Lerper()

    def _raw(self, key: str, ck: LazyCheckpoint, name: str) -> torch.Tensor:
        buf = self.lerper.buffer(key, ck.nbytes(name), torch.uint8)
        return ck.read_into(name, buf)

    def read(self, entry: BlendEntry) -> tuple[torch.Tensor, torch.Tensor]:
        """The entry's tensors in their stored dtypes (views of internal buffers)."""
        return self._raw("raw_tts", self.tts, entry.tts_name), self._raw("raw_llm", self.llm, entry.llm_name)

    def scratch(self) -> torch.Tensor:
        return self.lerper.buffer("scratch", _STATS_CHUNK)


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
    tts: LazyCheckpoint, max_shard_bytes: int | None
) -> tuple[list[TensorSpec], list[list[str]] | None, list[str] | None]:
    """Tensor specs in on-disk order, plus the input's shard layout when ``max_shard_bytes`` is None."""
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
    return specs, [[s.name for s in shard] for shard in plan_shards(specs, max_shard_bytes)], None


def stream_blend(
    plan: BlendPlan,
    tts: LazyCheckpoint,
    llm: LazyCheckpoint,
    out_dir: str | Path,
    *,
    metadata: Mapping[str, str] | None = None,
    max_shard_bytes: int | None = None,
    measure: bool = False,
    progress: Callable[[int], None] | None = None,
) -> StreamResult:
    """Write the blended weights of ``plan`` into ``out_dir``, one tensor at a time.

    ``max_shard_bytes=None`` keeps the input's files (same names, same tensors per file, same order);
    otherwise shards of that size plus an index. ``measure`` also records the MRI statistics of every
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
    with SafetensorsStreamWriter(out_dir, specs, metadata=metadata, shards=shards, shard_names=shard_names) as w:
        for spec in specs:
            entry = entries.get(spec.name)
            if entry is not None and (entry.alpha > 0 or measure):
                raw_t, raw_l = reader.read(entry)
                x, y = lerper.load_pair(raw_t, raw_l)
                if measure:
                    stats[spec.name] = compare(x, y, reader.scratch())
                if entry.alpha > 0:
                    mixed = lerper.mix(x, y, entry.alpha)
                    out = lerper.buffer("out", spec.nbytes, torch.uint8)[: spec.nbytes]
                    out = out.view(raw_t.dtype).view(raw_t.shape)
                    out.copy_(mixed)
                    w.write(spec.name, out)
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
