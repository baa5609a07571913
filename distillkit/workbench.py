"""What every program works on: the device, the real data, the network factory, the named
random streams and the runtime, from a run's `device`, `dataset`, `model`, `seed` and `runtime`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from distillkit.data import RealData, load_from_config
from distillkit.networks import NetworkFactory
from distillkit.runtime import Runtime, resolve_device
from distillkit.seeding import RunGenerators


@dataclass
class Workbench:
    """What a run works on: the device, the real data, its networks and its random streams."""

    device: torch.device
    data: RealData
    networks: NetworkFactory
    generators: RunGenerators
    #: The run's speed switches, built once here and handed to the method.
    runtime: Runtime | None = None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], data: RealData | None = None) -> Workbench:
        """From the `device`, `dataset`, `model` and `seed` entries (`data`: already loaded)."""
        device = resolve_device(str(cfg.get("device", "auto")))
        if data is None:
            data = load_from_config(cfg["dataset"], device)
        networks = NetworkFactory.from_config(cfg["model"], data.info, device)
        runtime = Runtime.from_config(cfg.get("runtime"), device)
        return cls(device, data, networks, RunGenerators(int(cfg.get("seed", 0))), runtime)
