"""Run assembly: the one place a config becomes the objects a run works with.

`Bench.from_config` builds what every program needs first (device, real data, the network
factory, the named random streams); `build_distillation` builds the synthetic set and the method
with the add-ons installed. The trainer, continual learning and every command use them, so they
cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distillkit.addons import AddOn, build_addons
from distillkit.augment import DSA
from distillkit.augment.dc import DCEvaluationAugment
from distillkit.config import ConfigError, resolve_device, synthetic_factor
from distillkit.data import RealData, load_from_config
from distillkit.errors import InputError
from distillkit.methods import Method, MethodContext, method_class
from distillkit.networks import NetworkFactory
from distillkit.runtime import Runtime
from distillkit.seeding import RunGenerators
from distillkit.synthetic import SyntheticSet


@dataclass
class Bench:
    """What a run works on: the device, the real data, its networks and its random streams."""

    device: torch.device
    data: RealData
    networks: NetworkFactory
    generators: RunGenerators
    #: The run's speed switches, built once here and handed to the method.
    runtime: Runtime | None = None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], data: RealData | None = None) -> Bench:
        """From the `device`, `dataset`, `model` and `seed` entries (`data`: already loaded)."""
        device = resolve_device(str(cfg.get("device", "auto")))
        if data is None:
            data = load_from_config(cfg["dataset"], device)
        networks = NetworkFactory.from_config(cfg["model"], data.info, device)
        runtime = Runtime.from_config(cfg.get("runtime"), device)
        return cls(device, data, networks, RunGenerators(int(cfg.get("seed", 0))), runtime)

    def check_models(self, names: list[str]) -> None:
        """Build each architecture once on the dataset's image size.

        A network that cannot take the images (too small for its pooling, options it does not
        accept) otherwise fails deep inside distillation or after it, at evaluation.
        """
        c, (h, w) = self.networks.channels, self.networks.image_size
        scratch = torch.Generator().manual_seed(0)
        for name in dict.fromkeys(names):
            try:
                net = self.networks.for_architecture(name)(scratch).eval()
                with torch.no_grad():
                    net(torch.zeros((2, c, h, w), device=self.networks.device))
            except (ValueError, RuntimeError, TypeError) as exc:
                detail = " ".join(str(exc).split())[:200]
                raise ConfigError(
                    f"model {name} cannot take the {c}x{h}x{w} images of {self.data.info.name}: "
                    f"{detail}"
                ) from None


def run_addons(cfg: Mapping[str, Any]) -> list[AddOn]:
    """The enabled add-ons, checked against the method's capabilities (not set up yet)."""
    return build_addons(cfg.get("regularizer"), method_class(cfg["method"]))


def distillation_augment(cfg: Mapping[str, Any]) -> DSA | None:
    """The Siamese DSA of matching, when the method asks for it (`method.dsa`)."""
    return DSA.from_config(cfg["dsa"]) if cfg["method"].get("dsa") else None


def evaluation_augment(cfg: Mapping[str, Any], eval_cfg: Mapping[str, Any] | None = None) -> Any:
    """Per-sample DSA of evaluation (`eval.dsa`; `eval.always_flip` forces FYI's flip-first;
    `eval.dsa_strategy`, when set, replaces the run's strategy: IDC drops cutout for CutMix;
    `eval.dsa_mode`, when set, the run's `dsa.mode`: IDC's composition is mode IDC), or
    DC's reference augmentation per dataset and model (`eval.augment: dc`), or none."""
    eval_cfg = cfg["eval"] if eval_cfg is None else eval_cfg
    augment = eval_cfg.get("augment", "dsa")
    if augment == "dc":
        return DCEvaluationAugment(str(cfg["dataset"]["name"]))
    if augment not in ("dsa", "dc", "none", None):
        raise ConfigError(f"eval.augment must be dsa, dc or none, got {augment!r}")
    if augment == "none" or not eval_cfg.get("dsa"):
        return None
    dsa_cfg = dict(cfg["dsa"])
    if eval_cfg.get("dsa_strategy"):
        dsa_cfg["strategy"] = eval_cfg["dsa_strategy"]
    if eval_cfg.get("dsa_mode"):
        dsa_cfg["mode"] = eval_cfg["dsa_mode"]
    return DSA.from_config(dsa_cfg, always_flip=bool(eval_cfg.get("always_flip", False)))


def build_distillation(
    cfg: Mapping[str, Any], bench: Bench, addons: list[AddOn]
) -> tuple[SyntheticSet, Method]:
    """The synthetic set (initialised from the bench's `init` stream, add-on transforms on its
    one door to networks) and the method the config names, built on it."""
    synthetic = SyntheticSet.initialise(
        bench.data,
        cfg["ipc"],
        cfg["synthetic"]["init"],
        bench.generators["init"],
        factor=synthetic_factor(cfg),
    )
    synthetic.use_addons(addons)
    method_cfg = cfg["method"]
    context = MethodContext(
        cfg=method_cfg,
        data=bench.data,
        synthetic=synthetic,
        networks=bench.networks,
        augment=distillation_augment(cfg),
        generators=bench.generators,
        addons=addons,
        runtime=bench.runtime if bench.runtime is not None else cfg.get("runtime"),
    )
    return synthetic, method_class(method_cfg)(context)


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
    dataset_cfg = dict(cfg["dataset"])
    if saved.get("zca") is not None:
        dataset_cfg["zca_state"] = saved["zca"]
    if data_root:
        dataset_cfg["root"] = data_root
    return SavedSet(synthetic, saved, dict(cfg), load_from_config(dataset_cfg, device))
