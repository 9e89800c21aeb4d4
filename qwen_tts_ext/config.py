"""Strict configs: a YAML file plus ``key=value`` overrides, parsed into dataclasses.

Every CLI of the suite reads its settings through ``load_config``. Unlike most recipe systems, a
misspelled key is an error (with a suggestion), and a value of the wrong type is an error, both
raised as ``UserError`` before any compute starts.

    @dataclass
    class Optim:
        lr: float = 1e-5

    @dataclass
    class Recipe:
        model: str = ""
        optim: Optim = field(default_factory=Optim)

    cfg = load_config(Recipe, "configs/x.yaml", ["optim.lr=2e-5", "--model=/path"])
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from qwen_tts_ext.errors import UserError

T = TypeVar("T")


def _suggest(key: str, choices) -> str:
    close = difflib.get_close_matches(key, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Share(float):
    """A share in [0, 1] such as a blend alpha; ``"3%"`` is read as 0.03. A bare number above 1 is refused with
    the percent it probably meant (the Darwin card writes ``--alpha 3`` for 3%): "did you mean 3% (0.03)?"."""


def parse_share(value: Any, where: str) -> float:
    """``0.03``, ``"0.03"`` or ``"3%"`` -> 0.03; anything else (or outside [0, 1]) -> UserError naming ``where``."""
    text = str(value).strip() if isinstance(value, str) else None
    if isinstance(value, bool) or (text is None and not isinstance(value, (int, float))):
        raise UserError(f"{where}: expected a number (a share like 0.03, or 3%), got {value!r}")
    if text is not None and text.endswith("%"):
        try:
            pct = float(text[:-1].strip())
        except ValueError:
            raise UserError(f"{where}: {value!r} is not a percentage (write e.g. 3%)") from None
        if not 0.0 <= pct <= 100.0:
            raise UserError(f"{where}: {value!r} must be between 0% and 100%")
        return pct / 100.0
    try:
        share = float(value)
    except ValueError:
        raise UserError(f"{where}: expected a number (a share like 0.03, or 3%), got {value!r}") from None
    if 1.0 < share <= 100.0:
        raise UserError(f"{where}: {share:g} is outside [0, 1]; did you mean {share:g}% ({share / 100:g})? "
                        f"Write {share:g}% or {share / 100:g}")
    if not 0.0 <= share <= 1.0:
        raise UserError(f"{where}: {share:g} is outside [0, 1] (a share such as 0.03, or a percentage such as 3%)")
    return share


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert ``value`` to the annotated type ``tp``; raise UserError naming ``where``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if tp is Share:
        return parse_share(value, where)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except UserError as exc:
                errors.append(str(exc))
        raise UserError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is typing.Literal:
        if isinstance(value, bool):  # YAML 1.1 reads bare no/yes/off/on as booleans
            for word in (("no", "off", "false") if value is False else ("yes", "on", "true")):
                if word in get_args(tp):
                    value = word
                    break
        if value not in get_args(tp):
            raise UserError(f"{where}: {value!r} is not one of {list(get_args(tp))}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping of {tp.__name__} fields, got {type(value).__name__}")
        return _build(tp, value, where)
    if origin in (list, tuple):
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and origin is list:
            value = [value] if not isinstance(value, str) else [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {value!r}")
        args = get_args(tp)
        item_tp = args[0] if args else Any
        out = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return out if origin is list else tuple(out)
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise UserError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str):
                try:
                    return float(value)  # YAML reads "1e-5" (no dot) as a string
                except ValueError:
                    pass
            raise UserError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise UserError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _build(cls: type[T], data: dict, where: str = "") -> T:
    """Build ``cls`` from ``data``; every unknown key and bad value is reported at once (one UserError)."""
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    problems: list[UserError] = []
    for key, value in data.items():
        key_n = str(key).replace("-", "_")
        path = f"{where}.{key_n}" if where else key_n
        if key_n not in names:
            problems.append(UserError(f"unknown config key {path!r}{_suggest(key_n, names)}"))
            continue
        try:
            kwargs[key_n] = _coerce(value, hints[key_n], path)
        except UserError as exc:
            problems.append(exc)
    try:
        obj = cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise UserError(*problems, f"{where or cls.__name__}: {exc}") from None
    validate = getattr(obj, "validate", None)
    if callable(validate):  # the values that did parse are checked too, so every problem shows at once
        try:
            validate()
        except UserError as exc:
            problems.append(exc)
    UserError.collect(problems)
    return obj


def field_type(cls: type, dotted: str) -> Any:
    """The annotated type of ``a.b.c`` in the dataclass tree ``cls`` (None if there is no such key)."""
    tp: Any = cls
    for part in dotted.replace("-", "_").split("."):
        if not dataclasses.is_dataclass(tp):
            return None
        hints = get_type_hints(tp)
        if part not in hints:
            return None
        tp = hints[part]
    return tp


def is_text_type(tp: Any) -> bool:
    """True for ``str`` and ``str | None``: CLI values for such keys are kept verbatim, not read as YAML."""
    if tp is str:
        return True
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return args == [str]
    return False


def _set_path(data: dict, dotted: str, value: Any) -> None:
    parts = dotted.replace("-", "_").split(".")
    cur = data
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[p] = nxt
        cur = nxt
    cur[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """``["a.b=1", "--c=x", "--flag"]`` -> ``[("a.b", 1), ("c", "x"), ("flag", True)]`` (values parsed as YAML)."""
    out = []
    problems = []
    for item in overrides:
        raw = item[2:] if item.startswith("--") else item
        if "=" not in raw:
            if item.startswith("--"):
                out.append((raw, True))
                continue
            problems.append(f"override {item!r} must look like key=value (e.g. optim.lr=2e-5)")
            continue
        key, val = raw.split("=", 1)
        out.append((key.strip(), parse_value(val)))
    UserError.collect(problems)
    return out


def parse_value(text: str) -> Any:
    """A ``key=value`` value as YAML would read it (``1e-5`` and ``[1, 2]`` included); text otherwise."""
    if text == "":
        return ""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"config file {path} is not valid YAML{at}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping at the top level")
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Build ``cls`` from a YAML file (optional) and overrides; unknown keys and bad types are UserErrors."""
    data = read_yaml(path) if path else {}
    for key, value in parse_overrides(overrides or []):
        _set_path(data, key, value)
    return _build(cls, data)


def config_to_dict(obj: Any) -> dict:
    """The plain-dict form written next to every output (so a run can be reproduced)."""
    return dataclasses.asdict(obj)
