"""What every command shares: the error -> exit-status mapping and the Hydra argv handling."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from distillkit.allocator import use_allocator
from distillkit.cli._args import hydra_argv
from distillkit.errors import ConfigError

#: Errors a user can fix: reported as one line, never as a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, FileNotFoundError, ValueError)
#: Exit status of a bad configuration, argument or input file.
EXIT_USER = 2
#: Exit status of a run stopped by a non-finite loss (its last good state is kept on disk).
EXIT_NUMERICAL = 3

T = TypeVar("T")


def report(exc: BaseException) -> None:
    print(f"distillkit: error: {exc}", file=sys.stderr)


def exit_on_user_errors(body: Callable[..., T]) -> Callable[..., T]:
    """Run `body` with the host allocator; a user error becomes one line and exit 2, a
    non-finite loss one line and exit 3 (the template's `task_wrapper`)."""

    @functools.wraps(body)
    def wrapped(*args: Any, **kwargs: Any) -> T:
        use_allocator()  # reuse freed host memory (distillkit/allocator.py)
        try:
            return body(*args, **kwargs)
        except FloatingPointError as exc:
            report(exc)
            raise SystemExit(EXIT_NUMERICAL) from None
        except USER_ERRORS as exc:
            report(exc)
            raise SystemExit(EXIT_USER) from None

    return wrapped


def run_hydra_app(app: Callable[[], Any], argv: Sequence[str] | None) -> None:
    """Call a `@hydra.main` app on `argv` (default: the process's), rewritten as Hydra needs
    it (`ipc=10`, `experiment=null`); a bad choice is one line and exit 2 before Hydra starts."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        args = hydra_argv(args)
    except ConfigError as exc:
        report(exc)
        raise SystemExit(EXIT_USER) from None
    sys.argv = [sys.argv[0], *args]
    app()
