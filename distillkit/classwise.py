"""Per-class reductions shared by methods, add-ons and measures."""

from __future__ import annotations

import torch
from torch import Tensor


def class_means(features: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Per-class mean feature vectors (K, D) in one scatter, for any row order or class sizes."""
    sums = features.new_zeros((num_classes, features.shape[1])).index_add_(0, labels, features)
    counts = torch.bincount(labels, minlength=num_classes).clamp_min(1).to(features.dtype)
    return sums / counts[:, None]
