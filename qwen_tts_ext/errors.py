"""User-facing errors: one actionable line, exit code 2, never a traceback."""

from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

EXIT_USER_ERROR = 2

F = TypeVar("F", bound=Callable[..., int | None])


class UserError(Exception):
    """A mistake in the user's input (paths, config, arguments). Printed as one line, exit 2."""


def cli_entry(func: F) -> F:
    """Wrap a CLI ``main`` so a ``UserError`` prints ``error: ...`` and exits 2, and Ctrl-C exits 130."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            code = func(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USER_ERROR
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        return 0 if code is None else code

    return wrapper  # type: ignore[return-value]
