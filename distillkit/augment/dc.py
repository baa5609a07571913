"""DC's evaluation augmentation: the reference's non-differentiable per-image operations.

DC (Zhao, Mopuri & Bilen, ICLR 2021) evaluates without DSA. Its `get_daparam` (VICO-UoE/
DatasetCondensation utils.py) picks, per dataset and evaluation model, a strategy of simple
operations, one drawn per image (`augment`): MNIST `crop_scale_rotate`, ConvNetBN `crop_noise`,
everything else `none` (and 300 instead of 1000 evaluation epochs). Parameters as there: crop 4
pixels (padding with the batch's channel means), scale 0.2 (nearest resize, centred), rotate
+-45 degrees (scipy spline rotation, filled with the mean of the channel means), noise 0.001.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillkit.errors import ConfigError

OPERATIONS = ("crop", "scale", "rotate", "noise")


def reference_strategy(dataset: str, network: nn.Module | None = None) -> str:
    """DC's `get_daparam`: MNIST crop/scale/rotate; a batch-norm ConvNet crop/noise; else none."""
    strategy = "crop_scale_rotate" if dataset == "mnist" else "none"
    if network is not None and _is_convnet_bn(network):
        strategy = "crop_noise"
    return strategy


def _is_convnet_bn(network: nn.Module) -> bool:
    """The reference's 'ConvNetBN' (only that model: AlexNetBN etc. keep the dataset's choice)."""
    is_convnet = type(network).__name__ == "ConvNet"
    return is_convnet and any(isinstance(m, nn.BatchNorm2d) for m in network.modules())


class DCAugment:
    """One randomly chosen operation of `strategy` per image, drawn from the run's generator."""

    def __init__(
        self,
        strategy: str = "none",
        crop: int = 4,
        scale: float = 0.2,
        rotate: int = 45,
        noise: float = 0.001,
    ) -> None:
        names = () if strategy in ("", "none") else tuple(strategy.split("_"))
        unknown = [n for n in names if n not in OPERATIONS]
        if unknown:
            raise ConfigError(
                f"unknown DC augmentation {unknown} in {strategy!r}; known {OPERATIONS}"
            )
        self.strategy, self.operations = strategy, names
        self.crop, self.scale, self.rotate, self.noise = int(crop), float(scale), int(rotate), noise

    @property
    def enabled(self) -> bool:
        return bool(self.operations)

    def __repr__(self) -> str:
        return f"DCAugment({self.strategy!r})"

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        if not self.enabled or x.shape[0] == 0:
            return x
        x = x.clone()
        means = [float(m) for m in x.mean(dim=(0, 2, 3))]
        for i in range(x.shape[0]):
            op = self.operations[_randint(len(self.operations), generator)]
            x[i] = getattr(self, f"_{op}")(x[i], means, generator)
        return x

    def _crop(self, image: Tensor, means: list[float], g: torch.Generator) -> Tensor:
        c, h, w = image.shape
        pad = torch.tensor(means, dtype=image.dtype, device=image.device).view(c, 1, 1)
        canvas = pad.expand(c, h + 2 * self.crop, w + 2 * self.crop).clone()
        canvas[:, self.crop : self.crop + h, self.crop : self.crop + w] = image
        r, s = _randint(2 * self.crop, g), _randint(2 * self.crop, g)
        return canvas[:, r : r + h, s : s + w]

    def _scale(self, image: Tensor, means: list[float], g: torch.Generator) -> Tensor:
        del means
        c, h, w = image.shape
        # The reference sizes both sides from the height: int(U(1 - s, 1 + s) * H).
        nh = int((1 - self.scale + 2 * self.scale * _uniform(g)) * h)
        nw = int((1 - self.scale + 2 * self.scale * _uniform(g)) * h)
        resized = F.interpolate(image[None], [nh, nw])[0]
        side = max(nh, nw, h, w)
        canvas = image.new_zeros((c, side, side))
        r, s = (side - nh) // 2, (side - nw) // 2
        canvas[:, r : r + nh, s : s + nw] = resized
        r, s = (side - h) // 2, (side - w) // 2
        return canvas[:, r : r + h, s : s + w]

    def _rotate(self, image: Tensor, means: list[float], g: torch.Generator) -> Tensor:
        from scipy.ndimage import rotate

        angle = _randint(2 * self.rotate, g) - self.rotate  # numpy randint(-45, 45)
        out = rotate(image.cpu().numpy(), angle=angle, axes=(-2, -1), cval=float(np.mean(means)))
        r, s = (out.shape[-2] - image.shape[-2]) // 2, (out.shape[-1] - image.shape[-1]) // 2
        out = out[:, r : r + image.shape[-2], s : s + image.shape[-1]]
        return torch.as_tensor(np.ascontiguousarray(out), dtype=image.dtype, device=image.device)

    def _noise(self, image: Tensor, means: list[float], g: torch.Generator) -> Tensor:
        del means
        draw = torch.randn(image.shape, generator=g, device=g.device)
        return image + self.noise * draw.to(image.device, image.dtype)


class DCEvaluationAugment:
    """DC's evaluation per dataset and model (`eval.augment: dc`): `for_network` picks
    `reference_strategy` for each evaluation architecture."""

    enabled = True

    def __init__(self, dataset: str, **params: Any) -> None:
        self.dataset, self.params = dataset, params

    def for_network(self, network: nn.Module) -> DCAugment:
        return DCAugment(reference_strategy(self.dataset, network), **self.params)

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return self.for_network(nn.Identity())(x, generator)


def _randint(high: int, g: torch.Generator) -> int:
    return int(torch.randint(high, (1,), generator=g, device=g.device).item())


def _uniform(g: torch.Generator) -> float:
    return float(torch.rand(1, generator=g, device=g.device).item())
