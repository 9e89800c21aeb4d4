"""Weight-only INT4 (asymmetric, per group, with zero points) and the module that runs it.

The arithmetic is torchao's (``choose_qparams_affine`` / ``quantize_affine`` / ``dequantize_affine``
with ``MappingType.ASYMMETRIC``, codes 0..15, one scale and one zero point per ``group`` input
channels of an output row, the AutoAWQ convention). What torchao 0.18 does not give on CPU is a
4-bit tensor that serializes: its int4 tensors with an activation pre-scale (what AWQ needs) are
CUDA/XPU/NPU layouts or an opaque CPU pack that safetensors refuses, and ``IntxUnpackedToInt8Tensor``
(which serializes) keeps one code per byte and has no pre-scale. So codes are packed two per byte
here (``pack_nibbles``: low nibble = even input channel) and stored in plain safetensors.

A quantized projection is :class:`QuantizedWeight` (``qweight`` uint8 [out, in/2], ``scales`` [out,
in/group] in the model dtype, ``zeros`` uint8 [out, in/group], optional ``act_scale`` float32 [in]).
Its dequantized weight is ``W_hat[o, i] = (q[o, i] - z[o, g]) * s[o, g] / awq[i]``; the ``1 / awq``
is applied to the input instead (``x * act_scale``), so nothing outside the projection changes.
:class:`Int4Linear` holds those tensors (4 bits per weight in memory too) and dequantizes per call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

QMIN, QMAX = 0, 15


def pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """uint8 codes 0..15 [..., 2n] -> uint8 [..., n]; channel 2k in the low nibble, 2k+1 in the high."""
    if q.shape[-1] % 2:
        raise ValueError(f"an even number of input channels is needed to pack int4, got {q.shape[-1]}")
    q = q.to(torch.uint8)
    return (q[..., 0::2] | (q[..., 1::2] << 4)).contiguous()


def unpack_nibbles(p: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`pack_nibbles`."""
    out = torch.stack((p & 0x0F, p >> 4), dim=-1)
    return out.reshape(*p.shape[:-1], p.shape[-1] * 2)


@dataclass
class QuantizedWeight:
    qweight: torch.Tensor  # uint8 [out, in // 2]
    scales: torch.Tensor  # [out, in // group], model dtype
    zeros: torch.Tensor  # uint8 [out, in // group]
    group: int
    act_scale: torch.Tensor | None = None  # float32 [in]: multiply the input by it (1 / AWQ scale)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.qweight.shape[0]), int(self.qweight.shape[1]) * 2)

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"qweight": self.qweight, "scales": self.scales, "zeros": self.zeros}
        if self.act_scale is not None:
            out["act_scale"] = self.act_scale
        return out

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors().values())


def _qparams(w: torch.Tensor, group: int, scale_dtype: torch.dtype):
    from torchao.quantization.quant_primitives import MappingType, choose_qparams_affine

    return choose_qparams_affine(w, MappingType.ASYMMETRIC, (1, group), torch.uint8, QMIN, QMAX, eps=1e-6,
                                 scale_dtype=scale_dtype, zero_point_dtype=torch.uint8)


def fake_quant(w: torch.Tensor, group: int, scale_dtype: torch.dtype) -> torch.Tensor:
    """Quantize and dequantize ``w`` [out, in] (float32 result): what the stored codes will give back."""
    from torchao.quantization.quant_primitives import dequantize_affine, quantize_affine

    s, z = _qparams(w, group, scale_dtype)
    q = quantize_affine(w, (1, group), s, z, torch.uint8, QMIN, QMAX)
    return dequantize_affine(q, (1, group), s, z, torch.uint8, QMIN, QMAX, output_dtype=torch.float32)


def quantize_weight(w: torch.Tensor, group: int, awq_scale: torch.Tensor | None = None,
                    scale_dtype: torch.dtype | None = None) -> QuantizedWeight:
    """INT4 of ``w * awq_scale`` (per input channel; None: plain round-to-nearest)."""
    from torchao.quantization.quant_primitives import quantize_affine

    out_f, in_f = w.shape
    if in_f % group:
        raise ValueError(f"group size {group} does not divide {in_f} input channels")
    scale_dtype = scale_dtype or (w.dtype if w.dtype in (torch.bfloat16, torch.float16) else torch.float32)
    wf = w.detach().float()
    if awq_scale is not None:
        wf = wf * awq_scale.float()
    s, z = _qparams(wf, group, scale_dtype)
    q = quantize_affine(wf, (1, group), s, z, torch.uint8, QMIN, QMAX)
    act = None if awq_scale is None else (1.0 / awq_scale.float()).contiguous()
    return QuantizedWeight(pack_nibbles(q), s.contiguous(), z.to(torch.uint8).contiguous(), group, act)


def dequantize(qw: QuantizedWeight, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The weight the stored codes stand for, in the scaled space (``W * awq``; the input carries ``1 / awq``)."""
    from torchao.quantization.quant_primitives import dequantize_affine

    q = unpack_nibbles(qw.qweight)
    return dequantize_affine(q, (1, qw.group), qw.scales, qw.zeros, torch.uint8, QMIN, QMAX, output_dtype=dtype)


def effective_weight(qw: QuantizedWeight) -> torch.Tensor:
    """float32 [out, in] that ``x @ W.T`` would use: the dequantized weight with ``act_scale`` folded back in."""
    w = dequantize(qw, torch.float32)
    return w if qw.act_scale is None else w * qw.act_scale.float()


class Int4Linear(torch.nn.Module):
    """A bias-free (or biased) linear whose weight is INT4 codes + group scales/zeros (+ AWQ input scale)."""

    def __init__(self, qw: QuantizedWeight, bias: torch.Tensor | None = None):
        super().__init__()
        self.out_features, self.in_features = qw.shape
        self.group = qw.group
        self.register_buffer("qweight", qw.qweight)
        self.register_buffer("scales", qw.scales)
        self.register_buffer("zeros", qw.zeros)
        self.register_buffer("act_scale", qw.act_scale)
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach(), requires_grad=False)

    def quantized(self) -> QuantizedWeight:
        return QuantizedWeight(self.qweight, self.scales, self.zeros, self.group, self.act_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_scale is not None:
            x = x * self.act_scale.to(x.dtype)
        w = dequantize(self.quantized(), x.dtype)
        return F.linear(x, w, None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits=4, group={self.group}, "
                f"awq={self.act_scale is not None}")
