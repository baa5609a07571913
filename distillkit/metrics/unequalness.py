"""The unequalness score of FYI: how far a set is from its own horizontal flip.

U(X) = D(X, flip(X)) per class, with D the base method's matching distance (DM: mean-embedding
distance; DC: per-output-unit gradient cosine distance; DSA: DC after one shared Siamese DSA
draw), under randomly initialised networks, averaged over classes and networks. A left-right
symmetric set and a flip-closed set both score 0 (exactly for dm; for dc/dsa up to the floor
the published cosine's 1e-6 stabiliser leaves, about 1e-4 for a ConvNet); large real sets of
natural images score near 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from kornia.geometry.transform import hflip
from torch import Tensor, nn

from distillkit.augment import DSA
from distillkit.classwise import class_means
from distillkit.errors import ConfigError
from distillkit.memory import auto_budget, row_slices
from distillkit.networks import NetworkFactory

DISTANCES = ("dm", "dc", "dsa")


def _embed(net: nn.Module, x: Tensor, budget: int) -> Tensor:
    """net.embed(x) under no_grad in row chunks under `budget` bytes (the same rows as one pass)."""
    with torch.no_grad():
        parts = [net.embed(x[rows]) for rows in row_slices(net, x, budget)]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _dm_distance(
    net: nn.Module, x: Tensor, x_flip: Tensor, y: Tensor, k: int, budget: int = 0
) -> Tensor:
    """Per-class || mean embed(X_c) - mean embed(flip X_c) ||^2, shape (K,)."""
    means = class_means(_embed(net, x, budget), y, k) - class_means(
        _embed(net, x_flip, budget), y, k
    )
    return means.pow(2).sum(1)


def _class_gradients(net: nn.Module, x: Tensor, c: int) -> list[Tensor]:
    params = [p for p in net.parameters() if p.requires_grad]
    target = torch.full((x.shape[0],), c, dtype=torch.long, device=x.device)
    loss = F.cross_entropy(net(x), target)
    return list(torch.autograd.grad(loss, params))


def _dc_distance(net: nn.Module, x: Tensor, x_flip: Tensor, y: Tensor, k: int) -> Tensor:
    """Per-class gradient-matching distance between X_c and flip(X_c), shape (K,)."""
    from distillkit.methods.gradient_matching import gradient_distance

    out = torch.zeros(k, device=x.device)
    for c in range(k):
        rows = y == c
        if rows.any():
            g = _class_gradients(net, x[rows], c)
            g_flip = _class_gradients(net, x_flip[rows], c)
            out[c] = gradient_distance(g, g_flip).detach()
    return out


def _has_batch_norm(net: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


def unequalness(
    images: Tensor,
    labels: Tensor,
    num_classes: int,
    networks: NetworkFactory,
    generator: torch.Generator,
    distances: Sequence[str] = DISTANCES,
    num_nets: int = 3,
    augment: DSA | None = None,
    memory_budget: int | None = None,
) -> dict[str, float]:
    """U(X) for each distance, averaged over classes present and `num_nets` fresh networks.

    `augment` is the DSA used for the `dsa` distance (one Siamese draw per class and network,
    applied identically to X_c and flip(X_c)); required when `dsa` is asked for. The `dm`
    distance embeds in row chunks under `memory_budget` bytes (None: the device's automatic
    budget, distillkit/memory.py; 0: one pass); the dc/dsa distances go one class at a time.
    """
    unknown = set(distances) - set(DISTANCES)
    if unknown:
        raise ConfigError(f"unknown unequalness distance(s) {sorted(unknown)}; use {DISTANCES}")
    if "dsa" in distances and (augment is None or not augment.enabled):
        raise ConfigError("the 'dsa' unequalness distance needs an enabled DSA augmentation")
    images, labels = images.detach(), labels.detach()
    budget = auto_budget(images.device) if memory_budget is None else memory_budget
    flipped = hflip(images)
    present = torch.bincount(labels, minlength=num_classes) > 0
    totals = {d: torch.zeros((), device=images.device) for d in distances}
    for _ in range(num_nets):
        net = networks(generator)
        # Batch norm in training mode cannot take one image per class (IPC 1) and would mix the
        # statistics of X_c and flip(X_c); a fresh BN net in eval mode is the same net with its
        # initial (identity) statistics, defined for any class size.
        net.train(not _has_batch_norm(net))
        for name in distances:
            if name == "dm":
                per_class = _dm_distance(net, images, flipped, labels, num_classes, budget)
            elif name == "dc":
                per_class = _dc_distance(net, images, flipped, labels, num_classes)
            else:
                params = augment.sample(
                    num_classes, generator, tuple(images.shape[-2:]), images.device
                )
                per_class = _dc_distance(
                    net,
                    augment.apply(images, params, labels),
                    augment.apply(flipped, params, labels),
                    labels,
                    num_classes,
                )
            totals[name] += per_class[present].mean()
    return {name: float(total) / num_nets for name, total in totals.items()}
