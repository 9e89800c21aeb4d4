"""``BlendConfig``: every setting of ``qwen-tts-ext blend`` (YAML keys = these names; flags map onto them)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from qwen_tts_ext.config import Share
from qwen_tts_ext.errors import UserError

PROJECTIONS = ("gate", "up", "down")


@dataclass
class BlendConfig:
    """Settings of ``qwen-tts-ext blend`` (YAML keys = these names; CLI flags map onto them)."""

    tts: str = ""  # Qwen3-TTS checkpoint: local folder or Hub id
    llm: str = ""  # Qwen3 causal LM with the talker's dimensions: local folder or Hub id
    output: str = ""  # new checkpoint folder
    alpha: Share = 0.03  # default alpha for every blended tensor
    alpha_per_layer: Any = None  # list / gradient anchors / {gate: .., up: .., down: ..} / YAML or JSON file
    freeze_layers: Any = field(default_factory=list)  # layers kept at alpha 0, e.g. [0, 1] or "0-3,27"
    tensors: list[str] = field(default_factory=lambda: list(PROJECTIONS))  # which projections blend
    overwrite: bool = False  # replace this command's previous output at `output`
    dry_run: bool = False  # print the plan, write nothing
    report: bool = False  # also write the MRI report (mri.json + mri.png)
    report_dir: str = ""  # where the report goes (default: the output folder)
    shard_size: str = "input"  # "input" (mirror the TTS files), "single", or a size like 2GB
    hash_sources: bool = True  # sha256 of the parents' weight files in darwin_blend.json
    allow_other_backbones: bool = False  # permit an LLM whose model_type is not qwen3 (known to fail)

    def validate(self) -> None:
        if self.report_dir:  # a report folder asks for the report
            self.report = True
        UserError.collect(self.problems(required=False))

    def problems(self, required: bool = True) -> list[str]:
        out = []
        if required and not self.tts:
            out.append("pass --tts (a Qwen3-TTS checkpoint folder or Hub id)")
        if required and not self.llm:
            out.append("pass --llm (a Qwen3 causal LM checkpoint folder or Hub id, e.g. Qwen/Qwen3-1.7B)")
        if required and not self.output and not self.dry_run and not (self.report and self.report_dir):
            out.append("pass --output DIR (or --dry-run to see the plan, or --report DIR for the MRI alone)")
        try:
            parse_size(self.shard_size)
        except UserError as exc:
            out.append(str(exc))
        return out

    def check(self) -> None:
        """Every required setting present and every value sane (after file, flags and overrides merge)."""
        UserError.collect(self.problems())

    def schedule_args(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "alpha_per_layer": self.alpha_per_layer,
            "freeze_layers": self.freeze_layers,
            "tensors": self.tensors,
        }


_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str | int) -> int | None:
    """``"input"`` -> None (mirror the input files), ``"single"`` -> 0 (one file), ``"2GB"`` -> bytes."""
    if isinstance(text, int):
        return text
    t = str(text).strip().upper()
    if t == "INPUT":
        return None
    if t in ("SINGLE", "0"):
        return 0
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMG]I?B|B)?", t)
    if not m:
        raise UserError(f"shard_size: {text!r} is not 'input', 'single' or a size like 2GB / 500MB")
    return int(float(m.group(1)) * _UNITS[m.group(2) or ""])
