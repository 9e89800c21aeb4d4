"""What ``sft`` checks before anything loads, and the run folder it writes into.

A run folder (``output_dir``) is written progressively (checkpoints, metrics, samples, the export),
so it cannot appear atomically like other outputs. Instead:

- a new or empty folder is taken, and a ``.qwen-tts-ext.json`` marker (command ``sft``) is written
  at the start, so later runs know the folder is this command's;
- a folder holding this command's previous run is continued with ``checkpoint.resume=true`` or
  started over with ``overwrite`` (only the entries this command writes are removed);
- anything else (a file, a path under a file, a folder of the user's, the model or data folder) is
  refused before any model loads.

Resuming loads the checkpoint with ``accelerator.load_state``, which unpickles its
``custom_checkpoint_*.pkl`` and ``random_states_*.pkl``. So a checkpoint is resumed only from a run
folder with this command's marker and a ``trainer_state.json`` that says this suite wrote it. And it
continues the run only with the objective and the data it trained on: the recipe is compared with the
run's ``config.json`` (``config.resume_changes``), and a change is refused unless ``force``.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from qwen_tts_ext.errors import UserError
from qwen_tts_ext.outputs import MARKER, check_output_dir, owner, write_marker
from qwen_tts_ext.train.config import SFTConfig, resume_changes

COMMAND = "sft"
WRITTEN_BY = "qwen-tts-ext"  # the trainer_state.json field "written_by" of every checkpoint this suite saves
STATE_FILE = "trainer_state.json"
CONFIG_FILE = "config.json"  # the recipe of the run, saved at its start (config.recipe_record)
# What a run writes into output_dir: the only entries --overwrite removes.
RUN_ENTRIES = ("checkpoints", "export", "export-*", ".export*", "metrics.jsonl", "summary.json", "config.json",
               "speakers.json", "samples", "logs", "wandb", MARKER)
# What `prepare` writes beside dataset/ (any one of them marks a prepared folder).
PREP_FILES = ("speakers.safetensors", "prepare_config.json", "train_with_codes.jsonl", "stats.json")


def _absolute(path: str) -> Path:
    return Path(os.path.abspath(os.path.expanduser(str(path))))


@dataclass
class RunPlan:
    """The checked inputs of one run."""

    model_dir: Path
    output_dir: Path
    mode: str  # "new", "resume" or "overwrite"
    resume_from: Path | None = None
    forced: list[str] | None = None  # resume: the objective/data keys that changed (allowed by --force)


def checkpoints(ckpt_root: Path) -> list[Path]:
    """``step-*`` checkpoint folders (with their trainer_state.json), oldest first."""
    if not ckpt_root.is_dir():
        return []
    found = [p for p in ckpt_root.iterdir() if p.is_dir() and p.name.startswith("step-")
             and p.name[5:].isdigit() and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def trainer_state_record(state: dict) -> str:
    """The trainer_state.json text saved with a checkpoint (says this suite wrote it)."""
    return json.dumps({**state, "written_by": WRITTEN_BY})


def check_data(path: str, speakers: str = "") -> Path:
    """The data folder is the output of ``prepare``: its format version, columns and every code's range are
    checked here (``read_prepared``: memory-mapped, about a second per 1000 hours), before the run folder
    is touched or a model loads."""
    data = _absolute(path)
    if not data.exists():
        raise UserError(f"--data {data}: no such folder; pass the output folder of prepare_data.py")
    if not data.is_dir():
        raise UserError(f"--data {data} is a file; pass the output folder of prepare_data.py")
    saved_dataset = (data / "dataset_info.json").is_file() and (data / "state.json").is_file()
    if not (data / "dataset").is_dir() and not saved_dataset:
        prep_files = [n for n in PREP_FILES if (data / n).exists()]
        why = f"it has {prep_files[0]} but no dataset/ folder" if prep_files else "no dataset/ folder"
        raise UserError(f"--data {data} is not a prepared dataset ({why}); run prepare_data.py and pass its "
                        "output folder")
    spk = _absolute(speakers) if speakers else data / "speakers.safetensors"
    if not spk.is_file():
        where = "data.speakers" if speakers else f"--data {data}"
        raise UserError(f"{where}: {spk} does not exist; re-run prepare_data.py (it writes speakers.safetensors)")
    from qwen_tts_ext.prepared import read_prepared

    read_prepared(data)
    return data


def check_run_dir(path: str, *, resume: bool, overwrite: bool, model: Path,
                  data: dict[str, str]) -> tuple[Path, str, Path | None]:
    """The run folder policy (see the module doc): ``(folder, mode, checkpoint to resume from)``.

    ``data``: the data inputs (``{"--data": folder, "data.speakers": file}``) the run folder may not
    overlap; ``model`` likewise.
    """
    flag = "--output-dir"
    final = _absolute(path)
    real = Path(os.path.realpath(final))
    for name, src in data.items():
        s = Path(os.path.realpath(_absolute(src)))
        if real == s:
            raise UserError(f"{flag} {final} is the {name} input itself; choose a new folder")
        if s in real.parents:
            raise UserError(f"{flag} {final} is inside the {name} input ({s}); choose a folder outside it")
        if real in s.parents:
            raise UserError(f"{flag} {final} contains the {name} input ({s}); choose another folder")
    has_run = final.is_dir() and any(p.name != MARKER for p in final.iterdir())
    ours = final.is_dir() and owner(final) == COMMAND
    if resume and has_run and not ours:
        raise UserError(f"cannot resume from {final}: it has no `qwen-tts-ext {COMMAND}` run marker ({MARKER}), "
                        "and resuming would unpickle files from it; resume only a run folder this suite wrote")
    # a file in the way, a path under a file, an unwritable parent, the model/data folder, a folder not ours
    check_output_dir(final, command=COMMAND, overwrite=True, flag=flag, inputs={"--model": model})
    if resume:
        if not has_run:
            raise UserError(f"checkpoint.resume=true but {flag} {final} holds no run to resume; drop "
                            "checkpoint.resume=true to start a new run there")
        found = checkpoints(final / "checkpoints")
        if not found:
            raise UserError(f"checkpoint.resume=true but {final / 'checkpoints'} holds no checkpoint (the run stopped "
                            "before its first save); pass --overwrite instead to start over")
        latest = found[-1]
        try:
            record = json.loads((latest / STATE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = None
        if not isinstance(record, dict) or record.get("written_by") != WRITTEN_BY:
            raise UserError(f"cannot resume from {latest}: its {STATE_FILE} was not written by {WRITTEN_BY}, and "
                            "resuming would unpickle files from it; resume only checkpoints this suite saved")
        return final, "resume", latest
    if has_run:
        if not overwrite:
            raise UserError(f"{flag} {final} holds a previous `qwen-tts-ext {COMMAND}` run; add "
                            "checkpoint.resume=true to continue it, or --overwrite to start over")
        return final, "overwrite", None
    return final, "new", None


def _shown(value) -> str:
    text = repr(value) if not isinstance(value, str) else (value or '""')
    return text if len(text) <= 60 else "..." + text[-57:]


def check_resume_config(run_dir: Path, cfg: SFTConfig) -> list[str]:
    """The objective-or-data keys the resumed recipe changes; a UserError unless ``cfg.force``."""
    try:
        saved = json.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
        if not isinstance(saved, dict):
            raise ValueError
    except (OSError, ValueError):
        if cfg.force:
            return [f"({CONFIG_FILE} unreadable)"]
        raise UserError(f"cannot resume {run_dir}: its {CONFIG_FILE} (the recipe it trained with) is missing or "
                        "unreadable, so a change of objective or data cannot be ruled out; pass --force to resume "
                        "anyway") from None
    changed = resume_changes(saved, cfg)
    if changed and not cfg.force:
        listed = "; ".join(f"{k} {_shown(old)} -> {_shown(new)}" for k, old, new in changed)
        raise UserError(f"cannot resume {run_dir}: the objective or data changed ({listed}); resume with the "
                        "saved settings, pass --force to resume anyway, or --overwrite to start over")
    return [f"{k} {_shown(old)} -> {_shown(new)}" for k, old, new in changed]


def check_inputs(cfg: SFTConfig) -> RunPlan:
    """Every check that needs no model: the model's identity (config.json), the data folder, the run folder,
    and on resume the recipe against the run's saved one."""
    from qwen_tts_ext.checkpoint_io import require_tts_checkpoint  # imports torch: not at --help time

    problems: list[UserError] = []
    model_dir = None
    try:
        model_dir = require_tts_checkpoint(cfg.model, what="--model", types=("base", "custom_voice"), llm_flag=None)
    except UserError as exc:
        problems.append(exc)
    try:
        check_data(cfg.data.path, cfg.data.speakers)
    except UserError as exc:
        problems.append(exc)
    if cfg.train.attn_implementation == "flash_attention_2":
        if importlib.util.find_spec("flash_attn") is None:
            problems.append(UserError("train.attn_implementation=flash_attention_2 but flash-attn is not installed; "
                                      "use sdpa"))
    if cfg.eval.asr and "asr" in cfg.eval.judges:
        from qwen_tts_ext.evaluation.pipeline import check_asr_dir

        try:
            check_asr_dir(cfg.eval.asr)
        except UserError as exc:
            problems.append(UserError(f"eval.asr: {exc}"))
    UserError.collect(problems)
    data = {"--data": cfg.data.path, **({"data.speakers": cfg.data.speakers} if cfg.data.speakers else {})}
    output_dir, mode, latest = check_run_dir(cfg.output_dir, resume=cfg.checkpoint.resume, overwrite=cfg.overwrite,
                                             model=model_dir, data=data)
    forced = check_resume_config(output_dir, cfg) if mode == "resume" else None
    return RunPlan(model_dir=model_dir, output_dir=output_dir, mode=mode, resume_from=latest, forced=forced)


def start_run_dir(plan: RunPlan) -> None:
    """Main process, after every process has checked: clear our previous run (overwrite), mark the folder."""
    folder = plan.output_dir
    if plan.mode == "overwrite":
        kept = []
        for entry in sorted(folder.iterdir()):
            if any(fnmatch.fnmatchcase(entry.name, pattern) for pattern in RUN_ENTRIES):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            else:
                kept.append(entry.name)
        if kept:
            print(f"--overwrite: kept {len(kept)} entr{'y' if len(kept) == 1 else 'ies'} this command does not write "
                  f"({', '.join(kept[:5])})", file=sys.stderr)
    folder.mkdir(parents=True, exist_ok=True)
    if plan.mode != "resume":
        write_marker(folder, COMMAND, written_by=WRITTEN_BY)
