"""Command-line arguments as Hydra needs them: numeric group choices (`ipc=10`, `ipc=range(1,4)`)
and null ones."""

from __future__ import annotations

import re
from collections.abc import Sequence

from distillkit.errors import ConfigError


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


#: Config groups whose options are numbers: `ipc=10` must work as typed.
NUMERIC_GROUPS = ("ipc",)

_NUMBER_LIST = re.compile(r"^-?\d+(,-?\d+)*$")
_RANGE = re.compile(r"^range\(\s*(-?\d+)\s*,\s*(-?\d+)\s*(?:,\s*(-?\d+)\s*)?\)$")
_CHOICE = re.compile(r"^choice\(\s*(-?\d+(?:\s*,\s*-?\d+)*)\s*\)$")


def _numbers(value: str) -> list[int] | None:
    """The integers a numeric choice names: `7`, `1,10`, `range(1,4)`, `choice(1,10)`; None when
    `value` is none of these (a quoted choice, an interpolation, ...)."""
    value = value.strip()
    if _NUMBER_LIST.match(value):
        return [int(v) for v in value.split(",")]
    if match := _RANGE.match(value):
        start, stop, step = match.groups()
        return list(range(int(start), int(stop), int(step or 1)))
    if match := _CHOICE.match(value):
        return [int(v) for v in match.group(1).split(",")]
    return None


def quote_numeric_group_choices(argv: Sequence[str]) -> list[str]:
    """Rewrite `ipc=10` as `ipc='10'` (and `ipc=1,10`, `ipc=range(1,3)` or `ipc=choice(1,10)` as
    the quoted list `ipc='1','10'`).

    Hydra parses a bare number as an int and refuses ints as config-group choices, also those its
    sweep functions produce; quoting makes each the string that names `ipc/<N>` (any N >= 1: the
    `hydra_plugins/distillkit_ipc` config source). Multirun passes the quoted form on to every job.
    """
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        bare_key = key.lstrip("+~")
        numbers = _numbers(value) if sep and bare_key in NUMERIC_GROUPS else None
        if numbers:
            arg = f"{key}=" + ",".join(f"'{n}'" for n in numbers)
        out.append(arg)
    return out


#: Arguments that select a search sweeper (it emits trial values unquoted: `ipc=1`).
_SEARCH_SWEEPERS = ("hparams_search=", "hydra/sweeper=optuna")


def quote_numeric_search_spaces(argv: Sequence[str]) -> list[str]:
    """Under a search sweeper, rewrite `ipc=choice(1,10)` (or `range`, `1,10`, and the
    `hydra.sweeper.params.ipc=` form) as `ipc=choice("'1'","'10'")`.

    Optuna's sweeper writes each trial's override as `ipc=1`, which Hydra parses as an int;
    values that carry their quotes reach the job as the choice names `'1'`, `'10'`. Other
    arguments are returned as they are (the basic sweeper takes quote_numeric_group_choices).
    """
    if not any(arg.lstrip("+~").startswith(_SEARCH_SWEEPERS) for arg in argv):
        return list(argv)
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        group = key.lstrip("+~").removeprefix("hydra.sweeper.params.")
        numbers = _numbers(value) if sep and group in NUMERIC_GROUPS else None
        if numbers and (len(numbers) > 1 or not _NUMBER_LIST.match(value)):
            arg = f"{key}=choice(" + ",".join(f"\"'{n}'\"" for n in numbers) + ")"
        out.append(arg)
    return out


def check_numeric_group_choices(argv: Sequence[str]) -> None:
    """Refuse `ipc=0`, `ipc=-3` or an empty `ipc=range(3,1)` with one line, before Hydra composes.

    Hydra would report a missing `ipc/0` with a list of options; the real problem is the value.
    """
    for arg in argv:
        key, sep, value = arg.partition("=")
        bare_key = key.lstrip("+~")
        if not (sep and bare_key in NUMERIC_GROUPS):
            continue
        numbers = _numbers(value.replace("'", ""))
        _require(numbers != [], f"{bare_key}={value} names no value")
        for number in numbers or []:
            _require(number >= 1, f"{bare_key} must be a positive integer, got {number}")


#: Groups whose default is "nothing": `experiment=null` on the command line means that default.
OPTIONAL_GROUPS = ("experiment",)
#: Groups that always need a choice.
REQUIRED_GROUPS = ("dataset", "method", "ipc", "model", "eval", "logger")


def drop_null_group_choices(argv: Sequence[str]) -> list[str]:
    """`experiment=null` selects no preset (the default); `method=null` is refused in one line.

    Hydra itself answers a null group choice with a traceback.
    """
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        bare_key = key.lstrip("+~")
        if sep and value.strip("'\"").lower() in ("null", "none", ""):
            if bare_key in OPTIONAL_GROUPS:
                continue
            if bare_key == "regularizer":
                arg = f"{key}=none"
            _require(
                bare_key not in REQUIRED_GROUPS,
                f"{bare_key} needs a choice, got {arg!r} (distillkit --help lists the options)",
            )
        out.append(arg)
    return out


def hydra_argv(args: Sequence[str]) -> list[str]:
    """Overrides as Hydra must see them (null choices dropped, numeric ones quoted); a bad value
    is a ConfigError."""
    args = drop_null_group_choices(args)
    check_numeric_group_choices(args)
    return quote_numeric_group_choices(quote_numeric_search_spaces(args))
