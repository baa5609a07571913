"""Checks on the composed configuration, so a bad run fails before any work with one clear line."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

#: Config groups whose options are numbers: `ipc=10` must work as typed.
NUMERIC_GROUPS = ("ipc",)

_NUMBER_LIST = re.compile(r"^-?\d+(,-?\d+)*$")


class ConfigError(ValueError):
    """An impossible or inconsistent configuration (reported as one line, no traceback)."""


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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name} was asked for but CUDA is not available; use device=cpu")
    return device


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _get(cfg: Mapping[str, Any], path: str) -> Any:
    node: Any = cfg
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _number(cfg: Mapping[str, Any], path: str, minimum: float, *, strict: bool = False) -> None:
    """`path` (when set) must be a number >= minimum (> minimum when `strict`)."""
    value = _get(cfg, path)
    if value is None:
        return
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{path} must be a number, got {value!r}") from None
    ok = number > minimum if strict else number >= minimum
    bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
    _require(ok and number == number, f"{path} must be {bound}, got {value}")


def _integer(cfg: Mapping[str, Any], path: str, minimum: int) -> None:
    """`path` (when set) must be an integer >= minimum (YAML `1.0` counts as 1)."""
    value = _get(cfg, path)
    if value is None:
        return
    ok = not isinstance(value, bool) and isinstance(value, int | float) and value == int(value)
    _require(ok, f"{path} must be an integer, got {value!r}")
    _require(int(value) >= minimum, f"{path} must be >= {minimum}, got {value}")


#: Method learning rates checked even when they are not numbers (other `lr_*` keys: if numeric).
LEARNING_RATES = ("lr_img", "lr_lr", "lr_teacher", "lr_net")
#: Counts that must be at least 1 when set.
POSITIVE_INTEGERS = (
    "log_every",
    "eval.epochs",
    "eval.batch_size",
    "eval.test_batch_size",
    "method.batch_real",
    "method.batch_train",
    "method.syn_steps",
    "method.expert_epochs",
    "method.max_start_epoch",
    "unequalness.num_nets",
    "images.max_per_class",
)
#: Counts and intervals where 0 means "none" or "only at the end".
NON_NEGATIVE_INTEGERS = (
    "method.iterations",
    "eval.num_models",
    "checkpoint.every",
    "images.every",
    "unequalness.every",
)
#: Rates and coefficients that may be 0 but never negative.
NON_NEGATIVE_NUMBERS = ("method.momentum", "eval.momentum", "eval.weight_decay")


def validate_config(cfg: Mapping[str, Any]) -> None:
    """Checks that need no data: numbers in range, known names."""
    from distillkit.data import available_datasets
    from distillkit.methods import available_methods
    from distillkit.models import available_models

    ipc = cfg["ipc"]
    _require(
        isinstance(ipc, int) and not isinstance(ipc, bool) and ipc >= 1,
        f"ipc must be a positive integer, got {ipc!r}",
    )
    _integer(cfg, "seed", 0)
    method = cfg["method"]
    _require(
        method["name"] in available_methods(),
        f"unknown method {method['name']!r}; available: {', '.join(available_methods())}",
    )
    for key in sorted(str(k) for k in method if str(k).startswith("lr_")):
        if key in LEARNING_RATES or isinstance(method[key], int | float):
            _number(cfg, f"method.{key}", 0, strict=True)
    for path in POSITIVE_INTEGERS:
        _integer(cfg, path, 1)
    for path in NON_NEGATIVE_INTEGERS:
        _integer(cfg, path, 0)
    for path in NON_NEGATIVE_NUMBERS:
        _number(cfg, path, 0)
    _number(cfg, "eval.lr", 0, strict=True)
    _require(
        cfg["dataset"]["name"] in available_datasets(),
        f"unknown dataset {cfg['dataset']['name']!r}; available: {', '.join(available_datasets())}",
    )
    known_models = {m.lower() for m in available_models()}
    for name in [cfg["model"]["name"], *cfg["eval"]["models"]]:
        _require(
            str(name).lower() in known_models,
            f"unknown model {name!r}; available: {', '.join(available_models())}",
        )
    _check_switches(cfg)
    init = _get(cfg, "synthetic.init")
    _require(init in (None, "real", "noise"), f"synthetic.init must be real or noise, got {init!r}")


def _check_switches(cfg: Mapping[str, Any]) -> None:
    """runtime.* and eval.stacked: refused at start-up, not when the method or evaluation starts."""
    from distillkit.runtime import Runtime

    runtime = _get(cfg, "runtime")
    if runtime is not None:
        try:
            Runtime.from_config(runtime, "cpu")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    stacked = _get(cfg, "eval.stacked")
    if stacked is not None and not isinstance(stacked, bool):
        _require(
            str(stacked).strip().lower() in ("auto", "true", "false"),
            f"eval.stacked must be true, false or auto, got {stacked!r}",
        )


def validate_resources(cfg: Mapping[str, Any]) -> None:
    """Cheap checks of files a run needs, before any data is loaded.

    MTT's expert buffer is opened and checked shard by shard later; a missing directory is
    reported here, before minutes of data loading. (IID's pools are checked when the add-ons are
    set up, with the dataset at hand, so the message can give the exact pretrain command.)
    """
    method = cfg["method"]
    if method["name"] == "mtt":
        buffer = method.get("buffer")
        _require(bool(buffer), "method.buffer: MTT needs an expert buffer directory")
        path = Path(str(buffer))
        if not path.is_dir() or not any(path.glob("experts_*.pt")):
            raise ConfigError(
                f"{path}: no expert buffer for MTT here (method.buffer); train one with "
                "distillkit-experts for this dataset and model, or point method.buffer at it"
            )


def synthetic_factor(cfg: Mapping[str, Any]) -> int:
    """IDM-style partition factor: the method's own `factor` when it sets one, else synthetic's."""
    return int(cfg["method"].get("factor") or cfg["synthetic"].get("factor", 1))


def validate_against_data(cfg: Mapping[str, Any], data: Any) -> None:
    """Checks that need the loaded dataset."""
    counts = data.class_counts()
    smallest = int(counts.min())
    factor = synthetic_factor(cfg)
    _require(factor >= 1, f"synthetic.factor must be >= 1, got {factor}")
    needed = cfg["ipc"] * factor**2
    if cfg["synthetic"]["init"] == "real":
        _require(
            needed <= smallest,
            f"ipc={cfg['ipc']} needs {needed} real images per class to initialise from, more "
            f"than the {smallest} of the smallest class of {data.info.name}",
        )
    h, w = data.info.image_size
    _require(
        h % factor == 0 and w % factor == 0,
        f"synthetic.factor={factor} does not divide the {h}x{w} images of {data.info.name}",
    )
