"""Checks on the composed configuration, so a bad run fails before any work with one clear line.

Each component checks its own settings (`Settings.from_config`); this module holds the checks
that cut across components, and the plain-dict view of a composed config the library works on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from distillkit.errors import ConfigError
from distillkit.keys import check_keys

__all__ = [
    "ConfigError",
    "as_dict",
    "check_known_keys",
    "resolve_device",
    "validate_config",
    "validate_resources",
]


def as_dict(cfg: Mapping[str, Any] | DictConfig) -> dict[str, Any]:
    """A composed config as plain, resolved containers (the library takes no DictConfig)."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


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


#: Counts that must be at least 1 when set.
POSITIVE_INTEGERS = (
    "log_every",
    "eval.epochs",
    "eval.batch_size",
    "eval.test_batch_size",
    "unequalness.num_nets",
    "images.max_per_class",
)
#: Counts and intervals where 0 means "none" or "only at the end".
NON_NEGATIVE_INTEGERS = (
    "eval.num_models",
    "checkpoint.every",
    "images.every",
    "unequalness.every",
)
#: Rates and coefficients that may be 0 but never negative.
NON_NEGATIVE_NUMBERS = ("eval.momentum", "eval.weight_decay")


#: The blocks of a run's config (conf/config.yaml and its groups); a key outside them is refused.
RUN_KEYS = frozenset(
    {
        "seed", "ipc", "device", "progress", "log_every", "resume",
        "dataset", "method", "regularizer", "model", "eval", "logger", "runtime",
        "synthetic", "dsa", "unequalness", "checkpoint", "images",
    }
)  # fmt: skip
#: The blocks the training loop itself reads (distillkit.trainer).
LOOP_BLOCKS: dict[str, frozenset[str]] = {
    "synthetic": frozenset({"init", "factor"}),
    "unequalness": frozenset({"enabled", "every", "distances", "num_nets"}),
    "images": frozenset({"every", "max_per_class", "flips"}),
}


def check_known_keys(cfg: Mapping[str, Any], extra_keys: Iterable[str] = ()) -> None:
    """Every key of a composed run config is one some component reads, else one line naming it
    and the nearest valid key (`method.batch_reall: unknown key (did you mean batch_real?)`):
    command-line overrides, `++` additions, tuned files and presets are all in `cfg` by now.
    Each block's keys come from the component that reads it; `extra_keys` are top-level keys of
    a command built on the run's config (distillkit-continual's `steps`, `orders`, `compare`)."""
    from distillkit.addons.base import addon_class
    from distillkit.augment.dsa import _CONFIG_KEYS as DSA_KEYS
    from distillkit.checkpoint import CheckpointSchedule
    from distillkit.data.registry import dataset_keys
    from distillkit.evaluation.protocol import EvalSettings
    from distillkit.logging.build import LOGGER_KEYS, WANDB_KEYS
    from distillkit.methods import method_class
    from distillkit.models.catalog import model_keys
    from distillkit.runtime import RUNTIME_KEYS

    check_keys(cfg, "", RUN_KEYS | set(extra_keys))
    blocks: dict[str, Any] = {
        **LOOP_BLOCKS,
        "dsa": DSA_KEYS,
        "checkpoint": CheckpointSchedule.KEYS,
        "runtime": RUNTIME_KEYS,
        "logger": LOGGER_KEYS,
        "eval": EvalSettings.keys(),
        "method": method_class(cfg["method"]).Settings.keys(),
        "dataset": dataset_keys(str(_get(cfg, "dataset.name"))),
        "model": model_keys(str(_get(cfg, "model.name"))),
    }
    for section, allowed in blocks.items():
        if allowed is not None and isinstance(cfg.get(section), Mapping):
            check_keys(cfg[section], section, allowed)
    check_keys(_get(cfg, "logger.wandb"), "logger.wandb", WANDB_KEYS)
    for name, options in (cfg.get("regularizer") or {}).items():
        if isinstance(options, Mapping):
            settings = addon_class(str(name), options).Settings
            check_keys(options, f"regularizer.{name}", settings.keys())


def validate_config(cfg: Mapping[str, Any], extra_keys: Iterable[str] = ()) -> None:
    """Checks that need no data: every key known (`extra_keys`: see check_known_keys), numbers
    in range, known names."""
    from distillkit.data import available_datasets
    from distillkit.methods import method_class
    from distillkit.models import available_models

    check_known_keys(cfg, extra_keys)
    ipc = cfg["ipc"]
    _require(
        isinstance(ipc, int) and not isinstance(ipc, bool) and ipc >= 1,
        f"ipc must be a positive integer, got {ipc!r}",
    )
    _integer(cfg, "seed", 0)
    method = method_class(cfg["method"])
    method.Settings.from_config(cfg["method"], "method")
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
        Runtime.from_config(runtime, "cpu")  # ConfigError on a bad switch
    stacked = _get(cfg, "eval.stacked")
    if stacked is not None and not isinstance(stacked, bool):
        _require(
            str(stacked).strip().lower() in ("auto", "true", "false"),
            f"eval.stacked must be true, false or auto, got {stacked!r}",
        )


def validate_resources(cfg: Mapping[str, Any]) -> None:
    """Cheap checks of files a run needs, before any data is loaded (each method names its own:
    MTT's expert buffer). IID's pools are checked when the add-ons are set up, with the dataset
    at hand, so the message can give the exact pretrain command."""
    from distillkit.methods import method_class

    method = method_class(cfg["method"])
    method.check_resources(method.Settings.from_config(cfg["method"], "method"))


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
