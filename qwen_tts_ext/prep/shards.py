"""Resumable work shards: each group of ``shard_size`` manifest rows is written atomically once done.

Layout of the work folder (a hidden sibling of the output folder, ``.<output>.work/``)::

    work.json                 fingerprint of the job + shard plan; a mismatch wipes the folder
    lock                      flock'ed while a run is active (two runs on one output is an error)
    shards/shard-00007/       one finished shard (renamed into place only when complete)
        meta.json             kept records (no codes), rejects, warnings
        arrays.npz            codes (int16, concatenated), per-clip offsets, x-vectors
        audio/row0000123.flac only for sources without a file path (bytes inside a dataset)

A killed run leaves at most a ``.tmp-*`` folder behind, which the next run deletes; finished shards
are skipped, so nothing is encoded twice and nothing is duplicated.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qwen_tts_ext.errors import UserError

WORK_VERSION = 1


def work_dir_for(output: Path) -> Path:
    return output.parent / f".{output.name}.work"


@dataclass
class ShardData:
    """Everything one finished shard contributes to the final output."""

    records: list[dict] = field(default_factory=list)  # kept clips, manifest order; no codes
    codes: list[np.ndarray] = field(default_factory=list)  # int16 [frames, 16] per record
    xvectors: list[np.ndarray | None] = field(default_factory=list)  # float32 [d] per record
    rejects: list[dict] = field(default_factory=list)
    refs: dict[str, np.ndarray] = field(default_factory=dict)  # ref path -> x-vector
    ref_rejects: list[dict] = field(default_factory=list)


class WorkDir:
    """The resumable state of one ``prepare`` job."""

    def __init__(self, path: Path, fingerprint: str, num_shards: int):
        self.path = path
        self.fingerprint = fingerprint
        self.num_shards = num_shards
        self.shards = path / "shards"
        self._lock_file = None

    # -- lifecycle
    def open(self) -> "WorkDir":
        """Create or validate the folder, take the lock, clean leftovers of a killed run."""
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.path / "lock", "w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UserError(f"another prepare run is working on {self.path} (wait for it, or stop it)") from None
        meta_path = self.path / "work.json"
        meta = {"version": WORK_VERSION, "fingerprint": self.fingerprint, "num_shards": self.num_shards}
        if meta_path.exists():
            try:
                old = json.loads(meta_path.read_text(encoding="utf-8"))
            except ValueError:
                old = {}
            if old != meta:
                print(f"note: {self.path} holds shards of a different job (inputs or settings changed); starting over")
                shutil.rmtree(self.shards, ignore_errors=True)
        self.shards.mkdir(exist_ok=True)
        for leftover in self.shards.glob(".shard-*.tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        _atomic_write_text(meta_path, json.dumps(meta, indent=2))
        return self

    def close(self) -> None:
        if self._lock_file is not None:
            try:
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            finally:
                self._lock_file.close()
                self._lock_file = None

    def remove(self) -> None:
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)

    # -- shards
    def shard_path(self, k: int) -> Path:
        return self.shards / f"shard-{k:05d}"

    def is_done(self, k: int) -> bool:
        return (self.shard_path(k) / "meta.json").is_file()

    def done_count(self) -> int:
        return sum(self.is_done(k) for k in range(self.num_shards))

    def write_shard(self, k: int, data: ShardData, audio_files: dict[str, tuple[np.ndarray, int]] | None = None) -> None:
        """Write shard ``k`` into a temp folder, then rename it into place (atomic on POSIX)."""
        tmp = Path(tempfile.mkdtemp(prefix=f".shard-{k:05d}.tmp-", dir=self.shards))
        try:
            offsets = np.zeros(len(data.codes) + 1, dtype=np.int64)
            if data.codes:
                offsets[1:] = np.cumsum([c.shape[0] for c in data.codes])
                codes = np.concatenate(data.codes).astype(np.int16)
            else:
                codes = np.zeros((0, 16), dtype=np.int16)
            xv = [x for x in data.xvectors if x is not None]
            dim = xv[0].shape[0] if xv else 0
            xvecs = np.stack(xv).astype(np.float32) if xv else np.zeros((0, dim), dtype=np.float32)
            has_xv = np.array([x is not None for x in data.xvectors], dtype=bool)
            ref_names = sorted(data.refs)
            refs = (np.stack([data.refs[n] for n in ref_names]).astype(np.float32) if ref_names
                    else np.zeros((0, dim), dtype=np.float32))
            with open(tmp / "arrays.npz", "wb") as f:
                np.savez(f, codes=codes, offsets=offsets, xvectors=xvecs, has_xvector=has_xv, refs=refs)
            if audio_files:
                import soundfile as sf

                (tmp / "audio").mkdir()
                for name, (wav, sr) in audio_files.items():
                    sf.write(str(tmp / "audio" / name), wav, sr)
            meta = {"records": data.records, "rejects": data.rejects, "ref_names": ref_names,
                    "ref_rejects": data.ref_rejects}
            (tmp / "meta.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
            _fsync_dir(tmp)
            os.replace(tmp, self.shard_path(k))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def read_shard(self, k: int) -> ShardData:
        path = self.shard_path(k)
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        with np.load(path / "arrays.npz", allow_pickle=False) as z:
            codes, offsets, xvecs, has_xv, refs = z["codes"], z["offsets"], z["xvectors"], z["has_xvector"], z["refs"]
        data = ShardData(records=meta["records"], rejects=meta["rejects"], ref_rejects=meta.get("ref_rejects", []))
        j = 0
        for i in range(len(data.records)):
            data.codes.append(codes[offsets[i]:offsets[i + 1]])
            if has_xv[i]:
                data.xvectors.append(xvecs[j])
                j += 1
            else:
                data.xvectors.append(None)
        data.refs = {name: refs[i] for i, name in enumerate(meta["ref_names"])}
        return data


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
