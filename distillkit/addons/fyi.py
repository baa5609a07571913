"""FYI, "Flip Your Images": match every synthetic batch together with its horizontal flip.

Real data shows bilateral equivalence (a part seen on the left of some images of a class is seen
on the right of others), which pushes synthetic images toward left-right symmetry. Feeding
[X ; flip(X)] with labels [y ; y] wherever the base method feeds X lets each stored image keep
one orientation. Installed once on `SyntheticSet.batch`, it holds for every method; no second
tensor is stored, and the gradient reaching a stored image is G1 + flip(G2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from kornia.geometry.transform import hflip
from torch import Tensor

from distillkit.addons.base import AddOn
from distillkit.settings import Settings


def with_flips(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """[x ; flip(x)] with labels [y ; y]: FYI's doubled batch (also `distillkit-eval
    --with-flips`, which trains an evaluation model on a set and its mirror images)."""
    return torch.cat([x, hflip(x)]), torch.cat([y, y])


@dataclass(frozen=True)
class FYISettings(Settings):
    #: Also feed real batches as [R ; flip(R)] (explored by the authors; off in the paper's runs).
    flip_real: bool = False


class FlipYourImages(AddOn):
    name: ClassVar[str] = "fyi"
    has_transform: ClassVar[bool] = True
    batch_multiplier: ClassVar[int] = 2
    Settings = FYISettings

    def transform(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return with_flips(x, y)

    @property
    def has_real_transform(self) -> bool:
        """`fyi.flip_real=true`: real batches are doubled the same way (an explored variant)."""
        return self.settings.flip_real

    def transform_real(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return self.transform(x, y)
