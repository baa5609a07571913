"""Fresh, seeded networks for a dataset: the one way methods and evaluation get a model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from distillkit.errors import ConfigError
from distillkit.models import build_model
from distillkit.seeding import seeded_global_rng


@dataclass
class NetworkFactory:
    """Builds `name` for the dataset's shape; initial weights come from the given generator."""

    name: str
    channels: int
    num_classes: int
    image_size: tuple[int, int]
    options: Mapping[str, Any] = field(default_factory=dict)
    device: torch.device | str = "cpu"

    def __call__(self, generator: torch.Generator) -> nn.Module:
        with seeded_global_rng(generator):
            net = build_model(
                self.name, self.channels, self.num_classes, tuple(self.image_size), **self.options
            )
        return net.to(self.device)

    def frozen(self, generator: torch.Generator) -> nn.Module:
        """A fresh network whose weights take no gradient (for matching)."""
        net = self(generator)
        for p in net.parameters():
            p.requires_grad_(False)
        return net

    @classmethod
    def from_config(
        cls, model_cfg: Mapping[str, Any], info: Any, device: torch.device | str
    ) -> NetworkFactory:
        options = {k: v for k, v in dict(model_cfg).items() if k != "name" and v is not None}
        return cls(
            model_cfg["name"],
            info.channels,
            info.num_classes,
            tuple(info.image_size),
            options,
            device,
        )

    def for_architecture(self, name: str) -> NetworkFactory:
        """The same dataset shape with another architecture (its default options)."""
        if name.lower() == self.name.lower():
            return self
        return NetworkFactory(
            name, self.channels, self.num_classes, self.image_size, {}, self.device
        )

    def check_architectures(self, names: list[str], dataset: str) -> None:
        """Build each architecture once on the dataset's image size.

        A network that cannot take the images (too small for its pooling, options it does not
        accept) otherwise fails deep inside distillation or after it, at evaluation.
        """
        c, (h, w) = self.channels, self.image_size
        scratch = torch.Generator().manual_seed(0)
        for name in dict.fromkeys(names):
            try:
                net = self.for_architecture(name)(scratch).eval()
                with torch.no_grad():
                    net(torch.zeros((2, c, h, w), device=self.device))
            except (ValueError, RuntimeError, TypeError) as exc:
                detail = " ".join(str(exc).split())[:200]
                raise ConfigError(
                    f"model {name} cannot take the {c}x{h}x{w} images of {dataset}: {detail}"
                ) from None
