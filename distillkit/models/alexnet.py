"""AlexNet as used for cross-architecture evaluation in dataset distillation (CIFAR-sized)."""

from __future__ import annotations

import torch
from torch import nn

from .base import (
    DistillNet,
    Size,
    as_size,
    check_size,
    conv_size,
    is_mnist_like,
    make_norm,
    pool_size,
)

# (out_channels, kernel, padding, pool_after); the first padding is chosen per input.
_LAYERS = (
    (128, 5, None, True),
    (192, 5, 2, True),
    (256, 3, 1, False),
    (192, 3, 1, False),
    (192, 3, 1, True),
)


class AlexNet(DistillNet):
    """Five convs (ReLU, three 2x2 max-pools) and one linear layer; ``norm`` goes after each conv.

    The papers' AlexNet has no norm; AlexNetBN adds BatchNorm2d after every conv.
    """

    def __init__(
        self, channels: int, num_classes: int, image_size: int | Size, *, norm: str = "none"
    ) -> None:
        super().__init__()
        image_size = as_size(image_size)
        size = image_size
        layers: list[nn.Module] = []
        in_ch = channels
        for out_ch, kernel, padding, pool in _LAYERS:
            if padding is None:
                padding = 4 if is_mnist_like(channels, image_size) else 2
            layers += [nn.Conv2d(in_ch, out_ch, kernel, padding=padding), make_norm(norm, out_ch)]
            layers.append(nn.ReLU())
            size = conv_size(size, kernel, padding)
            if pool:
                layers.append(nn.MaxPool2d(2, 2))
                size = pool_size(size)
            check_size(size, "AlexNet", image_size)
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.map_size: Size = size
        self.classifier = nn.Linear(in_ch * size[0] * size[1], num_classes)

    flat_features = True

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)
