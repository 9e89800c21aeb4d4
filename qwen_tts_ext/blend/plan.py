"""What a Darwin blend will do: tensor mapping, per-layer alpha schedules, compatibility checks.

For every talker layer N and projection P in {gate, up, down}:

    talker.model.layers.N.mlp.P_proj.weight  <-  model.layers.N.mlp.P_proj.weight   (the LLM's)
    W = (1 - alpha[N, P]) * W_tts + alpha[N, P] * W_llm

Everything else in the TTS checkpoint is left byte-identical. This module only *decides* (a
``BlendPlan``); ``lerp`` streams it to disk and ``runtime`` applies it to a loaded model, so both
paths share the same mapping, schedules and checks.

Schedules (``alpha_per_layer``), read from YAML/JSON text or a file:

- a number: the same alpha everywhere;
- a list of ``num_layers`` values: one alpha per layer;
- a shorter list: mergekit-style gradient, anchors spread evenly over depth and linearly interpolated
  (``[0.0, 0.05]`` ramps from 0 at layer 0 to 0.05 at the last layer);
- a mapping ``{gate: ..., up: ..., down: ...}`` of any of the above, per projection (missing
  projections use ``alpha``).

``freeze_layers`` (e.g. ``"0-3,27"``) forces alpha 0 on those layers.

Length: about 430 lines, of which the schedule grammar above and the compatibility messages (one
actionable line per mismatch) are most; they are the two halves of one decision and read best together.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml

from qwen_tts_ext.errors import UserError

from qwen_tts_ext.blend.config import PROJECTIONS  # noqa: E402  (one definition)
WARN_ALPHA = 0.10  # the published stop-signal failure point
TTS_FFN = "talker.model.layers.{layer}.mlp.{proj}_proj.weight"
LLM_FFN = "model.layers.{layer}.mlp.{proj}_proj.weight"

# (field, why it must match). FFN math needs the first four; the rest identify the backbone.
BACKBONE_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "hidden_act",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
)
SAME_BACKBONE_LLMS = {"qwen3"}


class CompatibilityError(UserError):
    """The TTS talker and the LLM cannot be blended (differences listed in the message)."""


# --------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class Backbone:
    """The transformer dimensions that decide whether two FFN stacks can be blended."""

    model_type: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    hidden_act: str
    num_attention_heads: int | None
    num_key_value_heads: int | None
    head_dim: int | None

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any], model_type: str) -> "Backbone":
        heads = cfg.get("num_attention_heads")
        head_dim = cfg.get("head_dim")
        if head_dim is None and heads:
            head_dim = cfg["hidden_size"] // heads
        return cls(
            model_type=model_type,
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"],
            num_hidden_layers=cfg["num_hidden_layers"],
            hidden_act=cfg.get("hidden_act", "silu"),
            num_attention_heads=heads,
            num_key_value_heads=cfg.get("num_key_value_heads", heads),
            head_dim=head_dim,
        )


def tts_backbone(config: Mapping[str, Any], where: str = "--tts") -> Backbone:
    """The talker's backbone from a Qwen3-TTS ``config.json`` dict."""
    talker = config.get("talker_config")
    if not isinstance(talker, Mapping):
        hint = " (it looks like an LLM: did you swap --tts and --llm?)" if "hidden_size" in config else ""
        raise UserError(f"{where} is not a Qwen3-TTS checkpoint: its config.json has no talker_config{hint}")
    try:
        return Backbone.from_dict(talker, str(config.get("model_type", "qwen3_tts")))
    except KeyError as exc:
        raise UserError(f"{where}: talker_config lacks {exc.args[0]}") from None


def llm_backbone(config: Mapping[str, Any], where: str = "--llm") -> Backbone:
    """The LLM's backbone from its ``config.json`` dict (``text_config`` of multimodal configs)."""
    if "talker_config" in config:
        raise UserError(f"{where} is a Qwen3-TTS checkpoint, not a causal LM (did you swap --tts and --llm?)")
    cfg = config
    if "hidden_size" not in cfg and isinstance(cfg.get("text_config"), Mapping):
        cfg = cfg["text_config"]
    try:
        return Backbone.from_dict(cfg, str(cfg.get("model_type", config.get("model_type", "?"))))
    except KeyError as exc:
        raise UserError(f"{where}: config.json lacks {exc.args[0]} (is this a transformer LM?)") from None


# --------------------------------------------------------------------------- schedules


def _load_text_or_file(value: str, what: str) -> Any:
    text = value.strip()
    path = Path(text).expanduser()
    if path.suffix.lower() in (".yaml", ".yml", ".json") or path.is_file():
        if not path.is_file():
            raise UserError(f"{what}: file {path} does not exist")
        text = path.read_text(encoding="utf-8")
    try:
        return yaml.safe_load(text)  # YAML is a superset of JSON
    except yaml.YAMLError:
        raise UserError(f"{what}: {value!r} is neither a number list nor a readable YAML/JSON file") from None


def _as_number(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise UserError(f"{what}: {v!r} is not a number")
    try:
        x = float(v)
    except ValueError:
        raise UserError(f"{what}: {v!r} is not a number") from None
    if not math.isfinite(x) or not 0.0 <= x <= 1.0:
        raise UserError(f"{what}: alpha {x} is outside [0, 1]")
    return x


def expand_schedule(spec: Any, num_layers: int, what: str = "alpha_per_layer") -> list[float]:
    """A number, a per-layer list, or a gradient of anchors -> exactly ``num_layers`` alphas."""
    if isinstance(spec, str) and "," in spec and not spec.strip().startswith("["):
        spec = [s for s in spec.split(",") if s.strip()]
    if not isinstance(spec, (list, tuple)):
        return [_as_number(spec, what)] * num_layers
    values = [_as_number(v, f"{what}[{i}]") for i, v in enumerate(spec)]
    if not values:
        raise UserError(f"{what}: empty list")
    if len(values) == num_layers:
        return values
    if len(values) > num_layers:
        raise UserError(
            f"{what}: {len(values)} values for a talker with {num_layers} layers; give {num_layers} "
            f"values, or fewer as gradient anchors"
        )
    if len(values) == 1:
        return values * num_layers
    # mergekit gradient: anchors at evenly spaced depths, linear in between.
    out = []
    span = len(values) - 1
    for layer in range(num_layers):
        pos = layer / (num_layers - 1) * span if num_layers > 1 else 0.0
        lo = min(int(math.floor(pos)), span - 1)
        frac = pos - lo
        out.append(values[lo] + (values[lo + 1] - values[lo]) * frac)
    return out


def parse_layers(value: Any, num_layers: int | None = None, what: str = "freeze_layers") -> list[int]:
    """``"0-3,27"`` / ``[0, 1]`` / ``5`` -> sorted layer indices (checked against ``num_layers``)."""
    if value is None or value == "" or value == []:
        return []
    items: list[Any]
    if isinstance(value, str):
        items = [s.strip() for s in value.split(",") if s.strip()]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        items = [value]
    layers: set[int] = set()
    for item in items:
        if isinstance(item, bool):
            raise UserError(f"{what}: {item!r} is not a layer index")
        if isinstance(item, int):
            layers.add(item)
            continue
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", str(item))
        if not m:
            raise UserError(f"{what}: {item!r} is not a layer index or range like 0-3")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise UserError(f"{what}: empty range {item!r}")
        layers.update(range(lo, hi + 1))
    if num_layers is not None:
        bad = sorted(x for x in layers if not 0 <= x < num_layers)
        if bad:
            raise UserError(f"{what}: layers {bad} do not exist (the talker has layers 0..{num_layers - 1})")
    return sorted(layers)


def parse_tensors(value: Any) -> tuple[str, ...]:
    """``"gate,up"`` / ``["gate_proj", "down"]`` -> a subset of ``("gate", "up", "down")`` in that order."""
    items = value.split(",") if isinstance(value, str) else list(value or [])
    names = set()
    for item in items:
        name = str(item).strip().lower().removeprefix("mlp.").removesuffix("_proj")
        if not name:
            continue
        if name not in PROJECTIONS:
            raise UserError(f"tensors: {item!r} is not one of gate, up, down")
        names.add(name)
    if not names:
        raise UserError("tensors: choose at least one of gate, up, down")
    return tuple(p for p in PROJECTIONS if p in names)


@dataclass(frozen=True)
class Schedule:
    """Alpha per (layer, projection), already validated."""

    alphas: dict[tuple[int, str], float]
    default_alpha: float
    frozen: tuple[int, ...]
    projections: tuple[str, ...]

    def alpha(self, layer: int, proj: str) -> float:
        return self.alphas.get((layer, proj), 0.0)

    @property
    def max_alpha(self) -> float:
        return max(self.alphas.values(), default=0.0)


def build_schedule(
    num_layers: int,
    alpha: float = 0.03,
    alpha_per_layer: Any = None,
    freeze_layers: Any = (),
    tensors: Any = PROJECTIONS,
) -> Schedule:
    """Resolve the user's alpha settings into one alpha per (layer, projection)."""
    default = _as_number(alpha, "alpha")
    projections = parse_tensors(tensors)
    frozen = parse_layers(freeze_layers, num_layers)
    spec = alpha_per_layer
    if isinstance(spec, str):
        spec = _load_text_or_file(spec, "alpha_per_layer") if not re.fullmatch(r"[\d.,\s]+", spec) else spec
    per_proj: dict[str, list[float]] = {}
    if isinstance(spec, Mapping):
        for key, sub in spec.items():
            name = str(key).strip().lower().removesuffix("_proj")
            if name not in PROJECTIONS:
                raise UserError(f"alpha_per_layer: key {key!r} is not one of gate, up, down")
            proj = name
            per_proj[proj] = expand_schedule(sub, num_layers, f"alpha_per_layer.{key}")
    elif spec is not None:
        common = expand_schedule(spec, num_layers)
        per_proj = {p: common for p in PROJECTIONS}
    alphas: dict[tuple[int, str], float] = {}
    for proj in projections:
        values = per_proj.get(proj, [default] * num_layers)
        for layer in range(num_layers):
            alphas[(layer, proj)] = 0.0 if layer in frozen else values[layer]
    return Schedule(alphas, default, tuple(frozen), projections)


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class BlendEntry:
    """One blended tensor."""

    layer: int
    proj: str
    tts_name: str
    llm_name: str
    alpha: float
    shape: tuple[int, ...]
    tts_dtype: torch.dtype
    llm_dtype: torch.dtype

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class BlendPlan:
    """The blend, decided: which tensors, which alphas, and the two parents' backbones."""

    entries: list[BlendEntry]
    schedule: Schedule
    tts: Backbone
    llm: Backbone
    warnings: list[str] = field(default_factory=list)  # loud: alpha in the known-broken range
    notes: list[str] = field(default_factory=list)  # informational (e.g. parents' dtypes differ)

    @property
    def active(self) -> list[BlendEntry]:
        """Entries that change the checkpoint (alpha > 0)."""
        return [e for e in self.entries if e.alpha > 0]

    def alpha_by_tensor(self) -> dict[str, float]:
        return {e.tts_name: e.alpha for e in self.entries}

    def layer_table(self) -> list[tuple[int, dict[str, float]]]:
        rows: dict[int, dict[str, float]] = {}
        for e in self.entries:
            rows.setdefault(e.layer, {})[e.proj] = e.alpha
        return sorted(rows.items())

    def describe(self) -> str:
        """A human-readable plan (what ``--dry-run`` prints)."""
        projs = self.schedule.projections
        lines = [f"mapping: {TTS_FFN.format(layer='N', proj='P')} <- LLM {LLM_FFN.format(layer='N', proj='P')}",
                 f"{'layer':>5}  " + "  ".join(f"{p:>7}" for p in projs)]
        for layer, row in self.layer_table():
            cells = "  ".join(f"{row[p]:7.4f}" for p in projs)
            lines.append(f"{layer:>5}  {cells}" + ("   (frozen)" if layer in self.schedule.frozen else ""))
        blended_bytes = sum(e.numel * e.tts_dtype.itemsize for e in self.active)
        lines.append(
            f"{len(self.active)} of {len(self.entries)} mapped FFN tensors change "
            f"({blended_bytes / 2**20:.1f} MiB); every other tensor is copied byte for byte"
        )
        return "\n".join(lines)


def _dtype_ok(dt: torch.dtype) -> bool:
    return dt.is_floating_point and dt.itemsize >= 2


def make_plan(
    tts_config: Mapping[str, Any],
    tts_tensors: Mapping[str, tuple[tuple[int, ...], torch.dtype]],
    llm_config: Mapping[str, Any],
    llm_tensors: Mapping[str, tuple[tuple[int, ...], torch.dtype]],
    schedule_args: Mapping[str, Any] | None = None,
    *,
    allow_other_backbones: bool = False,
) -> BlendPlan:
    """Check the two parents fit together and build the plan; raise ``CompatibilityError`` listing every difference.

    ``*_tensors`` map tensor names to ``(shape, dtype)`` (from safetensors headers or a loaded model).
    ``schedule_args`` are ``build_schedule``'s keyword arguments.
    """
    tts, llm = tts_backbone(tts_config), llm_backbone(llm_config)
    diffs: list[str] = []
    for name in BACKBONE_FIELDS:
        a, b = getattr(tts, name), getattr(llm, name)
        if a is not None and b is not None and a != b:
            diffs.append(f"{name} {a} (TTS talker) vs {b} (LLM)")
    if llm.model_type not in SAME_BACKBONE_LLMS and not allow_other_backbones:
        diffs.append(f"LLM model_type {llm.model_type!r} is not Qwen3 (the talker is a Qwen3 backbone)")
    if diffs:
        raise CompatibilityError(
            "the TTS talker and the LLM are not the same backbone, and cross-backbone blends are known to "
            "fail: " + "; ".join(diffs) + ". Use the LLM the talker was built on (Qwen3-1.7B for a 1.7B "
            "TTS, Qwen3-0.6B for a 0.6B one)"
        )

    schedule = build_schedule(tts.num_hidden_layers, **dict(schedule_args or {}))
    entries: list[BlendEntry] = []
    missing_tts, missing_llm, shape_diffs, dtype_diffs = [], [], [], []
    for layer in range(tts.num_hidden_layers):
        for proj in schedule.projections:
            tn, ln = TTS_FFN.format(layer=layer, proj=proj), LLM_FFN.format(layer=layer, proj=proj)
            t, l = tts_tensors.get(tn), llm_tensors.get(ln)
            if t is None:
                missing_tts.append(tn)
            if l is None:
                missing_llm.append(ln)
            if t is None or l is None:
                continue
            if tuple(t[0]) != tuple(l[0]):
                shape_diffs.append(f"{proj}_proj of layer {layer}: {tuple(t[0])} vs {tuple(l[0])}")
            for who, (_, dt), nm in (("TTS", t, tn), ("LLM", l, ln)):
                if not _dtype_ok(dt):
                    dtype_diffs.append(f"{who} {nm} is {str(dt).replace('torch.', '')}")
            entries.append(BlendEntry(layer, proj, tn, ln, schedule.alpha(layer, proj), tuple(t[0]), t[1], l[1]))

    def _few(items: list[str]) -> str:
        return ", ".join(items[:3]) + (f" (+{len(items) - 3} more)" if len(items) > 3 else "")

    problems = []
    if missing_tts:
        problems.append(f"the TTS checkpoint lacks {len(missing_tts)} talker FFN tensors: {_few(missing_tts)}")
    if missing_llm:
        problems.append(f"the LLM lacks {len(missing_llm)} FFN tensors: {_few(missing_llm)}")
    if shape_diffs:
        problems.append(f"{len(shape_diffs)} FFN shapes differ (TTS vs LLM): {_few(shape_diffs)}")
    if dtype_diffs:
        problems.append(f"FFN tensors must be 16/32/64-bit floats (dequantise first): {_few(dtype_diffs)}")
    if problems:
        raise CompatibilityError("cannot blend: " + "; ".join(problems))

    plan = BlendPlan(entries, schedule, tts, llm)
    mixed = sorted({(str(e.tts_dtype), str(e.llm_dtype)) for e in entries if e.tts_dtype != e.llm_dtype})
    if mixed:
        plan.notes.append(
            "FFN dtypes differ between the parents (" + ", ".join(f"{a} vs {b}" for a, b in mixed) + "); "
            "the math runs in float32 and the result keeps the TTS dtype"
        )
    if schedule.max_alpha >= WARN_ALPHA:
        plan.warnings.append(alpha_warning(schedule.max_alpha))
    return plan


def alpha_warning(max_alpha: float) -> str:
    return (
        f"alpha up to {max_alpha:g} (>= {WARN_ALPHA:g}): at 10% the LLM's 'keep going' pattern is known to override "
        "the stop signal; generation may run away (minutes of audio for one sentence). 3% is the tested default, "
        "5% the strongest stable value"
    )


def schedule_summary(plan: BlendPlan) -> dict[str, Any]:
    """A JSON-friendly summary of the schedule: per layer and projection, plus the frozen layers."""
    return {
        "default_alpha": plan.schedule.default_alpha,
        "projections": list(plan.schedule.projections),
        "frozen_layers": list(plan.schedule.frozen),
        "per_layer": {str(layer): row for layer, row in plan.layer_table()},
    }


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False, default=str)
