"""Run assembly: the composition root, the one place a checked config becomes the objects a run
works with.

`assemble_run` builds a run once: the bench (device, real data, networks, random streams, the
runtime), the data and architecture checks, the add-ons, the synthetic set and its method, the
evaluation settings and augmentation. The trainer, `distillkit-continual`, `distillkit-eval` and
the analysis commands all take their objects from it; the config it takes is the one
`distillkit.config.checked_config` validated once. The steps are calls into the components that
own them (`distillkit.workbench` builds the bench), so this module holds the order and nothing
else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distillkit.addons import AddOn, build_addons
from distillkit.augment.choice import distillation_augment, evaluation_augment
from distillkit.data import RealData, load_from_config
from distillkit.distributed import World
from distillkit.errors import InputError
from distillkit.evaluation import EvalSettings
from distillkit.keys import drop_retired
from distillkit.methods import Method, MethodContext, method_class
from distillkit.synthetic import SyntheticSet, check_initialisable, mosaic_factor
from distillkit.workbench import Workbench

#: The commands built on a bench alone (experts, pretrain, cam, unequalness) know it by this name.
Bench = Workbench


@dataclass
class Assembly:
    """Everything a run is built from, built once (`synthetic` and `method` are None for a
    command that only evaluates or analyses)."""

    bench: Workbench
    addons: list[AddOn]
    synthetic: SyntheticSet | None
    method: Method | None
    eval_settings: EvalSettings
    eval_augment: Any


def assemble_run(
    cfg: Mapping[str, Any],
    data: RealData | None = None,
    *,
    distil: bool = True,
    addons: list[AddOn] | None = None,
    world: World | None = None,
) -> Assembly:
    """The run `cfg` (checked by `checked_config`) describes. `data`: already loaded (a saved
    set's dataset, continual learning's class subsets); `distil=False`: no synthetic set or
    method (evaluation, analysis); `addons`: set up already (continual learning loads a pool
    once for all its steps); `world`: the ranks of a multi-process run (the method splits its
    work over them)."""
    method_cls = method_class(cfg["method"])
    if addons is None:  # checked against the method's capabilities before any data loads
        addons = build_addons(cfg.get("regularizer"), method_cls)
    bench = Workbench.from_config(cfg, data)
    factor = mosaic_factor(cfg["method"], cfg["synthetic"])
    check_initialisable(bench.data, int(cfg["ipc"]), cfg["synthetic"]["init"], factor)
    bench.networks.check_architectures(
        [cfg["model"]["name"], *cfg["eval"]["models"]], bench.data.info.name
    )
    eval_settings = EvalSettings.from_config(cfg["eval"])
    eval_augment = evaluation_augment(cfg)
    if not distil:
        return Assembly(bench, addons, None, None, eval_settings, eval_augment)
    synthetic = SyntheticSet.initialise(
        bench.data, cfg["ipc"], cfg["synthetic"]["init"], bench.generators["init"], factor=factor
    )
    synthetic.use_addons(addons)
    context = MethodContext(
        cfg=cfg["method"],
        data=bench.data,
        synthetic=synthetic,
        networks=bench.networks,
        augment=distillation_augment(cfg),
        generators=bench.generators,
        addons=addons,
        runtime=bench.runtime,
        world=world,
    )
    return Assembly(bench, addons, synthetic, method_cls(context), eval_settings, eval_augment)


@dataclass
class SavedSet:
    """A synthetic_set.pt with the real data of the run that wrote it."""

    synthetic: SyntheticSet
    saved: dict[str, Any]
    cfg: dict[str, Any]
    data: RealData


def load_saved_set(
    path: str | Path, device: torch.device, data_root: str | None = None
) -> SavedSet:
    """A saved set and its dataset (the run's ZCA state; `data_root` overrides its root)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such synthetic-set file")
    synthetic, saved = SyntheticSet.load(path, device)
    cfg = saved.get("config")
    if not cfg or "dataset" not in cfg:
        raise InputError(f"{path}: the file carries no run configuration to evaluate with")
    cfg = drop_retired(cfg)
    dataset_cfg = dict(cfg["dataset"])
    if saved.get("zca") is not None:
        dataset_cfg["zca_state"] = saved["zca"]
    if data_root:
        dataset_cfg["root"] = data_root
    return SavedSet(synthetic, saved, dict(cfg), load_from_config(dataset_cfg, device))
