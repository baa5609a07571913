"""Shared base class and layer factories for every distillation network.

Methods only rely on ``DistillNet``: logits from ``forward``, features from ``embed`` (what DM/IDM
match) and ``feature_map``, and the final ``classifier`` layer.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Iterable
from typing import ClassVar

import torch
from torch import nn

from distillkit.errors import ConfigError

Size = tuple[int, int]

NORMS = ("instancenorm", "batchnorm", "layernorm", "groupnorm", "none")
ACTS = ("relu", "sigmoid", "leakyrelu", "swish", "silu", "gelu")
POOLS = ("avgpool", "maxpool", "none")


class DistillNet(nn.Module, metaclass=ABCMeta):
    """A classifier split into features and a final linear layer.

    Subclasses compute the features once in ``embed``; ``forward`` only adds the classifier, so a
    forward pass does no double work.
    """

    classifier: nn.Linear
    #: True when the logits are classifier(features(x).flatten(1)) with `features` a sequence
    #: of per-channel layers: such a network has a channel-grouped (stacked) form.
    flat_features: ClassVar[bool] = False

    @abstractmethod
    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Last block's map (N, C, h, w), before flattening or pooling."""

    @abstractmethod
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Flat features (N, D) that the classifier consumes."""

    def embed_from_map(self, fmap: torch.Tensor) -> torch.Tensor | None:
        """``embed`` computed from ``feature_map``'s output, so one pass gives both (IID's
        covariance matching needs the map, DM the embedding); None when ``embed`` is not a
        function of the map and needs its own pass."""
        return fmap.flatten(1) if self.flat_features else None

    @property
    def embed_dim(self) -> int:
        """D, the width of ``embed``'s output."""
        return self.classifier.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


def check_choice(kind: str, value: str, allowed: Iterable[str]) -> str:
    """Lower-case ``value`` and reject anything outside ``allowed`` with a helpful message."""
    allowed = tuple(allowed)
    key = str(value).lower()
    if key not in allowed:
        raise ConfigError(f"unknown {kind} {value!r}; allowed: {', '.join(allowed)}")
    return key


def make_norm(kind: str, channels: int) -> nn.Module:
    """Normalisation layer by the field's names ("instancenorm" is GroupNorm(C, C), affine)."""
    kind = check_choice("norm", kind, NORMS)
    if kind == "instancenorm":
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "batchnorm":
        return nn.BatchNorm2d(channels)
    if kind == "layernorm":
        return nn.GroupNorm(1, channels, affine=True)
    if kind == "groupnorm":
        return nn.GroupNorm(4, channels, affine=True)
    return nn.Identity()


def make_act(kind: str) -> nn.Module:
    """Activation by name; swish and silu are the same function."""
    kind = check_choice("act", kind, ACTS)
    if kind == "relu":
        return nn.ReLU()
    if kind == "sigmoid":
        return nn.Sigmoid()
    if kind == "leakyrelu":
        return nn.LeakyReLU(0.01)
    if kind in ("swish", "silu"):
        return nn.SiLU()
    return nn.GELU()


def make_pool(kind: str) -> nn.Module:
    """2x2 stride-2 pooling, or identity for "none"."""
    kind = check_choice("pool", kind, POOLS)
    if kind == "avgpool":
        return nn.AvgPool2d(2, 2)
    if kind == "maxpool":
        return nn.MaxPool2d(2, 2)
    return nn.Identity()


def as_size(image_size: int | Iterable[int]) -> Size:
    """Accept ``32`` or ``(32, 32)``; networks work with an (h, w) pair."""
    if isinstance(image_size, int):
        return (image_size, image_size)
    h, w = (int(s) for s in image_size)
    return (h, w)


def conv_size(size: Size, kernel: int, padding: int, stride: int = 1) -> Size:
    """Output side of a convolution, by arithmetic (no dummy forward, so no BN stat updates)."""
    return tuple((s + 2 * padding - kernel) // stride + 1 for s in size)  # type: ignore[return-value]


def pool_size(size: Size) -> Size:
    """Output side of a 2x2 stride-2 pool (floor, as PyTorch does)."""
    return (size[0] // 2, size[1] // 2)


def check_size(size: Size, model: str, image_size: Size) -> Size:
    """Fail early and clearly when an input is too small for the architecture."""
    if min(size) < 1:
        raise ConfigError(f"{model}: image size {image_size} is too small for this architecture")
    return size


def is_mnist_like(channels: int, image_size: Size) -> bool:
    """1-channel 28x28 input: the papers pad the first conv so it behaves like 32x32."""
    return channels == 1 and tuple(image_size) == (28, 28)
