"""Checks on the composed configuration, so a bad run fails before any work with one clear line.

Each component checks its own settings (`Settings.from_config`); this module holds the checks
that cut across components, and the plain-dict view of a composed config the library works on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from distillkit.errors import ConfigError
from distillkit.keys import check_keys

__all__ = [
    "ConfigError",
    "as_dict",
    "check_known_keys",
    "checked_config",
    "validate_config",
]


def as_dict(cfg: Mapping[str, Any] | DictConfig) -> dict[str, Any]:
    """A composed config as plain, resolved containers (the library takes no DictConfig)."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


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
        "synthetic", "dsa", "unequalness", "checkpoint", "images", "distributed",
    }
)  # fmt: skip
#: The blocks the training loop itself reads (distillkit.trainer).
LOOP_BLOCKS: dict[str, frozenset[str]] = {
    "synthetic": frozenset({"init", "factor"}),
    "unequalness": frozenset({"enabled", "every", "distances", "num_nets"}),
    "images": frozenset({"every", "max_per_class", "flips"}),
    "distributed": frozenset({"timeout_s"}),
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

    dataset, model = str(_get(cfg, "dataset.name")), str(_get(cfg, "model.name"))
    wandb = _get(cfg, "logger.wandb")
    check_keys(cfg, "", RUN_KEYS | set(extra_keys))
    blocks: dict[str, Any] = {
        **LOOP_BLOCKS,
        "dsa": DSA_KEYS,
        "checkpoint": CheckpointSchedule.KEYS,
        "runtime": RUNTIME_KEYS,
        "logger": LOGGER_KEYS,
        "eval": EvalSettings.keys(),
        "method": method_class(cfg["method"]).Settings.keys(),
        "dataset": dataset_keys(dataset),
        "model": model_keys(model),
    }
    for section, allowed in blocks.items():
        if allowed is not None and isinstance(cfg.get(section), Mapping):
            check_keys(cfg[section], section, allowed)
    check_keys(wandb, "logger.wandb", WANDB_KEYS)
    for name, options in (cfg.get("regularizer") or {}).items():
        if isinstance(options, Mapping):
            settings = addon_class(str(name), options).Settings
            check_keys(options, f"regularizer.{name}", settings.keys())


def validate_config(
    cfg: Mapping[str, Any], extra_keys: Iterable[str] = (), *, resources: bool = False
) -> None:
    """Checks that need no data: numbers in range and known names (this module's own checks,
    all first), then every key known (`extra_keys`: see check_known_keys), each component's
    settings checked by the component (runtime switches refused at start-up, not when the
    method starts) and, with `resources`, the files the method needs (MTT's expert buffer)."""
    from distillkit.data import available_datasets
    from distillkit.methods import method_class
    from distillkit.models import available_models
    from distillkit.runtime import Runtime

    _check_values(cfg, available_datasets(), available_models())
    check_known_keys(cfg, extra_keys)
    method = method_class(cfg["method"])
    settings = method.Settings.from_config(cfg["method"], "method")
    Runtime.from_config(cfg.get("runtime"), "cpu")
    if resources:
        method.check_resources(settings)


def _check_values(cfg: Mapping[str, Any], datasets: list[str], models: list[str]) -> None:
    ipc = cfg["ipc"]
    _require(
        isinstance(ipc, int) and not isinstance(ipc, bool) and ipc >= 1,
        f"ipc must be a positive integer, got {ipc!r}",
    )
    _integer(cfg, "seed", 0)
    for path in POSITIVE_INTEGERS:
        _integer(cfg, path, 1)
    for path in NON_NEGATIVE_INTEGERS:
        _integer(cfg, path, 0)
    for path in NON_NEGATIVE_NUMBERS:
        _number(cfg, path, 0)
    _number(cfg, "eval.lr", 0, strict=True)
    _require(
        cfg["dataset"]["name"] in datasets,
        f"unknown dataset {cfg['dataset']['name']!r}; available: {', '.join(datasets)}",
    )
    known_models = {m.lower() for m in models}
    for name in [cfg["model"]["name"], *cfg["eval"]["models"]]:
        _require(
            str(name).lower() in known_models,
            f"unknown model {name!r}; available: {', '.join(models)}",
        )
    init = _get(cfg, "synthetic.init")
    _require(init in (None, "real", "noise"), f"synthetic.init must be real or noise, got {init!r}")
    stacked = _get(cfg, "eval.stacked")
    if stacked is not None and not isinstance(stacked, bool):
        _require(
            str(stacked).strip().lower() in ("auto", "true", "false"),
            f"eval.stacked must be true, false or auto, got {stacked!r}",
        )


def checked_config(
    cfg: Mapping[str, Any] | DictConfig,
    extra_keys: Iterable[str] = (),
    *,
    resources: bool = True,
) -> dict[str, Any]:
    """The one validation of a run's config, before any data loads: a plain dict every key of
    which some component reads, every value in range, and (`resources`) the files the method
    needs present (an evaluation of a saved set needs no expert buffer). The method's one name
    (its class's, the conf/method file's) is written in as `method.name` for the files and
    W&B. What the composition root (distillkit.assembly.assemble_run) builds from."""
    from distillkit.methods import method_name

    plain = as_dict(cfg)
    given = plain["method"].get("name")  # a config checked before carries the derived name
    plain["method"] = {k: v for k, v in plain["method"].items() if k != "name"}
    validate_config(plain, extra_keys, resources=resources)
    name = method_name(plain["method"])
    if given is not None and given != name:
        raise ConfigError(f"method.name: the method's name is its class's ({name}); remove it")
    plain["method"]["name"] = name
    return plain
