"""LeNet-5 style network used in the cross-architecture pool."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .base import DistillNet, Size, as_size, check_size, conv_size, is_mnist_like, pool_size


class LeNet(DistillNet):
    """Two conv5x5 -> ReLU -> max-pool blocks, fc 120 -> fc 84 -> classifier.

    1-channel 28x28 input pads the first conv by 2 (as the papers do). Inputs smaller than 28
    (e.g. 16x16) pad both convs by 2 so the maps do not collapse.
    """

    def __init__(self, channels: int, num_classes: int, image_size: int | Size) -> None:
        super().__init__()
        image_size = as_size(image_size)
        small = min(image_size) < 28
        pad1 = 2 if small or is_mnist_like(channels, image_size) else 0
        pad2 = 2 if small else 0
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, 5, padding=pad1),
            nn.ReLU(),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(6, 16, 5, padding=pad2),
            nn.ReLU(),
            nn.MaxPool2d(2, 2),
        )
        size = pool_size(conv_size(pool_size(conv_size(image_size, 5, pad1)), 5, pad2))
        self.map_size: Size = check_size(size, "LeNet", image_size)
        self.fc_1 = nn.Linear(16 * size[0] * size[1], 120)
        self.fc_2 = nn.Linear(120, 84)
        self.classifier = nn.Linear(84, num_classes)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.fc_1(self.features(x).flatten(1)))
        return F.relu(self.fc_2(out))
