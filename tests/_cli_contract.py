"""The contract every command keeps on bad input (issue: one shape for every command).

``refuse(main, argv, needle, roots)`` runs a command's ``main`` in-process and asserts: exit code 2;
exactly one line on stderr, ``error: ...`` containing ``needle`` (the problem and its fix); no
traceback; nothing on stdout; and every file under ``roots`` byte-identical before and after (files
neither added, removed nor changed, hidden ones included).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def snapshot(*roots: str | os.PathLike) -> dict[str, str]:
    """path -> sha256 (or 'dir'/'link') of everything under ``roots``."""
    out: dict[str, str] = {}
    for root in roots:
        root = Path(root)
        if not root.exists() and not root.is_symlink():
            out[str(root)] = "absent"
            continue
        items = [root] + (sorted(root.rglob("*")) if root.is_dir() else [])
        for p in items:
            if p.is_symlink():
                out[str(p)] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[str(p)] = "dir"
            else:
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def refuse(main, argv, needle: str, roots, capsys) -> str:
    """Assert the refusal contract; return the error line."""
    roots = list(roots)
    before = snapshot(*roots)
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    lines = [ln for ln in cap.err.splitlines() if ln.strip()]
    assert rc == 2, f"exit {rc} for {argv}: {cap.err}"
    assert "Traceback" not in cap.err, cap.err
    assert len(lines) == 1 and lines[0].startswith("error: "), f"want one error line for {argv}, got: {cap.err!r}"
    assert needle.lower() in lines[0].lower(), f"{needle!r} not in {lines[0]!r}"
    assert cap.out == "", f"stdout must stay empty on refusal: {cap.out!r}"
    after = snapshot(*roots)
    assert after == before, f"files changed by a refused {argv}: " + str(
        sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))[:5])
    return lines[0]


def user_files(tmp_path: Path) -> dict[str, Path]:
    """A user's belongings that no refused command may touch: a folder with a file, a plain file."""
    folder = tmp_path / "mine"
    folder.mkdir(exist_ok=True)
    (folder / "keep.txt").write_text("do not lose me")
    note = tmp_path / "notes.txt"
    note.write_text("a file, not a folder")
    return {"folder": folder, "file": note}
