"""IID class centralisation (CC): pull each class's synthetic images toward their class centre.

Matching only the mean embedding lets a class's synthetic images spread out; CC adds
L_CC^c = sum_i ||psi(s_i) - mean_k psi(s_k)||^2 over the Siamese-augmented synthetic images of
class c (a sum over samples), with psi the 512-d embedding of a pre-trained, frozen instance-norm
ResNet-18 drawn from a pool (`distillkit-pretrain`) once per iteration. `form: exp` gives the
paper's sum_i max(exp(tau * d_i) - beta, 0) instead (beta defaults to 1, so a centred image costs
0 in either form). A class with one synthetic row is its own centre: the term is 0.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from distillkit.addons.base import AddOn, LossContext, SetupContext
from distillkit.classwise import class_means
from distillkit.errors import ConfigError
from distillkit.pool import (
    PoolNotFoundError,
    PretrainedPool,
    UnpublishedPoolWarning,
    pretrain_command,
    published_shortfall,
)
from distillkit.settings import Settings

FORMS = ("linear", "exp")


def class_centralisation(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    form: str = "linear",
    tau: float = 0.02,
    beta: float | None = None,
) -> Tensor:
    """sum over classes with >= 2 rows of sum_i f(||x_i - mean_c||^2), all classes at once."""
    means = class_means(features, labels, num_classes)
    distances = (features - means[labels]).pow(2).sum(1)
    if form == "exp":
        values = (torch.exp(tau * distances) - (1.0 if beta is None else beta)).clamp_min(0)
    else:
        values = (distances - (0.0 if beta is None else beta)).clamp_min(0)
    counts = torch.bincount(labels, minlength=num_classes)
    return (values * (counts[labels] >= 2).to(values.dtype)).sum()


@dataclass(frozen=True)
class CCSettings(Settings):
    #: A number, or {base method: number} (conf/regularizer/cc.yaml has the published ones).
    weight: Any = 1.0
    #: The pool directory written by distillkit-pretrain.
    pool: str | None = None
    form: str = "linear"
    tau: float = 0.02
    beta: float | None = None

    def check(self) -> None:
        if self.form not in FORMS:
            raise ConfigError(f"regularizer cc: form must be one of {FORMS}, got {self.form!r}")


class ClassCentralisation(AddOn):
    name: ClassVar[str] = "cc"
    has_loss: ClassVar[bool] = True

    Settings = CCSettings

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__(cfg)
        self.form, self.tau, self.beta = self.settings.form, self.settings.tau, self.settings.beta
        self.pool: PretrainedPool | None = None
        self.generator: torch.Generator | None = None
        self.device: torch.device | str = "cpu"
        self._iteration: int | None = None
        self._net: nn.Module | None = None

    def setup(self, method: str | Sequence[str], ctx: SetupContext) -> None:
        """Open the pool once (checked against the run's dataset) and take a generator stream."""
        super().setup(method, ctx)
        path = self.settings.pool
        if not path:
            raise PoolNotFoundError(
                "regularizer cc needs a pre-trained pool: set regularizer.cc.pool, built with "
                f"`{pretrain_command(ctx.info, 'pools/' + str(ctx.info.name) + '/ResNet18')}`"
            )
        self.pool = PretrainedPool.open(path, ctx.info)
        shortfall = published_shortfall(self.pool.facts())
        if shortfall:
            warnings.warn(
                f"regularizer cc: the pool {path} is not the published one ({shortfall}); "
                "its numbers are not comparable with the paper's",
                UnpublishedPoolWarning,
                stacklevel=2,
            )
        self.device = ctx.device
        if ctx.generators is not None:
            self.generator = ctx.generators["regularizer/cc"]
        self._iteration = None

    def member(self, ctx: LossContext) -> nn.Module:
        """The pool network of this iteration: one draw per iteration, kept across IDM classes."""
        if self.pool is None:
            raise RuntimeError("regularizer cc was not set up (no pool loaded)")
        if self._net is None or ctx.iteration != self._iteration:
            generator = self.generator if self.generator is not None else ctx.generator
            _, self._net = self.pool.sample(generator, self.device)
            self._iteration = ctx.iteration
        return self._net

    def loss(self, ctx: LossContext) -> Tensor:
        features = self.member(ctx).embed(ctx.syn)
        return class_centralisation(
            features, ctx.syn_labels, ctx.num_classes, self.form, self.tau, self.beta
        )

    def vanishes(self, rows_per_class: int) -> bool:
        return rows_per_class < 2

    def record(self) -> dict[str, Any] | None:
        """results.json: the pool this run sampled from (size, epochs, model, width)."""
        return None if self.pool is None else {"pool": self.pool.describe()}
