"""The search's journal: one JSON line per finished evaluation, flushed and fsync'ed before the next starts.

    journal = Journal.open(run_dir / "journal.jsonl", settings, resume=True)
    journal.cached(key)                    # the record of an evaluation already finished, or None
    journal.append({"kind": "eval", "key": key, "fitness": f, ...})

The first line is a header holding the search's settings; a resume whose settings differ is refused (the
cached fitness values would mean something else). A line cut short by a kill -9 is dropped (that
evaluation simply runs again); every complete line is a finished evaluation that is never repeated.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from qwen_tts_ext.errors import UserError

FORMAT = 1


class Journal:
    def __init__(self, path: Path, records: list[dict[str, Any]]):
        self.path = path
        self.records = records  # every record after the header, in order
        self.by_key: dict[str, dict[str, Any]] = {}
        for r in records:
            if "key" in r:
                self.by_key.setdefault(r["key"], r)
        self._fh = None

    @classmethod
    def open(cls, path: str | os.PathLike, settings: dict[str, Any], *, resume: bool) -> "Journal":
        path = Path(path)
        settings = json.loads(json.dumps(settings, default=str))  # compared as the header stores it
        records: list[dict[str, Any]] = []
        if resume and path.is_file():
            header, records = read_journal(path)
            if header.get("settings") != settings:
                changed = _changed(header.get("settings") or {}, settings)
                raise UserError(f"--resume: the search in {path.parent} ran with other settings "
                                f"({', '.join(changed[:6]) or 'format'}); resume with the same settings, or pass "
                                "--overwrite to start over")
            _truncate_partial(path)
        else:
            with open(path, "w", encoding="utf-8") as fh:
                _write_line(fh, {"kind": "header", "format": FORMAT, "settings": settings})
        journal = cls(path, records)
        journal._fh = open(path, "a", encoding="utf-8")
        return journal

    def cached(self, key: str) -> dict[str, Any] | None:
        return self.by_key.get(key)

    def append(self, record: dict[str, Any]) -> None:
        _write_line(self._fh, record)
        self.records.append(record)
        if "key" in record:
            self.by_key.setdefault(record["key"], record)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("kind") == kind]

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _write_line(fh, record: dict[str, Any]) -> None:
    fh.write(json.dumps(record, separators=(",", ":"), default=_jsonable) + "\n")
    fh.flush()
    os.fsync(fh.fileno())


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item"):
        return v.item()
    if hasattr(v, "tolist"):
        return v.tolist()
    return str(v)


def read_journal(path: str | os.PathLike) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(header, complete records); a last line cut short is ignored."""
    lines = Path(path).read_text(encoding="utf-8").split("\n")
    parsed = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            if i >= len(lines) - 2:  # only the last line can be cut short
                break
            raise UserError(f"{path} line {i + 1} is not JSON: the journal is damaged; pass --overwrite") from None
    if not parsed or parsed[0].get("kind") != "header":
        raise UserError(f"{path} has no header: not a search journal; pass --overwrite to start over")
    return parsed[0], parsed[1:]


def _truncate_partial(path: Path) -> None:
    """Cut a last line without its newline (written when the process died), so appends start clean."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)


def _changed(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(_changed(a, b, f"{prefix}{k}."))
        elif a != b:
            out.append(f"{prefix}{k}")
    return out
