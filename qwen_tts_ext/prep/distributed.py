"""``accelerate launch finetuning/prepare_data.py ...``: data prep in several processes, one per GPU (or CPU
process), with the output of a single-process run.

    accelerate launch --num_processes 4 finetuning/prepare_data.py --manifest clips.jsonl --model BASE --output prepared/

Each rank prepares its contiguous slice of the manifest (``--shard RANK/WORLD``, the machinery machines
already use by hand) into ``.OUTPUT.ranks-WORLD/rank-RRR`` beside the output, resumably (a killed launch,
rerun, continues at each rank's first unfinished work shard), with its own tokenizer and speaker encoder on
``cuda:LOCAL_RANK`` (``--device auto|cuda``) or the CPU. Every rank reports ``ok`` or its error in a
status file and waits for the others; the main process then merges the parts (``prep/merge.py``: the
speaker means are the exact float32 means of the same clips, the rows and rejects in manifest order)
into the output and removes the parts folder it created. A rank that failed makes the launch exit 2
with that rank's error, keeping the finished parts for the rerun.

Plain ``python finetuning/prepare_data.py`` stays single-process (``WORLD_SIZE`` unset or 1). Within a rank,
audio is decoded by ``num_workers`` threads while the main thread encodes (as in a single process).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path

from qwen_tts_ext.errors import UserError
from qwen_tts_ext.outputs import check_output_dir
from qwen_tts_ext.prep.assemble import COMMAND, LEGACY
from qwen_tts_ext.prep.config import PrepareConfig


def world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the launcher's environment (1 process: ``(0, 1, 0)``)."""
    env = os.environ
    return int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_RANK", env.get("RANK", "0")))


def is_distributed() -> bool:
    return world()[1] > 1


def parts_dir(out: Path, n: int) -> Path:
    return out.parent / f".{out.name}.ranks-{n}"


def rank_device(device: str, local_rank: int) -> str:
    """``auto``/``cuda`` -> this rank's GPU (``cuda:LOCAL_RANK``) when CUDA is there; anything else as given."""
    import torch

    if str(device).strip().lower() in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{local_rank % torch.cuda.device_count()}"
    return device


def prepare_distributed(cfg: PrepareConfig) -> Path:
    """Prepare this rank's slice, wait for every rank, merge on the main process; every rank returns the output."""
    from accelerate import PartialState

    from qwen_tts_ext.prep.merge import merge_prepared
    from qwen_tts_ext.prep.pipeline import prepare

    rank, n, local = world()
    problems = []
    if cfg.shard_index() != (0, 1):
        problems.append(f"--shard {cfg.shard} and a {n}-process launch both split the manifest: use one of them")
    if cfg.dry_run:
        problems.append("--dry-run reads no audio: run it in one process (python finetuning/prepare_data.py ...)")
    if cfg.merge:
        problems.append("--merge joins finished slices: run it in one process")
    UserError.collect(problems)
    out = Path(os.path.expanduser(cfg.output)).resolve()
    check_output_dir(out, command=COMMAND, overwrite=cfg.overwrite, legacy=LEGACY)  # every rank, before any work
    state = PartialState()  # the process group (gloo on CPU, nccl on GPUs)
    root = parts_dir(out, n)
    part = root / f"rank-{rank:03d}"
    status = root / f"rank-{rank:03d}.status.json"
    if state.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
    state.wait_for_everyone()
    status.unlink(missing_ok=True)
    sub = dataclasses.replace(cfg, shard=f"{rank}/{n}", output=str(part), overwrite=True,
                              device=rank_device(cfg.device, local), progress=cfg.progress and state.is_main_process)
    failure = None
    try:
        prepare(sub)
        status.write_text(json.dumps({"rank": rank, "ok": True}))
    except BaseException as exc:  # noqa: BLE001 - reported to the main process, then raised here
        failure = exc
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        status.write_text(json.dumps({"rank": rank, "ok": False, "error": f"{type(exc).__name__}: {reason}"}))
    state.wait_for_everyone()
    if failure is not None and not isinstance(failure, UserError):
        raise failure
    failed = [json.loads(p.read_text()) for p in sorted(root.glob("rank-*.status.json"))]
    failed = [s for s in failed if not s.get("ok")]
    if len(list(root.glob("rank-*.status.json"))) < n:
        failed.append({"rank": "?", "error": "a rank wrote no status"})
    if failed:
        lines = [f"rank {s['rank']} failed: {s['error']}" for s in failed]
        raise UserError(*lines, f"the finished parts are kept in {root}: rerun the same command to resume")
    if state.is_main_process:
        parts = [root / f"rank-{r:03d}" for r in range(n)]
        merge_prepared(parts, out, overwrite=cfg.overwrite, progress=cfg.progress)
        if any((p / "audio").is_dir() for p in parts):  # audio decoded from the manifest (bytes): rows point there
            print(f"the merged rows point to audio decoded into {root}/rank-*/audio: that folder is kept",
                  file=sys.stderr)
        elif not cfg.keep_work:
            shutil.rmtree(root)  # the parts folder this launch created
    state.wait_for_everyone()
    return out
