"""The one output policy of every command: nothing the user owns is ever deleted, moved or mixed.

- An output is built beside its destination (a hidden temp folder or file in the same folder) and
  renamed into place only when complete: a reader sees nothing, or the whole output.
- The destination may be absent or an empty folder. An existing non-empty folder (or a file in the
  way) is refused, unless it is **this command's own previous output** and ``overwrite`` is set.
  "Own" is recorded by a small marker file (``.qwen-tts-ext.json``) that every output folder gets.
- A path under a file (``notes.txt/out``) and an unwritable parent are refused before any work.
- Only what the command created is ever removed: its temp folder on failure, its own previous
  output when replaced.

    dest = check_output_dir(cfg.output, command="blend", overwrite=cfg.overwrite)   # before any work
    ...
    with output_dir(dest, command="blend", overwrite=cfg.overwrite) as tmp:
        write everything into tmp
    # now dest is the new output

Single files (a WAV and its JSON sidecar) go through :func:`output_files`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

from qwen_tts_ext.errors import UserError

MARKER = ".qwen-tts-ext.json"


def owner(path: str | os.PathLike, legacy: dict[str, Sequence[str]] | None = None) -> str | None:
    """The command whose output the folder ``path`` is (from its marker), or None.

    ``legacy`` maps a command to files that identify its outputs written before markers existed
    (e.g. ``{"blend": ["darwin_blend.json"]}``).
    """
    path = Path(path)
    try:
        data = json.loads((path / MARKER).read_text(encoding="utf-8"))
        if isinstance(data, dict) and isinstance(data.get("command"), str):
            return data["command"]
    except (OSError, ValueError):
        pass
    for command, names in (legacy or {}).items():
        if names and all((path / n).is_file() for n in names):
            return command
    return None


def write_marker(folder: str | os.PathLike, command: str, **extra) -> None:
    record = {"command": command, "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **extra}
    Path(folder, MARKER).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def _absolute(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.path.expanduser(str(path))))


def check_parent(path: Path, what: str = "output") -> None:
    """Refuse a path whose nearest existing ancestor is a file or is not writable."""
    anc = path.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise UserError(f"{what} {path}: {anc} is a file, so nothing can be created under it; choose another path")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise UserError(f"{what} {path}: no permission to write in {anc}; choose a location you can write to")


def check_output_dir(path: str | os.PathLike, *, command: str, overwrite: bool = False, flag: str = "--output",
                     legacy: dict[str, Sequence[str]] | None = None,
                     inputs: Mapping[str, str | os.PathLike] | None = None) -> Path:
    """Validate an output folder before any work; return its absolute path.

    Refused: a file in the way, a path under a file, an unwritable parent, a folder that is (or is
    inside, or contains) one of ``inputs`` (``{"--tts": path}``), a non-empty folder that is not this command's previous
    output, and this command's previous output without ``overwrite``.
    """
    if not str(path).strip():
        raise UserError(f"no output folder: pass {flag} DIR")
    final = _absolute(path)
    f = Path(os.path.realpath(final))
    for name, src in (inputs or {}).items():
        if not str(src).strip():
            continue
        s = Path(os.path.realpath(os.path.expanduser(str(src))))
        if f == s:
            raise UserError(f"{flag} {final} is the {name} checkpoint itself; choose a new folder")
        if f in s.parents:
            raise UserError(f"{flag} {final} contains the {name} checkpoint ({s}); choose another folder")
        if s in f.parents:
            raise UserError(f"{flag} {final} is inside the {name} checkpoint; choose a folder outside it")
    if final.exists() and not final.is_dir():
        raise UserError(f"{flag} {final} is an existing file; choose a folder path (the file is left as it is)")
    check_parent(final, flag)
    if final.is_dir() and any(final.iterdir()):
        who = owner(final, legacy)
        if who != command:
            raise UserError(f"{flag} {final} is not empty and was not written by `qwen-tts-ext {command}`; "
                            "choose a new or empty folder (nothing was changed)")
        if not overwrite:
            raise UserError(f"{flag} {final} holds a previous `{command}` output; pass --overwrite to replace it")
    return final


@contextlib.contextmanager
def output_dir(path: str | os.PathLike, *, command: str, overwrite: bool = False, flag: str = "--output",
               legacy: dict[str, Sequence[str]] | None = None, marker: dict | None = None) -> Iterator[Path]:
    """Yield a temp folder beside ``path``; when the block succeeds it becomes ``path`` (with a marker).

    An error or Ctrl-C inside the block removes the temp folder and leaves ``path`` as it was.
    """
    final = check_output_dir(path, command=command, overwrite=overwrite, flag=flag, legacy=legacy)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        write_marker(tmp, command, **(marker or {}))
        # The destination may have changed while we worked: check it again before the swap.
        check_output_dir(final, command=command, overwrite=overwrite, flag=flag, legacy=legacy)
        publish_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def publish_dir(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Rename the complete folder ``tmp`` onto ``final`` (absent, empty, or checked to be replaceable).

    An existing ``final`` is renamed aside only once the new folder is complete, and put back if the
    swap fails, so a reader sees the old folder or the new one, never a half-written one.
    """
    tmp, final = Path(tmp), Path(final)
    os.chmod(tmp, 0o755)  # mkdtemp makes 0700 folders
    if final.is_dir() and not any(final.iterdir()):
        final.rmdir()
    if not final.exists():
        os.replace(tmp, final)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
    os.rmdir(old)
    os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


def check_output_file(path: str | os.PathLike, *, overwrite: bool = False, suffix: str | None = None,
                      owned: Callable[[Path], bool] | None = None, flag: str = "--out") -> Path:
    """Validate one output file before any work; return its absolute path.

    ``suffix`` (e.g. ``".wav"``) is required; an existing file is replaced only with ``overwrite``
    and only when ``owned(path)`` says this command wrote it.
    """
    final = _absolute(path)
    if suffix and final.suffix.lower() != suffix:
        raise UserError(f"{flag} {final} must end in {suffix}")
    if final.is_dir():
        raise UserError(f"{flag} {final} is a folder; give a file path ending in {suffix or 'a file name'}")
    check_parent(final, flag)
    if final.exists():
        if owned is not None and not owned(final):
            raise UserError(f"{flag} {final} exists and was not written by this command; choose another path "
                            "(the file is left as it is)")
        if not overwrite:
            raise UserError(f"{flag} {final} exists; pass --overwrite to replace it, or choose another path")
    return final


@contextlib.contextmanager
def output_files(*paths: Path) -> Iterator[list[Path]]:
    """Yield temp paths beside ``paths`` (already checked); on success each replaces its destination."""
    finals = [_absolute(p) for p in paths]
    for f in finals:
        f.parent.mkdir(parents=True, exist_ok=True)
    tmps = [f.with_name(f".{f.stem}.tmp-{os.getpid()}{f.suffix}") for f in finals]  # writers read the suffix
    try:
        yield tmps
        for t, f in zip(tmps, finals):
            os.replace(t, f)
    except BaseException:
        for t in tmps:
            with contextlib.suppress(FileNotFoundError):
                t.unlink()
        raise
