"""What every command shares: the error boundary (which error is the user's, which exit status it
gets), the host allocator, the Hydra argv handling and the failed jobs of a multirun.

Exit statuses: 0 done; 1 a bug (its traceback is printed) or, after a multirun, some jobs failed
(one line each, their failed.json); 2 a user error (`distillkit.errors.UserError`, a missing
file, a Hydra composition error: one line, `distillkit: error: ...`); 3 a non-finite loss (the
last good state is kept on disk).
"""

from __future__ import annotations

import contextlib
import functools
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hydra.errors import ConfigCompositionException, OverrideParseException, SearchPathException

from distillkit.allocator import use_allocator
from distillkit.cli._args import hydra_argv
from distillkit.errors import UserError

#: Hydra's errors that are the user's: a group option or config file that does not exist
#: (MissingConfigException is a ConfigCompositionException), an override it cannot parse or
#: apply, a bad `hydra.searchpath`. Inside `@hydra.main` Hydra prints these itself (their
#: message, exit 1) unless HYDRA_FULL_ERROR=1 lets them through to the boundary here; a compose
#: call of distillkit's own raises them directly.
HYDRA_USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigCompositionException,
    OverrideParseException,
    SearchPathException,
)
#: Errors a user can fix: reported as one line, never as a traceback. A bare ValueError is not
#: one: raised inside distillkit or a library it calls, it is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, FileNotFoundError, *HYDRA_USER_ERRORS)
#: Exit status of a bug (Python's own), and of a multirun in which some jobs failed.
EXIT_FAILED = 1
#: Exit status of a bad configuration, argument or input file.
EXIT_USER = 2
#: Exit status of a run stopped by a non-finite loss (its last good state is kept on disk).
EXIT_NUMERICAL = 3
#: What a failed job returns to the sweeper. Optuna's sweeper (hydra-optuna-sweeper 1.3 with
#: optuna 2.10) records a value that is not float-castable as a failed trial and goes on;
#: NaN would make it pass the value along with the failed state, which optuna refuses (the
#: whole search stops). The basic sweeper ignores return values.
FAILED_VALUE = None

T = TypeVar("T")


def report(exc: BaseException) -> None:
    print(f"distillkit: error: {exc}", file=sys.stderr)


def exit_status(exc: BaseException) -> int | None:
    """The exit status the boundary gives `exc`, or None for a bug (it keeps its traceback)."""
    if isinstance(exc, FloatingPointError):
        return EXIT_NUMERICAL
    if isinstance(exc, USER_ERRORS):
        return EXIT_USER
    return None


@contextlib.contextmanager
def error_boundary() -> Iterator[None]:
    """The one error -> exit-status mapping: a user error becomes one line and exit 2, a
    non-finite loss one line and exit 3; anything else propagates with its traceback."""
    try:
        yield
    except Exception as exc:
        status = exit_status(exc)
        if status is None:
            raise
        report(exc)
        raise SystemExit(status) from None


def exit_on_user_errors(body: Callable[..., T]) -> Callable[..., T]:
    """`body` with the host allocator, behind the error boundary (the template's
    `task_wrapper`): for a command without Hydra, or a body run inside a Hydra job (Hydra would
    print any exception that reaches it as a traceback)."""

    @functools.wraps(body)
    def wrapped(*args: Any, **kwargs: Any) -> T:
        use_allocator()  # reuse freed host memory (distillkit/allocator.py)
        with error_boundary():
            return body(*args, **kwargs)

    return wrapped


@dataclass(frozen=True)
class JobFailure:
    """A multirun job that failed: its directory (which holds failed.json) and its line."""

    run_dir: Path
    line: str


def record_failure(cfg: Any, run_dir: Path, job: int | str, exc: BaseException) -> JobFailure:
    """failed.json in the job's directory (the table renderer marks the cell), one line out;
    a bug's traceback goes to stderr and into the file too."""
    from omegaconf import DictConfig, OmegaConf

    from distillkit.io import save_json

    def pick(path: str) -> object:
        return OmegaConf.select(cfg, path, default=None)

    regularizers = pick("regularizer")
    record = {
        "status": "failed",
        "error": type(exc).__name__,
        "message": str(exc),
        "method": _method_name(pick("method")),
        "regularizers": sorted(regularizers) if isinstance(regularizers, DictConfig) else [],
        "dataset": pick("dataset.name"),
        "ipc": pick("ipc"),
        "seed": pick("seed"),
        "model": pick("model.name"),
    }
    if exit_status(exc) is None:
        record["traceback"] = traceback.format_exception(exc)
        traceback.print_exception(exc, file=sys.stderr)
    save_json(record, run_dir / "failed.json")
    failure = JobFailure(run_dir, f"job {job} failed ({type(exc).__name__}): {exc}")
    print(f"distillkit: {failure.line} -> {run_dir / 'failed.json'}", file=sys.stderr)
    return failure


def run_task(task: Callable[[Any], T], cfg: Any) -> T | JobFailure:
    """One Hydra job of a command: `task(cfg)` in Hydra's output directory.

    In a multirun, an exception is the job's failure and the other jobs go on: failed.json, one
    line, and the JobFailure returned (a launcher hands it back in the job's JobReturn;
    `hydra_app` collects it and gives the sweeper FAILED_VALUE). In a single run the error
    boundary gives the exit status (Hydra would print any exception as a traceback).
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        with error_boundary():
            return task(cfg)
    try:
        return task(cfg)
    except Exception as exc:
        return record_failure(cfg, Path(hydra_cfg.runtime.output_dir), hydra_cfg.job.num, exc)


def run_hydra_app(app: Callable[[], Any], argv: Sequence[str] | None) -> None:
    """Call a `@hydra.main` app on `argv` (default: the process's), rewritten as Hydra needs
    it (`ipc=10`, `experiment=null`), with the host allocator and behind the error boundary: a
    bad choice is one line and exit 2 before Hydra starts."""
    args = sys.argv[1:] if argv is None else list(argv)
    with error_boundary():
        args = hydra_argv(args)
    sys.argv = [sys.argv[0], *args]
    use_allocator()  # reuse freed host memory (distillkit/allocator.py)
    with error_boundary():  # what Hydra lets through (HYDRA_FULL_ERROR=1)
        app()


def hydra_app(
    task: Callable[[Any], Any], config_name: str, failures: list[JobFailure]
) -> Callable[[], Any]:
    """`task(cfg)` as a `@hydra.main` app on conf/<config_name>.yaml; each job goes through
    `run_task`, a failed multirun job into `failures`. Hydra names the job after `task`'s module
    (`distill` for distillkit/cli/distill.py), as if `task` were decorated itself."""
    import hydra

    @functools.wraps(task)
    def job(cfg: Any) -> Any:
        outcome = run_task(task, cfg)
        if isinstance(outcome, JobFailure):
            failures.append(outcome)
            return FAILED_VALUE
        return outcome

    main = hydra.main(
        config_path="pkg://distillkit.conf", config_name=config_name, version_base="1.3"
    )
    return main(job)


def run_hydra_command(
    task: Callable[[Any], Any], config_name: str, argv: Sequence[str] | None
) -> list[JobFailure]:
    """Run `task` as the Hydra app on conf/<config_name>.yaml with `argv`; returns the jobs of a
    multirun that failed (each already has its failed.json and line; none for a single run,
    whose errors exit through the boundary)."""
    failures: list[JobFailure] = []
    run_hydra_app(hydra_app(task, config_name, failures), argv)
    return failures


def hydra_command(
    task: Callable[[Any], Any], config_name: str, argv: Sequence[str] | None = None
) -> None:
    """A Hydra command's `main`: `run_hydra_command`, then, when some jobs of a multirun failed
    (the others completed), one line per failed job and exit status 1."""
    failures = run_hydra_command(task, config_name, argv)
    if failures:
        print(f"distillkit: {len(failures)} job(s) of the sweep failed:", file=sys.stderr)
        for failure in failures:
            print(f"  {failure.line}", file=sys.stderr)
        raise SystemExit(EXIT_FAILED)


def _method_name(method_cfg: object) -> str | None:
    """The failed job's method name, when its method block names a known class."""
    from omegaconf import DictConfig, OmegaConf

    from distillkit.errors import ConfigError
    from distillkit.methods import method_name

    if not isinstance(method_cfg, DictConfig):
        return None
    try:
        return method_name(OmegaConf.to_container(method_cfg, resolve=False))  # type: ignore[arg-type]
    except ConfigError:  # not a known method: the record says so by leaving it out
        return None
