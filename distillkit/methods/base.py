"""The common interface every distillation method implements."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from distillkit.augment import DSA
from distillkit.networks import NetworkFactory
from distillkit.seeding import RunGenerators
from distillkit.synthetic import SyntheticSet


@dataclass
class MethodContext:
    """Everything a method is built from."""

    cfg: Mapping[str, Any]
    data: Any
    synthetic: SyntheticSet
    networks: NetworkFactory
    augment: DSA | None
    generators: RunGenerators
    regularizers: list[Any] = field(default_factory=list)


class Method:
    """A distillation method: `step()` updates the synthetic set once and returns its losses.

    Losses come back as tensors (no host sync per step); the trainer reads them when it logs.
    """

    name: ClassVar[str] = "base"
    #: False for baselines that learn nothing (the trainer then runs no iterations).
    optimises: ClassVar[bool] = True

    def __init__(self, ctx: MethodContext) -> None:
        self.ctx = ctx
        self.cfg = ctx.cfg
        self.data = ctx.data
        self.synthetic = ctx.synthetic
        self.generator = ctx.generators[f"method/{self.name}"]

    def step(self, iteration: int) -> dict[str, Tensor]:
        raise NotImplementedError

    @property
    def eval_lr(self) -> float | None:
        """Learning rate evaluation should use (None: the protocol's default)."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state

    @property
    def synthetic_batch_multiplier(self) -> int:
        """How many rows reach the network per stored row sampled (FYI doubles)."""
        multiplier = 1
        for regularizer in self.ctx.regularizers:
            if regularizer.has_transform:
                multiplier *= regularizer.batch_multiplier
        return multiplier

    def real_view(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """A real batch as it should reach a network: add-ons' real transforms applied."""
        for regularizer in self.ctx.regularizers:
            if regularizer.has_real_transform:
                x, y = regularizer.transform_real(x, y)
        return x, y

    def siamese_augment(
        self, real: Tensor, real_groups: Tensor, syn: Tensor, syn_groups: Tensor, n_groups: int
    ) -> tuple[Tensor, Tensor]:
        """One DSA draw per group, applied identically to real and synthetic rows of the group."""
        augment = self.ctx.augment
        if augment is None or not augment.enabled:
            return real, syn
        params = augment.sample(n_groups, self.generator, tuple(real.shape[-2:]), real.device)
        return augment.apply(real, params, real_groups), augment.apply(syn, params, syn_groups)


def class_means(features: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Per-class mean feature vectors (K, D) in one scatter, for any row order or class sizes."""
    sums = features.new_zeros((num_classes, features.shape[1])).index_add_(0, labels, features)
    counts = torch.bincount(labels, minlength=num_classes).clamp_min(1).to(features.dtype)
    return sums / counts[:, None]
