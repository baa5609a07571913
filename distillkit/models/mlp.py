"""Two-hidden-layer MLP, the weakest member of the cross-architecture pool."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .base import DistillNet, Size, as_size


class MLP(DistillNet):
    """flatten -> 128 -> ReLU -> 128 -> ReLU -> classifier; the map view is (N, 128, 1, 1)."""

    def __init__(self, channels: int, num_classes: int, image_size: int | Size) -> None:
        super().__init__()
        h, w = as_size(image_size)
        self.fc_1 = nn.Linear(channels * h * w, 128)
        self.fc_2 = nn.Linear(128, 128)
        self.classifier = nn.Linear(128, num_classes)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)[:, :, None, None]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc_2(F.relu(self.fc_1(x.flatten(1)))))
