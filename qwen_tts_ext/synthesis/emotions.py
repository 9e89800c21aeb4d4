"""Emotion tags -> instruction text, from ``configs/emotions.yaml``.

    emotions = load_emotions()                 # the suite's configs/emotions.yaml
    emotions.resolve("Whispering")             # Instruction("Whisper very softly ...", known=True)
    emotions.resolve("slowly, with a smile")   # Instruction("slowly, with a smile", known=False)

Lookup ignores case, spaces, ``-`` and ``_``. An unknown tag is used as a free-text instruction and
marked ``known=False`` so callers can report it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from qwen_tts_ext.errors import UserError

DEFAULT_EMOTIONS_PATH = Path(__file__).resolve().parents[2] / "configs" / "emotions.yaml"


def normalize_tag(tag: str) -> str:
    """``"Very-Happy "`` -> ``"veryhappy"``: the key used for lookups."""
    return re.sub(r"[\s_\-]+", "", tag).lower()


@dataclass(frozen=True)
class Instruction:
    text: str  # instruction passed to the model ("" = none)
    known: bool  # False when the tag was not in the mapping and is used verbatim


@dataclass
class EmotionMap:
    """A tag -> instruction table (see ``configs/emotions.yaml`` for the file format)."""

    emotions: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    default: str = ""
    source: str = "<built-in empty map>"

    def __post_init__(self) -> None:
        self._table = {normalize_tag(k): v for k, v in self.emotions.items()}
        for alias, target in self.aliases.items():
            key = normalize_tag(target)
            if key not in self._table:
                raise UserError(f"{self.source}: alias {alias!r} points to {target!r}, which is not under 'emotions'")
            self._table.setdefault(normalize_tag(alias), self._table[key])

    @property
    def tags(self) -> list[str]:
        """The canonical tag names, sorted."""
        return sorted(self.emotions)

    def resolve(self, tag: str | None) -> Instruction:
        """The instruction for ``tag`` (``None`` = untagged text -> ``default``)."""
        if tag is None:
            return Instruction(self.default, True)
        hit = self._table.get(normalize_tag(tag))
        if hit is not None:
            return Instruction(hit, True)
        return Instruction(tag.strip(), False)


def load_emotions(path: str | Path | None = None) -> EmotionMap:
    """Read an emotions YAML file (default: the suite's ``configs/emotions.yaml``).

    If ``path`` is None and the default file is not there (e.g. a wheel install without the
    ``configs/`` folder), an empty map is returned: every tag is then a free-text instruction.
    """
    if path is None:
        if not DEFAULT_EMOTIONS_PATH.is_file():
            return EmotionMap()
        path = DEFAULT_EMOTIONS_PATH
    path = Path(path)
    if not path.is_file():
        raise UserError(f"emotions file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        raise UserError(f"emotions file {path} is not valid YAML") from None
    if not isinstance(data, dict):
        raise UserError(f"emotions file {path} must hold a mapping with 'emotions' (tag -> instruction)")
    unknown = set(data) - {"default", "emotions", "aliases"}
    if unknown:
        raise UserError(f"emotions file {path}: unknown key(s) {sorted(unknown)}; expected default, emotions, aliases")
    emotions = data.get("emotions") or {}
    aliases = data.get("aliases") or {}
    default = data.get("default") or ""
    for name, value, kind in (("emotions", emotions, "instruction"), ("aliases", aliases, "tag")):
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise UserError(f"emotions file {path}: '{name}' must map tag names to {kind} strings")
    if not isinstance(default, str):
        raise UserError(f"emotions file {path}: 'default' must be a string")
    return EmotionMap(emotions=dict(emotions), aliases=dict(aliases), default=default, source=str(path))
