"""One shape for every command: a typed config, a YAML file, flags and ``key=value`` overrides.

Each command of the suite (``prepare``, ``sft``, ``blend``, ``synthesize``, ``evaluate``, ``studio``
and every later one) is a :class:`Command`: a config dataclass (its ``config.py``), the flags that
set its keys, and a library function ``run(cfg)`` that does the work. ``Command.main(argv)`` is the
whole command line:

- ``--config FILE.yaml``, flags and ``key=value`` overrides mix in any order
  (``... train.max_steps=2 --output-dir D checkpoint.resume=true`` works);
- every unknown key, unknown flag and bad value is reported at once, one ``error:`` line each, exit 2;
- a flag and an override that set the same key to different values are refused (the file may be
  overridden by either, but two conflicting words on one command line are a mistake);
- stdout carries results only (:func:`emit`); logs, progress bars and upstream banners that print to
  stdout (``Warning: flash-attn is not installed``) go to stderr, so ``out=$(qwen-tts-ext ...)`` works;
- a ``UserError`` anywhere in ``run`` is one line and exit 2; Ctrl-C is exit 130; a full disk or a
  permission problem is one line, not a traceback.

    COMMAND = Command(
        name="blend", description="...", config=BlendConfig, run="qwen_tts_ext.blend.pipeline:run",
        options=[Option("tts", "--tts", help="..."), Option("dry_run", "--dry-run", switch=True)],
    )
    def main(argv=None): return COMMAND.main(argv)

``run`` is named by import path so that ``--help`` and input errors answer before torch is imported.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import errno
import importlib
import re
import sys
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Iterator

from qwen_tts_ext.config import _build, _set_path, field_type, is_text_type, parse_value, read_yaml
from qwen_tts_ext.errors import EXIT_USER_ERROR, UserError, print_user_error

EXIT_INTERRUPTED = 130
_OVERRIDE = re.compile(r"^[A-Za-z_][\w.\-]*=")
_NUMBER = re.compile(r"^-\d|^-\.\d")

# Where results go while a command runs (the real stdout); None outside a command (library use).
_results_stream = None


def emit(*values: Any, sep: str = " ", end: str = "\n") -> None:
    """Print a result: the real stdout inside a command, ``sys.stdout`` elsewhere."""
    print(*values, sep=sep, end=end, file=_results_stream or sys.stdout, flush=True)


@contextlib.contextmanager
def stdout_for_results() -> Iterator[None]:
    """Inside: ``print()`` goes to stderr; :func:`emit` goes to the real stdout."""
    global _results_stream
    saved_results, saved_stdout = _results_stream, sys.stdout
    _results_stream, sys.stdout = sys.stdout, sys.stderr
    try:
        yield
    finally:
        sys.stdout.flush()
        _results_stream, sys.stdout = saved_results, saved_stdout


@dataclass(frozen=True)
class Option:
    """A flag that sets one config key.

    ``switch=None``: the flag takes a value (``--seed 3`` / ``--seed=3``); ``switch=True``/``False``:
    the flag alone sets the key to that boolean (``--dry-run``, ``--no-hash``). ``many=True`` (for a
    list key): the flag takes every following word up to the next flag or ``key=value``, verbatim,
    and a repeated flag adds to the list (``--merge a b``, ``--merge a --merge b``).
    """

    key: str
    flags: tuple[str, ...] | str
    help: str = ""
    switch: bool | None = None
    metavar: str | None = None
    group: str | None = None
    many: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        return (self.flags,) if isinstance(self.flags, str) else tuple(self.flags)


@dataclass
class Command:
    name: str  # the subcommand: qwen-tts-ext NAME
    description: str
    config: type  # the config dataclass
    run: str | Callable[[Any], int | None]  # "module:function" (imported after parsing) or a callable
    options: list[Option] = field(default_factory=list)
    epilog: str = ""
    prog: str = ""
    # Free words (not flags, not key=value) are joined into this key (synthesize's script); None: an error.
    text_key: str | None = None
    text_metavar: str = "TEXT"
    # Short keys accepted in key=value overrides and at the top of a --config file (``seed`` -> ``synthesis.seed``).
    aliases: dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------------ parsing

    def _by_flag(self) -> dict[str, Option]:
        return {name: opt for opt in self.options for name in opt.names}

    def parser(self) -> argparse.ArgumentParser:
        """The argparse parser (used for ``--help``; parsing itself is :meth:`parse`)."""
        p = argparse.ArgumentParser(
            prog=self.prog or f"qwen-tts-ext {self.name}", description=self.description, epilog=self.epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter, add_help=True,
        )
        if self.text_key:
            p.add_argument("words", nargs="*", metavar=f"{self.text_metavar}|KEY=VALUE",
                           help=f"the {self.text_key.replace('_', ' ')}, and/or config overrides key=value")
        else:
            p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                           help="config overrides in any position, e.g. a.b=1 (keys as in --config files)")
        p.add_argument("--config", metavar="FILE", help="YAML file of settings (its keys are the config keys); "
                       "flags and key=value overrides win over it")
        groups: dict[str, Any] = {}
        for opt in self.options:
            target = p
            if opt.group:
                target = groups.setdefault(opt.group, p.add_argument_group(opt.group))
            extra = f" [{opt.key}]"
            if opt.switch is None:
                target.add_argument(*opt.names, dest=opt.key, metavar=opt.metavar or opt.key.split(".")[-1].upper(),
                                    help=(opt.help or "") + extra, **({"nargs": "+"} if opt.many else {}))
            else:
                target.add_argument(*opt.names, dest=opt.key, action="store_true", help=(opt.help or "") + extra)
        return p

    def split_argv(self, argv: list[str]) -> tuple[str | None, list[tuple[str, Any, str]], list[str], list[str]]:
        """argv -> (config file, [(key, value, flag)], overrides, free words); unknown flags are errors."""
        by_flag = self._by_flag()
        config_file = None
        flags: list[tuple[str, Any, str]] = []
        overrides: list[str] = []
        words: list[str] = []
        problems: list[str] = []
        i, only_words = 0, False
        while i < len(argv):
            tok = argv[i]
            i += 1
            if only_words:
                words.append(tok)
            elif tok == "--":
                only_words = True
            elif tok.startswith("-") and len(tok) > 1 and not _NUMBER.match(tok):
                name, eq, inline = tok.partition("=")
                if name == "--config":
                    if eq:
                        config_file = inline
                    elif i < len(argv):
                        config_file, i = argv[i], i + 1
                    else:
                        problems.append("--config needs a YAML file")
                    continue
                opt = by_flag.get(name)
                if opt is None:
                    problems.append(self._unknown_flag(name))
                    if not eq and i < len(argv) and not argv[i].startswith("-") and not _OVERRIDE.match(argv[i]):
                        i += 1  # skip the unknown flag's likely value, so it is not read as text
                    continue
                if opt.switch is not None:
                    if eq:
                        problems.append(f"{name} takes no value (got {name}={inline}); write {name} alone")
                        continue
                    flags.append((opt.key, opt.switch, name))
                    continue
                if opt.many:
                    values = [inline] if eq else []
                    while not eq and i < len(argv) and argv[i] != "--" and not _OVERRIDE.match(argv[i]) and not (
                            argv[i].startswith("-") and len(argv[i]) > 1 and not _NUMBER.match(argv[i])):
                        values.append(argv[i])
                        i += 1
                    earlier = next((n for n, f in enumerate(flags) if f[0] == opt.key), None)
                    if not values:
                        problems.append(f"{name} needs one or more values ({opt.help or opt.key})")
                    elif earlier is None:
                        flags.append((opt.key, values, name))
                    else:  # a repeated flag adds to the list
                        flags[earlier] = (opt.key, flags[earlier][1] + values, flags[earlier][2])
                    continue
                if eq:
                    raw = inline
                elif i < len(argv):
                    raw, i = argv[i], i + 1
                else:
                    problems.append(f"{name} needs a value ({opt.help or opt.key})")
                    continue
                flags.append((opt.key, self._typed(opt.key, raw), name))
            elif _OVERRIDE.match(tok):
                overrides.append(tok)
            else:
                words.append(tok)
        if words and not self.text_key:
            problems.append(f"unexpected argument {words[0]!r}: settings look like key=value or --flag VALUE "
                            f"(see --help)")
        UserError.collect(problems)
        return config_file, flags, overrides, words

    def _unknown_flag(self, name: str) -> str:
        known = list(self._by_flag()) + ["--config", "--help"]
        close = difflib.get_close_matches(name, known, n=1)
        key = name.lstrip("-").replace("-", "_")
        hint = f" (did you mean {close[0]}?)" if close else ""
        if not close and field_type(self.config, key) is not None:
            hint = f" (set it as {key}=VALUE)"
        return f"unknown option {name}{hint}; see --help"

    def _typed(self, key: str, raw: str) -> Any:
        """A flag's text as a config value: verbatim for text keys (paths may hold '#', ':'), else as YAML."""
        return raw if is_text_type(field_type(self.config, key)) else parse_value(raw)

    def _canonical(self, key: str) -> str:
        """An override key as a config key (an alias, e.g. ``seed``, becomes ``synthesis.seed``)."""
        head, dot, rest = key.partition(".")
        return self.aliases[head] + dot + rest if head in self.aliases else key

    def _misspelled_alias(self, key: str) -> str | None:
        """A problem line for an unknown key that is close to an alias (``tempreature`` -> ``temperature``)."""
        if not self.aliases or "." in key or field_type(self.config, key) is not None:
            return None
        close = difflib.get_close_matches(key, [*self.aliases, *(f.name for f in fields(self.config))], n=1)
        return f"unknown config key {key!r} (did you mean {close[0]!r}?)" if close and close[0] in self.aliases else None

    def parse(self, argv: list[str]) -> Any:
        """argv -> the config object, or one ``UserError`` listing every problem found."""
        config_file, flags, overrides, words = self.split_argv(argv)
        data = read_yaml(config_file) if config_file else {}
        for short in [k for k in data if str(k).replace("-", "_") in self.aliases]:
            _set_path(data, self.aliases[str(short).replace("-", "_")], data.pop(short))
        problems: list[str] = []
        from_overrides: dict[str, tuple[Any, str]] = {}
        for item in overrides:
            key, _, raw = item.partition("=")
            key = self._canonical(key.strip().replace("-", "_"))
            misspelled = self._misspelled_alias(key)
            if misspelled:
                problems.append(misspelled)
                continue
            value = self._typed(key, raw)
            if key in from_overrides and from_overrides[key][0] != value:
                problems.append(f"{from_overrides[key][1]} and {item} disagree; give {key} once")
            from_overrides[key] = (value, item)
            _set_path(data, key, value)
        from_flags: dict[str, tuple[Any, str]] = {}
        if self.text_key and words:
            flags = flags + [(self.text_key, " ".join(words), "the text argument")]
        for key, value, flag in flags:
            shown = flag if isinstance(value, bool) or flag.startswith("the ") else f"{flag} {value}"
            for seen in (from_overrides, from_flags):
                if key in seen and seen[key][0] != value:
                    problems.append(f"{shown} and {seen[key][1]} disagree; give {key} once")
            from_flags[key] = (value, shown)
            _set_path(data, key, value)
        UserError.collect(problems)
        return _build(self.config, data)

    # ------------------------------------------------------------------ running

    def _run_function(self) -> Callable[[Any], int | None]:
        if callable(self.run):
            return self.run
        module, _, func = self.run.partition(":")
        return getattr(importlib.import_module(module), func)

    def main(self, argv: list[str] | None = None) -> int:
        argv = list(sys.argv[1:] if argv is None else argv)
        head = argv[: argv.index("--")] if "--" in argv else argv
        if "-h" in head or "--help" in head:
            self.parser().print_help()
            return 0
        with stdout_for_results():
            try:
                cfg = self.parse(argv)
                code = self._run_function()(cfg)
            except UserError as exc:
                if _main_process():  # under accelerate launch / torchrun every rank finds the same mistake
                    print_user_error(exc)
                return EXIT_USER_ERROR
            except KeyboardInterrupt:
                print("interrupted", file=sys.stderr)
                return EXIT_INTERRUPTED
            except OSError as exc:
                message = _os_error_line(exc)
                if message is None:
                    raise
                print(f"error: {message}", file=sys.stderr)
                return EXIT_USER_ERROR
        return 0 if code is None else int(code)


def _main_process() -> bool:
    """Rank 0 of a multi-process launch (``RANK`` from accelerate launch / torchrun), or a lone process."""
    import os

    return os.environ.get("RANK", "0") in ("", "0")


def _os_error_line(exc: OSError) -> str | None:
    """One line for the OS errors a user causes or fixes (permissions, full disk); None for the rest."""
    where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
    if isinstance(exc, PermissionError):
        return f"permission denied:{where}; choose a location you can write to"
    if exc.errno == errno.ENOSPC:
        return f"no space left on the device{where}; free some space or choose another output folder"
    if exc.errno == errno.EROFS:
        return f"read-only file system:{where}; choose another output location"
    return None

