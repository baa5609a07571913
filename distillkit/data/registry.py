"""The one place that maps dataset names to loaders, plus root resolution and option checking.

`load_dataset` is the only entry point the rest of distillkit uses: it resolves the data root
(argument, else $DISTILLKIT_DATA, else ./data), validates the options against what the dataset
accepts, runs the family loader and normalises the result onto the requested device.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from distillkit.data.errors import ROOT_ENV_VAR
from distillkit.data.image_folder import SPECS as FOLDER_SPECS
from distillkit.data.image_folder import load_image_folder
from distillkit.data.raw import RawSplits
from distillkit.data.real import RealData
from distillkit.data.sklearn_digits import load_digits
from distillkit.data.torchvision_sets import SPECS as TORCHVISION_SPECS
from distillkit.data.torchvision_sets import STATS_CHOICES, load_torchvision
from distillkit.data.zca import ZCAState
from distillkit.errors import ConfigError

DEFAULT_ROOT = "./data"
LIMIT_OPTIONS = frozenset({"train_limit", "test_limit"})
#: Options every dataset accepts, handled here rather than by the family loader.
COMMON_OPTIONS = frozenset({"zca"})


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: `loader(root, download, **options)` and the options it accepts."""

    loader: Callable[..., RawSplits]
    options: frozenset[str] = LIMIT_OPTIONS


def _digits(root: Path, download: bool, **options: Any) -> RawSplits:
    del root, download  # ships inside scikit-learn
    return load_digits(**options)


REGISTRY: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(_digits, LIMIT_OPTIONS | {"image_size", "mirror"}),
    **{
        name: DatasetSpec(
            partial(load_torchvision, name),
            LIMIT_OPTIONS | ({"stats"} if name in STATS_CHOICES else set()),
        )
        for name in TORCHVISION_SPECS
    },
    **{name: DatasetSpec(partial(load_image_folder, name)) for name in FOLDER_SPECS},
}


def available_datasets() -> list[str]:
    """Names accepted by `load_dataset`, sorted."""
    return sorted(REGISTRY)


#: `dataset` block keys read by the trainer, not the loader (`dsa_strategy` is the augmentation's).
RUN_KEYS = frozenset({"name", "root", "download", "dsa_strategy", "validation"})


def dataset_keys(name: str) -> frozenset[str] | None:
    """The keys a run's `dataset` block may set for dataset `name` (None: no such dataset)."""
    spec = REGISTRY.get(str(name).strip().lower().replace("-", "_"))
    return None if spec is None else frozenset(spec.options | COMMON_OPTIONS | RUN_KEYS)


def resolve_root(root: str | os.PathLike[str] | None) -> Path:
    """The data root: `root`, else $DISTILLKIT_DATA, else ./data (made absolute)."""
    chosen = root if root not in (None, "") else os.environ.get(ROOT_ENV_VAR) or DEFAULT_ROOT
    return Path(chosen).expanduser().absolute()


def load_dataset(
    name: str,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    device: str | torch.device = "cpu",
    zca_state: ZCAState | Mapping[str, Any] | None = None,
    **options: Any,
) -> RealData:
    """Load dataset `name` as normalised float32 tensors on `device`.

    Options set to None are treated as unset (convenient for configs); any other option the
    dataset does not accept raises TypeError. Missing files raise DatasetNotFoundError.
    `zca=True` whitens instead of normalising (fitted on the training split); `zca_state` (a
    `ZCAState` or its saved dict, e.g. from synthetic_set.pt) re-applies a fitted whitening.
    """
    key = name.strip().lower().replace("-", "_")
    spec = REGISTRY.get(key)
    if spec is None:
        raise ConfigError(
            f"Unknown dataset {name!r}; available datasets: {', '.join(available_datasets())}"
        )
    options = {k: v for k, v in options.items() if v is not None}
    accepted = spec.options | COMMON_OPTIONS
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise TypeError(
            f"Dataset {key!r} does not accept option(s) {unknown}; accepted: {sorted(accepted)}"
        )
    zca = bool(options.pop("zca", False))
    if isinstance(zca_state, Mapping):
        zca_state = ZCAState.from_state_dict(zca_state)
    raw = spec.loader(resolve_root(root), bool(download), **options)
    return raw.to_real(device, zca=zca, zca_state=zca_state)


def load_from_config(dataset_cfg: Mapping[str, Any], device: str | torch.device) -> RealData:
    """Load a run's `dataset` block: its `name`, `root`, `download` and the dataset's options
    (`dsa_strategy` is the augmentation's, not the loader's); an option the dataset does not take
    is a ConfigError."""
    options = {k: v for k, v in dataset_cfg.items() if k not in RUN_KEYS}
    validation = int(dataset_cfg.get("validation") or 0)
    try:
        data = load_dataset(
            dataset_cfg["name"],
            root=dataset_cfg.get("root"),
            download=bool(dataset_cfg.get("download")),
            device=device,
            **options,
        )
    except TypeError as exc:  # an option the dataset does not take
        raise ConfigError(f"dataset {dataset_cfg['name']}: {exc}") from None
    return data.hold_out(validation) if validation > 0 else data
