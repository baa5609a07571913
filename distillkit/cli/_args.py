"""Command-line arguments as Hydra needs them: numeric group choices (`ipc=10`) and null ones."""

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


def quote_numeric_group_choices(argv: Sequence[str]) -> list[str]:
    """Rewrite `ipc=10` as `ipc='10'` (and `ipc=1,10` as `ipc='1','10'`).

    Hydra parses a bare number as an int and refuses ints as config-group choices; quoting makes
    it the string that names `ipc/10.yaml`. Multirun passes the quoted form on to every job.
    """
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        bare_key = key.lstrip("+~")
        if sep and bare_key in NUMERIC_GROUPS and _NUMBER_LIST.match(value):
            value = ",".join(f"'{v}'" for v in value.split(","))
            arg = f"{key}={value}"
        out.append(arg)
    return out


def check_numeric_group_choices(argv: Sequence[str]) -> None:
    """Refuse `ipc=0` or `ipc=-3` on the command line with one line, before Hydra composes.

    Hydra would report a missing `ipc/0.yaml` with a list of options; the real problem is the
    value. Positive values without a preset are left to Hydra (a search path may add presets).
    """
    for arg in argv:
        key, sep, value = arg.partition("=")
        bare_key = key.lstrip("+~")
        if sep and bare_key in NUMERIC_GROUPS and _NUMBER_LIST.match(value.replace("'", "")):
            for number in value.replace("'", "").split(","):
                _require(int(number) >= 1, f"{bare_key} must be a positive integer, got {number}")


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
    return quote_numeric_group_choices(args)
