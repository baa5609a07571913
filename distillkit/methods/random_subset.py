"""The baseline: a random real subset of IPC images per class, no optimisation."""

from __future__ import annotations

from torch import Tensor

from distillkit.methods.base import Method


class RandomSubset(Method):
    """Nothing to learn: the synthetic set is its real-image initialisation."""

    name = "random"
    optimises = False
    #: Nothing to split: every rank holds the same initialisation; evaluation is spread.
    distributed_split = "replicated"

    def step(self, iteration: int) -> dict[str, Tensor]:
        return {}
