"""The quantized checkpoint folder: how it is written, recognised and loaded.

Layout (a complete Qwen3-TTS folder; everything but the weights is copied from the source)::

    model.safetensors        every tensor that was NOT quantized, byte-identical to the source
    int4.safetensors         per quantized projection P: P.qweight (uint8, two codes a byte), P.scales,
                             P.zeros (uint8), P.act_scale (float32, AWQ only); with --embed-8bit also
                             talker.model.text_embedding.{qweight (int8), scales}; with
                             --code-predictor-8bit, per code-predictor linear L: L.qweight8, L.scales8
    quantization.json        what was quantized, how, calibration hash, library versions
    README.md                the model card; quantize_report.{json,md}: the measured cost

Stock ``Qwen3TTSModel.from_pretrained`` reads ``model.safetensors`` only, so it loads such a folder
with the quantized tensors freshly initialised (and says so); :func:`apply_quantized` then puts the
INT4 modules in their place. :func:`load_tts` does both (on CPU first, so a GPU never holds the
float projections) and is what the suite's loader (``synthesis.engine.Synthesizer.load``) calls.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from qwen_tts_ext.quantize.int4 import Int4Linear, QuantizedWeight

QUANT_FILE = "int4.safetensors"
INFO_FILE = "quantization.json"
FORMAT = "qwen-tts-ext-int4"
TEXT_EMBEDDING = "talker.model.text_embedding"
REPORT_FILES = ("quantize_report.json", "quantize_report.md")
OWN_FILES = ("README.md", INFO_FILE, QUANT_FILE, *REPORT_FILES)


def is_quantized(folder: str | os.PathLike) -> bool:
    """True for a folder written by ``qwen-tts-ext quantize``."""
    return Path(folder, INFO_FILE).is_file() and Path(folder, QUANT_FILE).is_file()


def quantize_rows_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8 of an embedding table: (codes int8 [rows, dim], scales [rows, 1] in w's dtype)."""
    q = torch.empty(w.shape, dtype=torch.int8)
    scales = torch.empty(w.shape[0], 1, dtype=w.dtype if w.dtype.is_floating_point else torch.float32)
    for start in range(0, w.shape[0], 8192):  # in slices: no float32 copy of a 151936-row table
        wf = w[start:start + 8192].detach().float()
        s = (wf.abs().amax(1, keepdim=True) / 127.0).clamp(min=1e-8).to(scales.dtype).float()  # as stored
        q[start:start + 8192] = torch.round(wf / s).clamp(-127, 127).to(torch.int8)
        scales[start:start + 8192] = s.to(scales.dtype)
    return q, scales


class Int8Linear(torch.nn.Module):
    """A linear with int8 weight rows (one scale per output channel, symmetric), dequantized per call."""

    def __init__(self, qweight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        self.out_features, self.in_features = qweight.shape
        self.register_buffer("qweight", qweight)
        self.register_buffer("scales", scales)
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.qweight.to(x.dtype) * self.scales.to(x.dtype)
        return F.linear(x, w, None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bits=8"


def code_predictor_linears(model: torch.nn.Module) -> list[str]:
    """Every ``nn.Linear`` of the code predictor (its layers' projections, the 15 heads, the input projection)."""
    return [n for n, m in model.named_modules()
            if n.startswith("talker.code_predictor.") and isinstance(m, torch.nn.Linear)]


class Int8Embedding(torch.nn.Module):
    """An embedding table of int8 rows with one scale per row (dequantized per lookup)."""

    def __init__(self, qweight: torch.Tensor, scales: torch.Tensor):
        super().__init__()
        self.num_embeddings, self.embedding_dim = qweight.shape
        self.register_buffer("qweight", qweight)
        self.register_buffer("scales", scales)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(ids, self.qweight)
        return rows.to(self.scales.dtype) * F.embedding(ids, self.scales)

    @property
    def weight(self) -> torch.Tensor:  # for code that reads .weight.dtype / .device
        return self.scales


def quantized_tensors(quantized: dict[str, QuantizedWeight], embed: tuple[torch.Tensor, torch.Tensor] | None,
                      int8: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None):
    """(name, tensor) pairs of ``int4.safetensors``."""
    for name, qw in quantized.items():
        for part, t in qw.tensors().items():
            yield f"{name}.{part}", t.contiguous()
    for name, (q, s) in (int8 or {}).items():
        yield f"{name}.qweight8", q.contiguous()
        yield f"{name}.scales8", s.contiguous()
    if embed is not None:
        yield f"{TEXT_EMBEDDING}.qweight", embed[0].contiguous()
        yield f"{TEXT_EMBEDDING}.scales", embed[1].contiguous()


def _set_module(model: torch.nn.Module, name: str, module: torch.nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def apply_quantized(model: torch.nn.Module, folder: str | os.PathLike) -> torch.nn.Module:
    """Replace ``model``'s quantized projections (and text embedding) with the INT4/INT8 modules of ``folder``."""
    from safetensors.torch import load_file

    info = json.loads(Path(folder, INFO_FILE).read_text(encoding="utf-8"))
    group = int(info["group_size"])
    tensors = load_file(str(Path(folder, QUANT_FILE)))
    for name in info["quantized"]:
        old = model.get_submodule(name)
        qw = QuantizedWeight(tensors[f"{name}.qweight"], tensors[f"{name}.scales"], tensors[f"{name}.zeros"],
                             group, tensors.get(f"{name}.act_scale"))
        if qw.shape != (old.out_features, old.in_features):
            raise ValueError(f"{folder}: {name} is {qw.shape} in {QUANT_FILE}, the model has "
                             f"{(old.out_features, old.in_features)}")
        bias = getattr(old, "bias", None)
        _set_module(model, name, Int4Linear(qw, bias).to(old.weight.device))
    for name in info.get("int8", []):
        old = model.get_submodule(name)
        _set_module(model, name, Int8Linear(tensors[f"{name}.qweight8"], tensors[f"{name}.scales8"],
                                            getattr(old, "bias", None)).to(old.weight.device))
    if info.get("text_embedding_8bit"):
        old = model.get_submodule(TEXT_EMBEDDING)
        _set_module(model, TEXT_EMBEDDING, Int8Embedding(tensors[f"{TEXT_EMBEDDING}.qweight"],
                                                         tensors[f"{TEXT_EMBEDDING}.scales"]).to(old.weight.device))
    return model


def load_tts(folder: str | os.PathLike, **kwargs):
    """``Qwen3TTSModel.from_pretrained(folder, **kwargs)``, for plain and quantized folders alike.

    A quantized folder is loaded on the CPU (its quantized tensors absent, so initialised and at once
    dropped), given its INT4 modules, then moved to ``device_map``.
    """
    from qwen_tts import Qwen3TTSModel

    if not is_quantized(folder):
        return Qwen3TTSModel.from_pretrained(str(folder), **kwargs)
    from transformers.utils import logging as hf_logging

    device = kwargs.pop("device_map", None) or "cpu"
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "weights not initialized from the checkpoint": the int4 ones, by design
    try:
        tts = Qwen3TTSModel.from_pretrained(str(folder), device_map="cpu", **kwargs)
    finally:
        hf_logging.set_verbosity(level)
    apply_quantized(tts.model, folder)
    if str(device) != "cpu":
        tts.model.to(device)
        tts.device = tts.model.device
    return tts
