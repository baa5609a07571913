"""ConvNet: the default network of dataset distillation (DC/DSA/DM/MTT reference design)."""

from __future__ import annotations

import torch
from torch import nn

from distillkit.errors import ConfigError

from .base import (
    POOLS,
    DistillNet,
    Size,
    as_size,
    check_choice,
    check_size,
    conv_size,
    is_mnist_like,
    make_act,
    make_norm,
    make_pool,
    pool_size,
)


def auto_depth(side: int) -> int:
    """Number of 2x halvings that bring ``side`` down to 4 (32->3, 64->4, 128->5), at least 1."""
    depth = 0
    while side > 4:
        side //= 2
        depth += 1
    return max(depth, 1)


class ConvNet(DistillNet):
    """Blocks of Conv3x3 -> norm -> act -> 2x2 pool, then a linear classifier.

    ``depth=None`` picks the depth that leaves a 4x4 map (power-of-two sides). For 1-channel 28x28
    input the first conv pads by 3, so the network behaves as on 32x32.
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        image_size: int | Size,
        *,
        width: int = 128,
        depth: int | None = None,
        norm: str = "instancenorm",
        act: str = "relu",
        pool: str = "avgpool",
    ) -> None:
        super().__init__()
        image_size = as_size(image_size)
        pool = check_choice("pool", pool, POOLS)
        first_pad = 3 if is_mnist_like(channels, image_size) else 1
        size = conv_size(image_size, 3, first_pad)
        if depth is None:
            depth = auto_depth(min(size))
        if depth < 1:
            raise ConfigError(f"ConvNet depth must be >= 1, got {depth}")

        blocks: list[nn.Module] = []
        in_ch = channels
        for d in range(depth):
            if d > 0:
                size = conv_size(size, 3, 1)
            conv = nn.Conv2d(in_ch, width, kernel_size=3, padding=first_pad if d == 0 else 1)
            blocks.append(
                nn.Sequential(conv, make_norm(norm, width), make_act(act), make_pool(pool))
            )
            if pool != "none":
                size = pool_size(size)
            check_size(size, "ConvNet", image_size)
            in_ch = width
        self.features = nn.Sequential(*blocks)
        self.map_size: Size = size
        self.classifier = nn.Linear(width * size[0] * size[1], num_classes)

    flat_features = True

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)
