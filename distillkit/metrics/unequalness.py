"""The unequalness score of FYI: how far a set is from its own horizontal flip.

U(X) = D(X, flip(X)) per class, with D the base method's matching distance (DM: mean-embedding
distance; DC: per-output-unit gradient cosine distance; DSA: DC after one shared Siamese DSA
draw), under randomly initialised networks, averaged over classes and networks. D is the
method's own `pair_distance` (the code its matching step runs), and a distance is named by its
method: any method that defines one is a distance, without a list here. A left-right
symmetric set and a flip-closed set both score 0 (exactly for dm; for dc/dsa up to the floor
the published cosine's 1e-6 stabiliser leaves, about 1e-4 for a ConvNet); large real sets of
natural images score near 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from kornia.geometry.transform import hflip
from torch import Tensor, nn

from distillkit.augment import DSA
from distillkit.errors import ConfigError
from distillkit.memory import auto_budget
from distillkit.methods.base import Method
from distillkit.networks import NetworkFactory


def has_distance(method: type[Method]) -> bool:
    """Whether the method defines a matching distance (overrides `Method.pair_distance`)."""
    return method.pair_distance.__func__ is not Method.pair_distance.__func__


def distance_methods() -> dict[str, type[Method]]:
    """Every method with a matching distance, by name: the distances U can use (the shipped
    ones and any other Method subclass that defines `pair_distance`)."""
    from distillkit.methods.registry import known_methods

    return {name: cls for name, cls in known_methods().items() if has_distance(cls)}


def distance_names() -> tuple[str, ...]:
    """The accepted names of `unequalness.distances`."""
    return tuple(distance_methods())


def resolve_distances(names: Sequence[str]) -> dict[str, type[Method]]:
    """{name: its method class} for each distance asked for; a name that is no method or one
    without a matching distance is a ConfigError naming the valid ones."""
    methods = distance_methods()
    unknown = sorted(set(map(str, names)) - set(methods))
    if unknown:
        raise ConfigError(
            f"unknown unequalness distance(s) {unknown}: a distance is a method with a matching "
            f"distance; use {', '.join(methods)}"
        )
    return {str(name): methods[str(name)] for name in names}


def __getattr__(name: str) -> Any:
    # DISTANCES, as this module had it: now derived from the methods (distance_names()).
    if name == "DISTANCES":
        return distance_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _has_batch_norm(net: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


def unequalness(
    images: Tensor,
    labels: Tensor,
    num_classes: int,
    networks: NetworkFactory,
    generator: torch.Generator,
    distances: Sequence[str],
    num_nets: int = 3,
    augment: DSA | None = None,
    memory_budget: int | None = None,
) -> dict[str, float]:
    """U(X) for each distance, averaged over classes present and `num_nets` fresh networks.

    A distance is named by its method (`dm`, `dc`, `dsa`, or any method with a matching
    distance) and is that method's `pair_distance` between X and flip(X). `augment` is the DSA
    of the distances whose method matches under one (`requires_augment`: `dsa`, one Siamese draw
    per class and network from `generator`, applied identically to X_c and flip(X_c)); required
    when one is asked for. `memory_budget`: bytes per network pass of the distances that chunk
    rows (`dm`; None: the device's automatic budget, distillkit/memory.py; 0: one pass).
    """
    methods = resolve_distances(distances)
    for name, method in methods.items():
        if method.requires_augment and (augment is None or not augment.enabled):
            raise ConfigError(
                f"the {name!r} unequalness distance needs an enabled DSA augmentation"
            )
    images, labels = images.detach(), labels.detach()
    budget = auto_budget(images.device) if memory_budget is None else memory_budget
    flipped = hflip(images)
    present = torch.bincount(labels, minlength=num_classes) > 0
    totals = {d: torch.zeros((), device=images.device) for d in methods}
    for _ in range(num_nets):
        net = networks(generator)
        # Batch norm in training mode cannot take one image per class (IPC 1) and would mix the
        # statistics of X_c and flip(X_c); a fresh BN net in eval mode is the same net with its
        # initial (identity) statistics, defined for any class size.
        net.train(not _has_batch_norm(net))
        for name in distances:
            per_class = methods[str(name)].pair_distance(
                net,
                images,
                flipped,
                labels,
                num_classes,
                augment=augment,
                generator=generator,
                budget=budget,
            )
            totals[str(name)] += per_class[present].mean()
    return {name: float(total) / num_nets for name, total in totals.items()}
