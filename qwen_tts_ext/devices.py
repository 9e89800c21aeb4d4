"""Resolve ``--device``/``--dtype`` once, before any model loads, with a clear message when the
machine cannot do what was asked (``cuda:0`` without a driver is one line, not torch's traceback)."""

from __future__ import annotations

import re

from qwen_tts_ext.errors import UserError

DTYPES = ("float32", "bfloat16", "float16")
_DEVICE = re.compile(r"^(cpu|auto|mps|cuda)(:(\d+))?$")


def resolve_device(device: str, dtype: str = "auto", *, flag: str = "--device") -> tuple[str, str]:
    """``("auto"|"cpu"|"cuda"|"cuda:N"|"mps", "auto"|dtype)`` -> a usable ``(device, dtype)``.

    ``auto`` picks the first CUDA device, else CPU; dtype ``auto`` is bfloat16 on CUDA, float32 elsewhere.
    """
    spec = str(device or "cpu").strip().lower()
    m = _DEVICE.match(spec)
    if not m:
        raise UserError(f"{flag} {device!r} is not a device; use cpu, cuda, cuda:N, mps or auto")
    if dtype not in ("auto", *DTYPES):
        raise UserError(f"--dtype {dtype!r} is not one of auto, {', '.join(DTYPES)}")
    kind, index = m.group(1), m.group(3)
    if kind in ("cpu", "auto") and index is not None:
        raise UserError(f"{flag} {device!r}: only cuda takes an index (cuda:0)")
    import torch

    if kind == "auto":
        kind, index = ("cuda", "0") if torch.cuda.is_available() else ("cpu", None)
    if kind == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA support" if torch.version.cuda is None else \
                "no NVIDIA GPU or driver is visible"
            raise UserError(f"{flag} {device}: {why}; use --device cpu (or auto)")
        n = torch.cuda.device_count()
        i = int(index or 0)
        if i >= n:
            raise UserError(f"{flag} {device}: only {n} CUDA device(s) visible (cuda:0..cuda:{n - 1})")
        spec = f"cuda:{i}"
    elif kind == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UserError(f"{flag} mps: Apple's Metal backend is not available here; use --device cpu")
        spec = "mps"
    else:
        spec = "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if spec.startswith("cuda") else "float32"
    return spec, dtype
