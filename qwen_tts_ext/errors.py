"""User-facing errors: one actionable line per problem, exit code 2, never a traceback.

``UserError("...")`` is one problem. A check that finds several problems at once (a config with
two misspelled keys and a bad value) raises ``UserError`` with all of them; the command prints
each on its own ``error: ...`` line, so a user fixes everything in one go.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable, Iterable, TypeVar

EXIT_USER_ERROR = 2

F = TypeVar("F", bound=Callable[..., int | None])


class UserError(Exception):
    """A mistake in the user's input (paths, config, arguments). Printed as one line each, exit 2."""

    def __init__(self, *problems: str):
        flat: list[str] = []
        for p in problems:
            flat.extend(p.problems if isinstance(p, UserError) else [str(p)])
        self.problems = flat or ["invalid input"]
        super().__init__("; ".join(self.problems))

    @classmethod
    def collect(cls, problems: Iterable["str | UserError"]) -> None:
        """Raise one ``UserError`` holding every problem given (nothing when there is none)."""
        problems = list(problems)
        if problems:
            raise cls(*problems)


def print_user_error(exc: UserError, file=None) -> None:
    file = file or sys.stderr
    for problem in exc.problems:
        print(f"error: {problem}", file=file)


def cli_entry(func: F) -> F:
    """Wrap a CLI ``main`` so a ``UserError`` prints ``error: ...`` and exits 2, and Ctrl-C exits 130."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            code = func(*args, **kwargs)
        except UserError as exc:
            print_user_error(exc)
            return EXIT_USER_ERROR
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        return 0 if code is None else code

    return wrapper  # type: ignore[return-value]
