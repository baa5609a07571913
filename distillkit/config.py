"""Checks on the composed configuration, so a bad run fails before any work with one clear line."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

#: Config groups whose options are numbers: `ipc=10` must work as typed.
NUMERIC_GROUPS = ("ipc",)

_NUMBER_LIST = re.compile(r"^\d+(,\d+)*$")


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


def validate_config(cfg: Mapping[str, Any]) -> None:
    """Checks that need no data: numbers in range, known names."""
    from distillkit.data import available_datasets
    from distillkit.methods import available_methods
    from distillkit.models import available_models

    ipc = cfg["ipc"]
    _require(isinstance(ipc, int) and ipc >= 1, f"ipc must be a positive integer, got {ipc!r}")
    method = cfg["method"]
    _require(
        method["name"] in available_methods(),
        f"unknown method {method['name']!r}; available: {', '.join(available_methods())}",
    )
    _require(
        int(method.get("iterations", 0)) >= 0,
        f"method.iterations must be >= 0, got {method.get('iterations')}",
    )
    for key in ("lr_img", "lr_lr", "lr_teacher"):
        if key in method and method[key] is not None:
            _require(float(method[key]) > 0, f"method.{key} must be > 0, got {method[key]}")
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
    evaluation = cfg["eval"]
    _require(int(evaluation["num_models"]) >= 0, "eval.num_models must be >= 0")
    _require(int(evaluation["epochs"]) >= 1, "eval.epochs must be >= 1")
    _require(float(evaluation["lr"]) > 0, f"eval.lr must be > 0, got {evaluation['lr']}")


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
