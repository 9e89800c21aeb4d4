"""The Darwin blend of two checkpoint folders, end to end (what ``qwen-tts-ext blend`` runs).

1. resolve both parents (local folders or Hub ids) and refuse unsafe outputs (an input, a folder
   containing an input, a non-empty folder without ``overwrite``);
2. plan and check compatibility from the safetensors headers alone (nothing loaded yet);
3. stream the blend into a temp folder beside the output while a background thread hashes the
   sources; copy config, tokenizer and ``speech_tokenizer/``; write ``darwin_blend.json``, a model
   card ``README.md`` and (optionally) the MRI report; then swap the folder into place.

A failure at any point leaves no output behind.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import shutil
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import torch

import qwen_tts_ext
from qwen_tts_ext.blend import mri
from qwen_tts_ext.blend.lerp import stream_blend
from qwen_tts_ext.blend.config import BlendConfig, parse_size
from qwen_tts_ext.blend.plan import PROJECTIONS, BlendPlan, make_plan, schedule_summary
from qwen_tts_ext.blend.stream_io import (
    StreamingCheckpoint,
    hf_cache_sha256,
    patch_header_placeholders,
    sha256_file_cached,
)
from qwen_tts_ext.checkpoint_io import (
    LazyCheckpoint,
    copy_support_files,
    require_llm_checkpoint,
    require_tts_checkpoint,
)
from qwen_tts_ext.command import emit
from qwen_tts_ext.errors import UserError
from qwen_tts_ext.outputs import check_output_dir, output_dir

COMMAND = "blend"
LEGACY = {COMMAND: ["darwin_blend.json", "config.json"]}  # outputs written before the marker existed
REPORT_LEGACY = {COMMAND: ["mri.json"]}

PROVENANCE_FILE = "darwin_blend.json"
# Written by us into the output; never carried over from a (previously blended) input.
OWN_FILES = ("README.md", PROVENANCE_FILE, "mri.json", "mri.png")


def tensor_table(ck: LazyCheckpoint) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    return {name: (ck.shape(name), ck.dtype(name)) for name in ck.keys()}


def plan_for(tts: LazyCheckpoint, llm: LazyCheckpoint, cfg: BlendConfig) -> BlendPlan:
    """The checked plan for two opened checkpoints."""
    return make_plan(
        tts.config(), tensor_table(tts), llm.config(), tensor_table(llm), cfg.schedule_args(),
        allow_other_backbones=cfg.allow_other_backbones,
    )


def _dir_bytes(path: Path, skip_root_weights: bool) -> int:
    total = 0
    for p in path.rglob("*"):
        at_root = p.parent == path
        if p.is_file() and not (skip_root_weights and at_root and (p.suffix == ".safetensors" or p.name.endswith(".index.json"))):
            total += p.stat().st_size
    return total


# --------------------------------------------------------------------------- hashing


class SourceHasher(threading.Thread):
    """sha256 of the parents' weight files, in a background thread (hashlib releases the GIL)."""

    def __init__(self, sources: dict[str, list[Path]], enabled: bool = True):
        super().__init__(daemon=True, name="sha256-sources")
        self.sources = sources
        self.enabled = enabled
        self.result: dict[str, list[dict[str, Any]]] = {}
        self.error: BaseException | None = None
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """Stop hashing soon (the blend failed; nobody will read the digests)."""
        self._cancelled.set()

    def _check(self, _nbytes: int) -> None:
        if self._cancelled.is_set():
            raise InterruptedError("cancelled")

    def run(self) -> None:
        try:
            for role, files in self.sources.items():
                rows = []
                for f in files:
                    digest = hf_cache_sha256(f) or (
                        sha256_file_cached(f, progress=self._check) if self.enabled else None
                    )
                    rows.append({"file": f.name, "bytes": f.stat().st_size, "sha256": digest})
                self.result[role] = rows
        except BaseException as exc:  # reported by the caller
            self.error = exc

    def combined(self, role: str) -> str | None:
        """One digest for a (possibly sharded) source: sha256 over ``"<sha256>  <file>\\n"`` lines."""
        rows = self.result.get(role, [])
        if not rows or any(r["sha256"] is None for r in rows):
            return None
        if len(rows) == 1:
            return rows[0]["sha256"]
        return hashlib.sha256("".join(f"{r['sha256']}  {r['file']}\n" for r in rows).encode()).hexdigest()


_PLACEHOLDER = {role: (f"<{role}-sha256-pending>").ljust(64, "~") for role in ("tts", "llm")}


# --------------------------------------------------------------------------- outputs


def _source_id(given: str, resolved: Path) -> str:
    return given if not Path(given).expanduser().exists() else str(resolved)


def reproduce_command(cfg: BlendConfig) -> str:
    parts = ["qwen-tts-ext blend", f"--tts {cfg.tts}", f"--llm {cfg.llm}", f"--alpha {cfg.alpha:g}"]
    if cfg.alpha_per_layer is not None:
        value = cfg.alpha_per_layer if isinstance(cfg.alpha_per_layer, str) else json.dumps(cfg.alpha_per_layer)
        parts.append(f"--alpha-per-layer '{value}'")
    if cfg.freeze_layers:
        fl = ",".join(map(str, cfg.freeze_layers)) if isinstance(cfg.freeze_layers, (list, tuple)) else cfg.freeze_layers
        parts.append(f"--freeze-layers {fl}")
    if sorted(cfg.tensors) != sorted(PROJECTIONS):
        parts.append(f"--tensors {','.join(cfg.tensors)}")
    parts.append(f"--output {Path(cfg.output).name or cfg.output}")
    return " \\\n    ".join(parts)


def model_card(plan: BlendPlan, cfg: BlendConfig, provenance: dict) -> str:
    """A short README.md describing the blend (front matter like mergekit's cards)."""
    src = provenance["sources"]
    tts_id, llm_id = src["tts"]["id"], src["llm"]["id"]
    alphas = sorted({e.alpha for e in plan.entries})
    constant = len(alphas) == 1
    sched = schedule_summary(plan)
    lines = [
        "---",
        "base_model:",
        f"- {tts_id}",
        f"- {llm_id}",
        "library_name: qwen-tts",
        "pipeline_tag: text-to-speech",
        "tags:",
        "- qwen3-tts",
        "- darwin-blend",
        "- merge",
        "---",
        f"# {Path(cfg.output).name or 'Darwin blend'}",
        "",
        f"A Darwin FFN blend of the Qwen3-TTS checkpoint **{tts_id}** with the Qwen3 language model "
        f"**{llm_id}**, made with qwen-tts-ext {qwen_tts_ext.__version__}.",
        "",
        f"For each of the talker's {plan.tts.num_hidden_layers} layers, the FFN projections "
        f"({', '.join(p + '_proj' for p in plan.schedule.projections)}) were interpolated in float32 and cast "
        "back to the checkpoint dtype:",
        "",
        "    W = (1 - alpha) * W_tts + alpha * W_llm",
        "",
        f"{len(plan.active)} tensors changed; every other tensor (attention, norms, embeddings, code predictor, "
        "speaker encoder, speech tokenizer) is byte-identical to the TTS parent. The LLM contributes only its "
        "FFN weights; the result loads and runs like any Qwen3-TTS checkpoint.",
        "",
        "| setting | value |",
        "|---|---|",
        f"| alpha | {alphas[0]:g} (every blended tensor) |" if constant else
        f"| alpha | {min(alphas):g} .. {max(alphas):g} (per-layer schedule, below) |",
        f"| frozen layers | {', '.join(map(str, plan.schedule.frozen)) or 'none'} |",
        f"| blended tensors | {len(plan.active)} of {provenance['tensors']['total']} |",
        "",
    ]
    if not constant:
        projs = plan.schedule.projections
        lines += ["| layer | " + " | ".join(projs) + " |", "|---|" + "---|" * len(projs)]
        for layer, row in sched["per_layer"].items():
            lines.append(f"| {layer} | " + " | ".join(f"{row[p]:.4g}" for p in projs) + " |")
        lines.append("")
    lines += [
        "## Sources",
        "",
        "| role | checkpoint | sha256 |",
        "|---|---|---|",
    ]
    for role in ("tts", "llm"):
        digest = src[role].get("sha256") or "not computed"
        lines.append(f"| {role.upper()} | {src[role]['id']} | `{digest}` |")
    lines += [
        "",
        "## What to expect",
        "",
        "Published findings for Qwen3-TTS-1.7B x Qwen3-1.7B: alpha 0.01 makes no audible change, 0.03 brings "
        "out emotion, 0.05 is the strongest stable value, and 0.10 breaks the stop signal (generation runs "
        "away). The two parents must share the backbone; cross-backbone blends fail.",
        "",
        "## Reproduce",
        "",
        "```bash",
        reproduce_command(cfg),
        "```",
        "",
        f"Full provenance (per-tensor alpha, file hashes, settings) is in `{PROVENANCE_FILE}` and in the "
        "safetensors metadata (`darwin_blend`).",
        "",
    ]
    return "\n".join(lines)


def _print(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def loud_warning(msg: str) -> None:
    bar = "!" * 78
    print(f"\n{bar}\nWARNING: {msg}\n{bar}\n", file=sys.stderr, flush=True)


def run(cfg: BlendConfig) -> int:
    """``qwen-tts-ext blend``: the blend, with progress on stderr and the results on stdout."""
    blend_checkpoint(cfg, progress=sys.stderr.isatty() or None, result=emit)
    return 0


def _write_report_dir(report: dict, cfg: BlendConfig) -> tuple[Path, Path]:
    with output_dir(cfg.report_dir, command=COMMAND, overwrite=cfg.overwrite, flag="--report",
                    legacy=REPORT_LEGACY) as tmp:
        mri.write_report(report, tmp)
    folder = Path(cfg.report_dir).expanduser().absolute()
    return folder / "mri.json", folder / "mri.png"


def blend_checkpoint(cfg: BlendConfig, *, log: Callable[[str], None] = _print, progress: bool | None = True,
                     result: Callable[[str], None] = _print, extra_provenance: dict | None = None) -> dict:
    """Run the blend described by ``cfg``; return a summary dict (paths, counts, timings).

    ``extra_provenance``: more keys for ``darwin_blend.json`` (the genome search puts its settings there).

    ``log`` gets notes and progress messages; ``result`` what the user asked for (the plan of a dry
    run, the MRI summary, what was written).
    """
    from tqdm.auto import tqdm

    cfg.check()
    tts_dir = require_tts_checkpoint(cfg.tts, what="--tts")
    llm_dir = require_llm_checkpoint(cfg.llm, what="--llm")
    if tts_dir == llm_dir:
        raise UserError("--tts and --llm are the same folder")
    inputs = {"--tts": tts_dir, "--llm": llm_dir}
    out = None
    if cfg.output:
        out = check_output_dir(cfg.output, command=COMMAND, overwrite=cfg.overwrite, inputs=inputs, legacy=LEGACY)
    if cfg.report and cfg.report_dir:
        check_output_dir(cfg.report_dir, command=COMMAND, overwrite=cfg.overwrite, flag="--report", inputs=inputs,
                         legacy=REPORT_LEGACY)
    max_shard = parse_size(cfg.shard_size)

    with StreamingCheckpoint(tts_dir) as tts, StreamingCheckpoint(llm_dir) as llm:
        plan = plan_for(tts, llm, cfg)
        for note in plan.notes:
            log(f"note: {note}")
        for w in plan.warnings:
            loud_warning(w)
        sources_desc = {"tts": _source_id(cfg.tts, tts_dir), "llm": _source_id(cfg.llm, llm_dir)}

        if cfg.dry_run:
            read_llm = sum(llm.nbytes(e.llm_name) for e in plan.active)
            result(f"TTS {sources_desc['tts']}: {len(tts)} tensors, {tts.total_bytes / 2**30:.2f} GiB in "
                f"{len(tts.files)} file(s)")
            result(f"LLM {sources_desc['llm']}: {len(llm)} tensors; {len(plan.active)} FFN tensors read "
                f"({read_llm / 2**30:.2f} GiB)")
            result(plan.describe())
            result(f"would write {tts.total_bytes / 2**30:.2f} GiB of weights"
                + (f" to {out}" if out else "") + " (dry run: nothing written)")
            return {"dry_run": True, "plan": plan, "alphas": plan.alpha_by_tensor()}

        if out is None:  # MRI report alone
            bar = tqdm(total=len(plan.entries), desc="MRI", unit="tensor", disable=not progress)
            stats = mri.measure(plan, tts, llm, progress=bar.update)
            bar.close()
            report = mri.build_report(plan, stats, sources_desc)
            json_path, png_path = _write_report_dir(report, cfg)
            result(mri.format_summary(report))
            result(f"MRI report: {json_path} and {png_path}")
            return {"report": report, "report_json": json_path, "report_png": png_path}

        support = _dir_bytes(tts_dir, skip_root_weights=True)
        need = tts.total_bytes + support
        existing = next(p for p in (out, *out.parents) if p.exists())
        free = shutil.disk_usage(existing).free
        if free < need * 1.02:
            raise UserError(f"not enough disk space for {out}: need {need / 2**30:.2f} GiB, "
                            f"{free / 2**30:.2f} GiB free")

        hasher = SourceHasher({"tts": tts.files, "llm": llm.files}, enabled=cfg.hash_sources)
        hasher.start()
        alpha_map = plan.alpha_by_tensor()
        meta = dict(tts.metadata())
        meta.setdefault("format", "pt")
        meta["darwin_blend"] = json.dumps({
            "tool": f"qwen-tts-ext {qwen_tts_ext.__version__}",
            "formula": "(1 - alpha) * tts + alpha * llm, float32",
            "tts": sources_desc["tts"], "llm": sources_desc["llm"],
            "tts_sha256": _PLACEHOLDER["tts"], "llm_sha256": _PLACEHOLDER["llm"],
            "alpha": cfg.alpha, "frozen_layers": list(plan.schedule.frozen),
        }, separators=(",", ":"))
        meta["darwin_blend.alphas"] = json.dumps(alpha_map, separators=(",", ":"))

        try:
            written = _write_output(cfg, plan, tts, llm, tts_dir, llm_dir, out, hasher, meta, sources_desc,
                                    max_shard, log, progress, extra_provenance)
        except BaseException:
            hasher.cancel()
            raise
        outcome, provenance, report, report_paths = written

    result(f"blended {len(outcome.blended)} FFN tensors (alpha {min(alpha_map.values()):g}..{max(alpha_map.values()):g}), "
        f"{outcome.copied} tensors copied byte for byte, in {outcome.seconds:.1f} s")
    if report is not None:
        result(mri.format_summary(report))
        result(f"MRI report: {report_paths[0]} and {report_paths[1]}")
    result(f"wrote {out}")
    return {"output": out, "plan": plan, "result": outcome, "provenance": provenance,
            "report": report, "report_paths": report_paths}


def _write_output(cfg, plan, tts, llm, tts_dir, llm_dir, out, hasher, meta, sources_desc, max_shard, log, progress,
                  extra_provenance=None):
    """Everything that writes: weights, support files, provenance, card, report (atomically)."""
    from tqdm.auto import tqdm

    with output_dir(out, command=COMMAND, overwrite=cfg.overwrite, legacy=LEGACY) as tmp:
        copy_support_files(tts_dir, tmp, exclude=OWN_FILES)
        bar = tqdm(total=tts.total_bytes, desc="blend", unit="B", unit_scale=True, unit_divisor=1024,
                   disable=not progress)
        result = stream_blend(plan, tts, llm, tmp, metadata=meta, max_shard_bytes=max_shard,
                              measure=cfg.report, progress=bar.update)
        bar.close()
        if hasher.is_alive():
            log("finishing sha256 of the sources ...")
        hasher.join()
        if hasher.error is not None:
            raise UserError(f"could not hash the sources: {hasher.error}")
        digests = {role: hasher.combined(role) for role in ("tts", "llm")}
        for f in result.files:
            patch_header_placeholders(f, {_PLACEHOLDER[r]: (digests[r] or "not-computed").ljust(64)
                                          for r in ("tts", "llm")})

        parent_blend = None
        if (tts_dir / PROVENANCE_FILE).is_file():
            parent_blend = json.loads((tts_dir / PROVENANCE_FILE).read_text(encoding="utf-8"))
        provenance = {
            "tool": "qwen-tts-ext",
            "tool_version": qwen_tts_ext.__version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "method": "darwin_ffn_lerp",
            "formula": "W = (1 - alpha) * W_tts + alpha * W_llm, computed in float32, cast to the TTS dtype",
            "sources": {
                role: {"id": sources_desc[role], "path": str(d), "sha256": digests[role],
                       "files": hasher.result.get(role, [])}
                for role, d in (("tts", tts_dir), ("llm", llm_dir))
            },
            "backbone": {"tts": plan.tts.__dict__, "llm": plan.llm.__dict__},
            "schedule": schedule_summary(plan),
            "alpha_per_tensor": {e.tts_name: {"alpha": e.alpha, "llm_tensor": e.llm_name} for e in plan.entries},
            "tensors": {"total": len(tts), "blended": len(result.blended), "byte_identical": result.copied},
            "config": {k: v for k, v in cfg.__dict__.items()},
            "versions": {"torch": torch.__version__, "safetensors": _version("safetensors"),
                         "qwen_tts": _version("qwen-tts")},
            "parent_blend": parent_blend,
            **(extra_provenance or {}),
        }
        (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, default=str), encoding="utf-8")
        (tmp / "README.md").write_text(model_card(plan, cfg, provenance), encoding="utf-8")
        report = report_paths = None
        if cfg.report:
            report = mri.build_report(plan, result.stats, sources_desc)
            if cfg.report_dir:
                report_paths = _write_report_dir(report, cfg)
            else:
                mri.write_report(report, tmp)
                report_paths = (out / "mri.json", out / "mri.png")
    return result, provenance, report, report_paths


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None
