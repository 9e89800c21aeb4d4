"""Parse a script with inline emotion tags into segments.

    [Whispering] Don't wake him. [Angry] Why would you do that? [Excited] We won!

becomes three segments ``(whispering, "Don't wake him.")``, ``(angry, "Why would you do that?")`` and
``(excited, "We won!")``. Rules:

- A tag is ``[text]`` with no brackets inside; it applies to the text up to the next tag.
- Text before the first tag is a segment with ``tag=None`` (spoken with the default instruction);
  a script without tags is one segment.
- ``\\[`` and ``\\]`` are literal brackets in the spoken text.
- Mistakes are ``TagSyntaxError`` (a ``UserError``) that name the column: nested ``[a [b]]``,
  unbalanced ``[a`` or ``a]``, an empty tag ``[]``, a tag with no text after it, an empty script.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from qwen_tts_ext.errors import UserError

_SPACE = re.compile(r"\s+")

# One ``[tag]`` as :func:`parse_script` reads it: a ``[`` that is not escaped as ``\[``, no brackets
# inside, closed by ``]``; group 1 is the tag as written (strip it for the name). An empty ``[]`` matches
# too (``parse_script`` reports it as a mistake). Other code that must recognise tag markup (e.g. data
# prep, which keeps tags out of training transcripts) uses this pattern, not its own.
TAG_PATTERN = re.compile(r"(?<!\\)\[([^\[\]]*)\]")


class TagSyntaxError(UserError):
    """The script's tags are malformed; the message names the column and how to fix it."""


@dataclass(frozen=True)
class ScriptSegment:
    """One piece of a script: the text to speak and the tag (as written, stripped) that applies to it."""

    text: str
    tag: str | None
    column: int  # 1-based column where the segment (its tag, or its text when untagged) starts


def _excerpt(script: str, pos: int, width: int = 20) -> str:
    lo, hi = max(0, pos - width), min(len(script), pos + width)
    return ("..." if lo else "") + script[lo:hi].replace("\n", " ") + ("..." if hi < len(script) else "")


def parse_script(script: str) -> list[ScriptSegment]:
    """Split ``script`` at every ``[tag]``; see the module docstring for the rules."""
    if script is None or not script.strip():
        raise TagSyntaxError("the script is empty: give some text to speak, e.g. \"[Happy] Hello there!\"")

    segments: list[ScriptSegment] = []
    tag: str | None = None
    tag_col = 1
    buf: list[str] = []
    i, n = 0, len(script)

    def flush(next_tag_col: int | None) -> None:
        text = _SPACE.sub(" ", "".join(buf)).strip()
        buf.clear()
        if text:
            segments.append(ScriptSegment(text=text, tag=tag, column=tag_col))
        elif tag is not None:
            where = "at the end of the script" if next_tag_col is None else f"directly before the tag at column {next_tag_col}"
            raise TagSyntaxError(
                f"tag [{tag}] at column {tag_col} has no text after it ({where}); add the words it applies to or remove it"
            )

    while i < n:
        ch = script[i]
        if ch == "\\" and i + 1 < n and script[i + 1] in "[]":
            buf.append(script[i + 1])
            i += 2
            continue
        if ch == "]":
            raise TagSyntaxError(
                f"unbalanced ']' at column {i + 1} ({_excerpt(script, i)!r}): open the tag with '[' or write \\] for a literal bracket"
            )
        if ch == "[":
            close = i + 1
            while close < n and script[close] not in "[]":
                close += 1
            if close >= n:
                raise TagSyntaxError(
                    f"unbalanced '[' at column {i + 1} ({_excerpt(script, i)!r}): close the tag with ']' or write \\[ for a literal bracket"
                )
            if script[close] == "[":
                raise TagSyntaxError(
                    f"nested '[' at column {close + 1} inside the tag opened at column {i + 1}: tags cannot contain brackets"
                )
            name = _SPACE.sub(" ", script[i + 1 : close]).strip()
            if not name:
                raise TagSyntaxError(f"empty tag '[]' at column {i + 1}: write an emotion inside, e.g. [Happy], or remove it")
            if tag is None and not "".join(buf).strip():
                buf.clear()  # only whitespace before the first tag
            else:
                flush(i + 1)
            tag, tag_col = name, i + 1
            i = close + 1
            continue
        if tag is None and not segments and not ch.isspace() and not "".join(buf).strip():
            tag_col = i + 1
        buf.append(ch)
        i += 1
    flush(None)
    if not segments:  # only reachable with whitespace/escapes only
        raise TagSyntaxError("the script has no words to speak")
    return segments
