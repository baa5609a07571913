"""VGG11 as used for cross-architecture evaluation in dataset distillation."""

from __future__ import annotations

import torch
from torch import nn

from .base import DistillNet, Size, as_size, conv_size, is_mnist_like, make_norm, pool_size

VGG11_CFG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG11(DistillNet):
    """Conv3x3 -> norm -> ReLU stacks with max-pools; instance norm by default (VGG11BN: batchnorm).

    A max-pool is skipped once the map side is 1, so small inputs (16x16) still work.
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        image_size: int | Size,
        *,
        norm: str = "instancenorm",
    ) -> None:
        super().__init__()
        image_size = as_size(image_size)
        size = image_size
        layers: list[nn.Module] = []
        in_ch = channels
        for i, item in enumerate(VGG11_CFG):
            if item == "M":
                if min(size) >= 2:
                    layers.append(nn.MaxPool2d(2, 2))
                    size = pool_size(size)
                continue
            out_ch = int(item)
            padding = 3 if i == 0 and is_mnist_like(channels, image_size) else 1
            layers += [nn.Conv2d(in_ch, out_ch, 3, padding=padding), make_norm(norm, out_ch)]
            layers.append(nn.ReLU())
            size = conv_size(size, 3, padding)
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.map_size: Size = size
        self.classifier = nn.Linear(in_ch * size[0] * size[1], num_classes)

    flat_features = True

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)
