#!/usr/bin/env python
"""Training-memory table for the released Qwen3-TTS 12Hz 1.7B and 0.6B models, per memory mode.

    python scripts/memory_table.py                 # print the table and rewrite docs/memory.md
    python scripts/memory_table.py --frames 2000   # activations for 2k frames per micro-batch
    python scripts/memory_table.py --no-write      # print only

Nothing is downloaded and no weights are allocated: ``Qwen3TTSForConditionalGeneration`` is built on
PyTorch's ``meta`` device from a config with the released dimensions, so every parameter count is
exact. Bytes follow from counts and dtypes, so the table is the same on every machine.

Columns (GB = 1e9 bytes):

- ``weights``: the stored model, all parameters (speaker encoder and frozen ones included), in the
  storage dtype of the mode. In the default mode these float32 weights ARE the master weights (no
  separate copy, unlike fp16 recipes); pure bf16 keeps no master copy (small updates round away);
  LoRA (``train.lora_rank``, peft) adds adapters in the base's dtype (float32, or bf16 with
  ``train.pure_bf16``); the speaker rows are written at export, not trained.
- ``autocast``: bf16 copies of the Linear weights that autocast makes in the forward pass and
  autograd keeps until backward (bf16-autocast modes only).
- ``grads``: one gradient per trained parameter (float32, bf16 in pure bf16).
- ``AdamW``: first and second moments per trained parameter (torch's AdamW keeps them in the
  parameter dtype: 8 bytes float32, 4 bytes bf16).
- ``act/1k``: tensors saved for backward per 1,000 frames in the micro-batch (formula below).
- ``total``: the sum for a 1,000-frame micro-batch. Add ~10-20% for the allocator, CUDA context
  and temporaries of the backward pass.

Activation formula. Bytes saved for backward per position per decoder layer, read off the qwen_tts
layer code with SDPA memory-efficient attention, so no S x S term; ``h`` hidden, ``i`` intermediate,
``a``/``kv`` query/key-value heads, ``d`` head_dim; ``r`` the residual-stream bytes: 4 in the talker
under autocast (it starts from float32 embeddings), 2 in the code predictor (it starts from a bf16
Linear output) and everywhere in pure bf16::

    A = 2 * (6 + r) * h             # two RMSNorms: input (or its float32 upcast), normalized, bf16 cast
      + 6 * (a + kv) * d            # q_norm / k_norm: float32 upcast + normalized copy
      + 2 * a * d + 4 * kv' * d     # SDPA inputs q, k, v (kv' = a: HF repeats k/v when a padded batch passes a mask)
      + 4 * a * d                   # SDPA output + the contiguous copy fed to o_proj
      + 8 * i                       # SwiGLU: gate, silu(gate), up, product

    talker         = positions * (L * A + (6 + r) * h + 6 * text_hidden) + frames * 2 * h
    code predictor = frames * (16 * (L_cp * A_cp + (6 + 2) * h_cp + 2 * h) + 15 * 2 * h_cp)

(final norm, text projection, the codec head; the code predictor runs a 16-position sequence per
frame, plus its input projection and 15 heads.) The heads go through the fused linear
cross-entropy (``qwen_tts_ext.train.linear_ce``): no logits are kept, only the gradient of the
heads' input (bf16, ``2 * h`` per scored row) and, once per micro-batch, the heads' weight
gradients (bf16, computed during forward; counted in the ``grads`` column). 1k frames means 1,000
audio frames (80 s of speech); text/prefix positions (~10-20% more) are left out. With gradient
checkpointing each layer keeps only its input (``r * h`` per position) and one layer is
re-materialised at a time during backward (the larger of one talker layer over all positions and
one code-predictor layer over all frames). ``tests/test_memory_table.py`` checks the formula against
the bytes autograd really saves (``saved_tensors_hooks``) for small models on CPU: within 10%.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from qwen_tts_ext import released  # noqa: E402  (after the path insert: runs from a checkout)

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "memory.md"
GB = 1e9
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# The dimensions that matter for memory: qwen_tts_ext/released.py holds the released values (the
# factory and the blend benchmark build from the same table).
Dims = released.ModelDims
RELEASED = {"1.7B": released.DIMS["1.7b"], "0.6B": released.DIMS["0.6b"]}


def build_config(d: Dims):
    """A ``Qwen3TTSConfig`` with these dimensions and the released special ids."""
    from qwen_tts.core.models.configuration_qwen3_tts import Qwen3TTSConfig

    return Qwen3TTSConfig(**released.class_kwargs(released.build_tts_config(d)))


def build_model(d: Dims, device: str = "meta"):
    """``Qwen3TTSForConditionalGeneration`` with these dimensions; on ``meta`` no memory is allocated."""
    import torch
    from qwen_tts.core.models.modeling_qwen3_tts import Qwen3TTSForConditionalGeneration

    with torch.device(device):
        return Qwen3TTSForConditionalGeneration(build_config(d))


# --------------------------------------------------------------------------- parameter counts


@dataclass
class Counts:
    """Exact parameter counts per part of the model (from the instantiated module tree)."""

    total: int
    tensors: int
    parts: dict[str, int]  # part -> numel
    part_tensors: dict[str, int]
    forward_linear: int  # Linear weights autocast copies to bf16 and keeps for backward (all but the heads)
    lora_talker: dict[int, int] = field(default_factory=dict)  # rank -> adapter params on talker attn+MLP
    lora_code_predictor: dict[int, int] = field(default_factory=dict)


PARTS = (  # (part, prefix); first match wins
    ("talker.text_embedding", "talker.model.text_embedding."),
    ("talker.codec_embedding", "talker.model.codec_embedding."),
    ("talker.layers", "talker.model.layers."),
    ("code_predictor", "talker.code_predictor."),
    ("speaker_encoder", "speaker_encoder."),
    ("talker.other", "talker."),  # text_projection, codec_head, final norm
)


def count_parameters(model, lora_ranks: tuple[int, ...] = (16,)) -> Counts:
    import torch

    parts = {p: 0 for p, _ in PARTS}
    part_tensors = {p: 0 for p, _ in PARTS}
    total = tensors = 0
    for name, p in model.named_parameters():
        total += p.numel()
        tensors += 1
        for part, prefix in PARTS:
            if name.startswith(prefix):
                parts[part] += p.numel()
                part_tensors[part] += 1
                break
        else:
            raise RuntimeError(f"parameter {name} belongs to no known part")
    forward_linear = 0
    lora_t = {r: 0 for r in lora_ranks}
    lora_c = {r: 0 for r in lora_ranks}
    for name, m in model.talker.named_modules():
        if not isinstance(m, torch.nn.Linear):
            continue
        if name != "codec_head" and not name.startswith("code_predictor.lm_head."):  # heads: fused loss, no copy
            forward_linear += m.weight.numel() + (m.bias.numel() if m.bias is not None else 0)
        if name.split(".")[-1] in LORA_TARGETS:
            for r in lora_ranks:
                n = r * (m.in_features + m.out_features)
                if name.startswith("model.layers."):
                    lora_t[r] += n
                elif name.startswith("code_predictor.model.layers."):
                    lora_c[r] += n
    return Counts(total, tensors, parts, part_tensors, forward_linear, lora_t, lora_c)


# --------------------------------------------------------------------------- activations


def layer_bytes(h: int, i: int, a: int, kv: int, d: int, *, residual_bytes: int, repeat_kv: bool) -> int:
    """Bytes saved for backward per position by one qwen_tts decoder layer (see the module docstring)."""
    norm = (6 + residual_bytes) * h
    kv_saved = a if repeat_kv else kv
    return 2 * norm + 6 * (a + kv) * d + 2 * a * d + 4 * kv_saved * d + 4 * a * d + 8 * i


def activation_bytes(d: Dims, frames: int, *, autocast: bool, checkpointing: bool, text_positions: int = 0,
                     talker_repeat_kv: bool = True) -> dict:
    """Saved-for-backward bytes of one micro-batch holding ``frames`` audio frames (+ text positions).

    ``talker_repeat_kv``: a padded batch passes a mask, and then HF repeats k/v to all heads for SDPA.
    Under autocast the talker's residual stream is float32 (it starts from float32 embeddings) while
    the code predictor's is bf16 (it starts from a Linear output); in pure bf16 both are bf16.
    """
    r_t = 4 if autocast else 2
    r_c = 2
    positions = frames + text_positions
    t_layer = layer_bytes(d.hidden, d.intermediate, d.heads, d.kv_heads, d.head_dim, residual_bytes=r_t,
                          repeat_kv=talker_repeat_kv)
    c_layer = layer_bytes(d.cp_hidden, d.cp_intermediate, d.cp_heads, d.cp_kv_heads, d.cp_head_dim,
                          residual_bytes=r_c, repeat_kv=False)  # no mask in forward_finetune: SDPA does GQA
    if checkpointing:  # each layer keeps its input; one layer is re-materialised at a time
        t_stack = d.layers * r_t * d.hidden
        c_stack = d.cp_layers * r_c * d.cp_hidden
        peak = max(t_layer * positions, c_layer * d.code_groups * frames)
    else:
        t_stack = d.layers * t_layer
        c_stack = d.cp_layers * c_layer
        peak = 0
    talker = positions * (t_stack + (6 + r_t) * d.hidden + 6 * d.text_hidden) + frames * 2 * d.hidden
    cp = frames * (d.code_groups * (c_stack + (6 + r_c) * d.cp_hidden + 2 * d.hidden)
                   + (d.code_groups - 1) * 2 * d.cp_hidden)
    return {"talker": talker, "code_predictor": cp, "recompute_peak": peak, "total": talker + cp + peak}


def synthetic_batch(config, samples: int, frames: int, text_tokens: int, seed: int = 0):
    """A padding-free training batch (the suite's layout) of random ids, for measuring saved tensors."""
    import torch

    from qwen_tts_ext.train.layout import SpecialIds, build_sample, collate

    ids = SpecialIds.from_config(config)
    g = torch.Generator().manual_seed(seed)
    layouts = []
    for _ in range(samples):
        text = torch.randint(0, 1000, (text_tokens,), generator=g).tolist()
        codes = torch.randint(0, 2048, (frames, ids.num_code_groups), generator=g)
        layouts.append(build_sample(text, codes, ids, role_ids=[151644, 77091, 198]))
    return collate(layouts, [0] * samples)


def head_grad_bytes(d: Dims, *, codec_head: bool = True, code_predictor_heads: bool = True) -> int:
    """bf16 weight gradients of the trained heads, computed by the fused loss in forward and held until backward."""
    n = (d.codec_vocab * d.hidden if codec_head else 0)
    n += ((d.code_groups - 1) * d.cp_vocab * d.cp_hidden if code_predictor_heads else 0)
    return 2 * n


def measure_saved_bytes(model, batch, *, autocast: bool, checkpointing: bool = False) -> dict:
    """Run the suite's SFT loss forward and sum the bytes autograd saves for backward.

    Returns ``activations`` (saved tensors that are neither parameters nor bf16 casts of Linear
    weights), ``autocast_copies`` (bf16 casts of Linear weights) and ``head_grads`` (the fused loss's
    stacks of head weight gradients, [G, V, H]). Storages are counted once.
    """
    import torch

    from qwen_tts_ext.train.losses import sft_loss

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    weight_shapes = {tuple(m.weight.shape) for m in model.modules() if isinstance(m, torch.nn.Linear)}
    seen: dict[int, tuple[int, str]] = {}

    def pack(t):
        if t.device.type == "meta":
            return t
        st = t.untyped_storage()
        ptr = st.data_ptr()
        if ptr not in params and ptr not in seen:
            shape = tuple(t.shape)  # a Linear saves its weight transposed
            kind = "activation"
            if t.dtype == torch.bfloat16 and t.dim() == 2 and (shape in weight_shapes or shape[::-1] in weight_shapes):
                kind = "copy"
            elif t.dim() == 3 and shape[1:] in weight_shapes:
                kind = "head_grad"
            seen[ptr] = (st.nbytes(), kind)
        return t

    talker = model.talker
    if checkpointing:
        talker.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        talker.code_predictor.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    vectors = torch.zeros(1, model.config.talker_config.hidden_size, dtype=next(model.parameters()).dtype)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = sft_loss(talker, batch, vectors)
    del out
    total = {kind: sum(n for n, k in seen.values() if k == kind) for kind in ("activation", "copy", "head_grad")}
    return {"activations": total["activation"], "autocast_copies": total["copy"], "head_grads": total["head_grad"]}


# --------------------------------------------------------------------------- modes


@dataclass(frozen=True)
class Mode:
    key: str
    label: str
    weight_dtype_bytes: int = 4  # storage of the (base) weights
    autocast: bool = True  # bf16 autocast over float32 weights
    grad_bytes: int = 4
    adam_bytes: int = 8  # m + v per trained parameter
    checkpointing: bool = False
    train_text_embedding: bool = False
    train_code_predictor: bool = True
    lora_rank: int = 0
    lora_code_predictor: bool = False


MODES = (
    Mode("full", "full fine-tune, fp32 master + bf16 autocast (default)"),
    Mode("full_text", "full, text embedding trained too", train_text_embedding=True),
    Mode("full_talker", "full, talker only (code predictor frozen)", train_code_predictor=False),
    Mode("full_gc", "full + gradient checkpointing", checkpointing=True),
    Mode("bf16", "pure bf16 (weights, grads, AdamW state)", weight_dtype_bytes=2, autocast=False, grad_bytes=2,
         adam_bytes=4),
    Mode("bf16_gc", "pure bf16 + gradient checkpointing", weight_dtype_bytes=2, autocast=False, grad_bytes=2,
         adam_bytes=4, checkpointing=True),
    Mode("lora", "LoRA r16 talker attn+MLP, fp32 base + bf16 autocast", lora_rank=16),
    Mode("lora_bf16", "LoRA r16, pure bf16", weight_dtype_bytes=2, autocast=False, grad_bytes=2, adam_bytes=4,
         lora_rank=16),
    Mode("lora_bf16_gc", "LoRA r16, pure bf16 + gradient checkpointing", weight_dtype_bytes=2, autocast=False,
         grad_bytes=2, adam_bytes=4, lora_rank=16, checkpointing=True),
)


@dataclass
class Row:
    model: str
    mode: Mode
    params: int
    trained: int
    weights: float  # bytes
    autocast: float
    grads: float
    adam: float
    activations: float

    @property
    def static(self) -> float:
        return self.weights + self.autocast + self.grads + self.adam

    @property
    def total(self) -> float:
        return self.static + self.activations


def trained_params(c: Counts, mode: Mode) -> int:
    """Parameters the optimizer updates in this mode (the speaker encoder never trains: vectors come from prep)."""
    if mode.lora_rank:  # adapters only: the locked speaker vectors are written into their rows at export
        n = c.lora_talker[mode.lora_rank]
        if mode.lora_code_predictor:
            n += c.lora_code_predictor[mode.lora_rank]
        return n
    n = c.parts["talker.layers"] + c.parts["talker.codec_embedding"] + c.parts["talker.other"]
    if mode.train_code_predictor:
        n += c.parts["code_predictor"]
    if mode.train_text_embedding:
        n += c.parts["talker.text_embedding"]
    return n


def make_row(name: str, d: Dims, c: Counts, mode: Mode, frames: int) -> Row:
    trained = trained_params(c, mode)
    weights = c.total * mode.weight_dtype_bytes
    autocast = 2 * c.forward_linear if mode.autocast else 0
    grads, adam = trained * mode.grad_bytes, trained * mode.adam_bytes
    if not mode.lora_rank:  # LoRA leaves the heads frozen
        grads += head_grad_bytes(d, code_predictor_heads=mode.train_code_predictor)
    if mode.lora_rank:  # peft's inject_adapter_in_model creates the adapters in the base dtype
        weights += trained * mode.weight_dtype_bytes
        autocast += 2 * trained if mode.autocast else 0
    act = activation_bytes(d, frames, autocast=mode.autocast, checkpointing=mode.checkpointing)["total"]
    return Row(name, mode, c.total, trained, weights, autocast, grads, adam, act)


def table_rows(frames: int = 1000, models: dict[str, Dims] | None = None) -> tuple[list[Row], dict[str, Counts]]:
    rows, counts = [], {}
    for name, d in (models or RELEASED).items():
        c = count_parameters(build_model(d))
        counts[name] = c
        for mode in MODES:
            rows.append(make_row(name, d, c, mode, frames))
    return rows, counts


# --------------------------------------------------------------------------- output


def _gb(x: float) -> str:
    return f"{x / GB:.2f}"


def _m(n: int) -> str:
    return f"{n / 1e6:,.1f} M" if n < 1e9 else f"{n / 1e9:.3f} B"


def markdown_table(rows: list[Row], frames: int) -> str:
    head = (f"| model | mode | params | trained | weights | autocast | grads | AdamW m+v | "
            f"act / {frames / 1000:g}k frames | total (GB) |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    body = "".join(
        f"| {r.model} | {r.mode.label} | {_m(r.params)} | {_m(r.trained)} | {_gb(r.weights)} | {_gb(r.autocast)} | "
        f"{_gb(r.grads)} | {_gb(r.adam)} | {_gb(r.activations)} | **{_gb(r.total)}** |\n"
        for r in rows)
    return head + body


def counts_table(counts: dict[str, Counts]) -> str:
    names = list(counts)
    out = "| part | " + " | ".join(f"{n} params (tensors)" for n in names) + " |\n|---|" + "---:|" * len(names) + "\n"
    for part, _ in PARTS:
        out += f"| {part} | " + " | ".join(f"{counts[n].parts[part]:,} ({counts[n].part_tensors[part]})" for n in names) + " |\n"
    out += "| **total** | " + " | ".join(f"**{counts[n].total:,}** ({counts[n].tensors})" for n in names) + " |\n"
    return out


def activation_table(frames: int) -> str:
    out = f"| model | autocast, talker | autocast, code predictor | + gradient checkpointing | pure bf16 | pure bf16 + GC |\n|---|---:|---:|---:|---:|---:|\n"
    for name, d in RELEASED.items():
        a = activation_bytes(d, frames, autocast=True, checkpointing=False)
        g = activation_bytes(d, frames, autocast=True, checkpointing=True)
        b = activation_bytes(d, frames, autocast=False, checkpointing=False)
        bg = activation_bytes(d, frames, autocast=False, checkpointing=True)
        out += (f"| {name} | {_gb(a['talker'])} | {_gb(a['code_predictor'])} | {_gb(g['total'])} | "
                f"{_gb(b['total'])} | {_gb(bg['total'])} |\n")
    return out


CARDS_GB = (12, 16, 24, 40, 48, 80)
HEADROOM = 1.15  # allocator, CUDA context, backward temporaries


def fit_table(rows: list[Row]) -> str:
    """Which modes fit which card (total x HEADROOM <= card)."""
    out = "| card | " + " | ".join(sorted({r.model for r in rows}, reverse=True)) + " |\n|---|---|---|\n"
    for card in CARDS_GB:
        cells = []
        for model in sorted({r.model for r in rows}, reverse=True):
            fits = [r.mode.key for r in rows if r.model == model and r.total * HEADROOM <= card * GB]
            cells.append(", ".join(f"`{k}`" for k in fits) or "none (use FSDP / ZeRO across GPUs)")
        out += f"| {card} GB | " + " | ".join(cells) + " |\n"
    return out


def mode_legend() -> str:
    switches = {
        "full": "defaults of configs/sft_*.yaml (`train.precision=bf16`)",
        "full_text": "`train.freeze_text_embedding=false`",
        "full_talker": "`train.train_code_predictor=false`",
        "full_gc": "`train.gradient_checkpointing=true`",
        "bf16": "`train.pure_bf16=true train.precision=no`",
        "bf16_gc": "`train.pure_bf16=true train.precision=no train.gradient_checkpointing=true`",
        "lora": "`train.lora_rank=16`",
        "lora_bf16": "`train.lora_rank=16 train.pure_bf16=true train.precision=no`",
        "lora_bf16_gc": "`train.lora_rank=16 train.pure_bf16=true train.precision=no train.gradient_checkpointing=true`",
    }
    return "".join(f"| `{m.key}` | {m.label} | {switches[m.key]} |\n" for m in MODES)


def render_doc(rows: list[Row], counts: dict[str, Counts], frames: int) -> str:
    import torch
    import transformers

    cols = __doc__.split("Columns (GB = 1e9 bytes):", 1)[1].split("Activation formula", 1)[0].strip()
    formula = "Activation formula\n\n" + __doc__.split("Activation formula. ", 1)[1].replace("::", ":", 1)
    return (
        "# Training memory per mode (Qwen3-TTS 12Hz 1.7B and 0.6B)\n\n"
        "<!-- generated by scripts/memory_table.py; edit the script, not this file -->\n\n"
        "Regenerate with `python scripts/memory_table.py` (`--frames N` for another micro-batch size). "
        "These numbers are computed, not measured on a GPU: the model is instantiated on PyTorch's `meta` "
        "device with the released dimensions (exact parameter counts, no weights, no download), and bytes "
        "follow from counts and dtypes, so the table does not depend on the machine that generates it "
        f"(generated with torch {torch.__version__}, transformers {transformers.__version__}).\n\n"
        f"## Per mode, one micro-batch of {frames:,} audio frames ({frames / 12.5:.0f} s of speech), GB\n\n"
        + markdown_table(rows, frames)
        + "\nPer GPU under DDP. FSDP (`configs/accelerate/fsdp.yaml`) divides weights, grads and AdamW "
          "state by the number of GPUs; DeepSpeed ZeRO-2 divides grads and AdamW state. Activations "
          "scale linearly with the frames in a micro-batch (a batch of 4 clips of 10 s is 500 frames): "
          "lower `train.batch_size` / `train.max_tokens_per_batch` and raise `train.grad_accum` to fit.\n\n"
        "| mode | meaning | recipe switches |\n|---|---|---|\n" + mode_legend()
        + f"\n## Which mode fits a card ({frames:,} frames per micro-batch, {int(round((HEADROOM - 1) * 100))}% headroom)\n\n"
        + fit_table(rows)
        + "\n## Parameters (exact, from the module tree)\n\n"
        + counts_table(counts)
        + "\n`talker.other` = text_projection, codec_head and the final norm. The speaker encoder never "
          "trains (speaker vectors come from data prep) but is stored; the text embedding (151936 x 2048) "
          "is frozen by default. LoRA rank 16 on the talker's q/k/v/o and gate/up/down projections has "
          + ", ".join(f"{_m(c.lora_talker[16])} ({n})" for n, c in counts.items())
          + " adapter parameters; on the code predictor's too: +"
          + ", ".join(f"{_m(c.lora_code_predictor[16])} ({n})" for n, c in counts.items())
          + " (`train.lora_code_predictor=true`). LoRA trains the adapters only: the speaker rows are written "
          "from the locked speaker vectors at export.\n\n"
        f"## Activations for {frames:,} frames, GB\n\n"
        + activation_table(frames)
        + "\nThe code predictor runs a 16-position sequence per frame through its 5 layers, so per frame it "
          "saves more than the talker does; gradient checkpointing (`train.gradient_checkpointing=true`, "
          "applied to both) is the main lever for long batches.\n\n"
        "## Columns\n\n" + cols.replace("``", "`") + "\n\n## " + formula.replace("``", "`")
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Print the training-memory table of the released Qwen3-TTS models per memory mode "
        "(exact parameter counts from a meta-device model, no download) and rewrite docs/memory.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=1000, help="audio frames per micro-batch for the activation column (default 1000)")
    p.add_argument("--output", default=str(DOC), help="markdown file to (re)write (default docs/memory.md)")
    p.add_argument("--no-write", action="store_true", help="print only")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.frames < 1:
        print("error: --frames must be >= 1", file=sys.stderr)
        return 2
    rows, counts = table_rows(args.frames)
    print(markdown_table(rows, args.frames))
    if not args.no_write:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(render_doc(rows, counts, args.frames))
        os.replace(tmp, out)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
