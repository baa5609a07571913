"""Methods ask networks what they can do instead of testing their classes: a network says
whether its embedding comes from its feature map (one pass for DM + IID's covariance matching)
and whether its features are channel-groupable (stacked evaluation)."""

from __future__ import annotations

import torch
from torch import nn

from distillkit.evaluation.stacked import _grouped_layers
from distillkit.methods.dm import embed_and_map
from distillkit.models import build_model
from distillkit.models.base import DistillNet


class CountingNet(DistillNet):
    """A network from outside the catalogue: counts its feature passes."""

    def __init__(self, flat: bool) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.classifier = nn.Linear(4 * 8 * 8, 10)
        self.flat = flat
        self.passes = 0

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        self.passes += 1
        return self.features(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).flatten(1)

    def embed_from_map(self, fmap: torch.Tensor) -> torch.Tensor | None:
        return fmap.flatten(1) if self.flat else None


def test_a_network_that_embeds_from_its_map_takes_one_pass():
    x = torch.randn(3, 1, 8, 8)
    for flat, passes in ((True, 1), (False, 2)):
        net = CountingNet(flat)
        embedded, fmap = embed_and_map(net, x, with_map=True)
        assert net.passes == passes
        torch.testing.assert_close(embedded, net.embed(x))
        assert fmap.shape == (3, 4, 8, 8)


def test_catalogue_networks_declare_how_they_embed():
    x = torch.randn(2, 3, 32, 32)
    for name in ("ConvNet", "AlexNet", "VGG11", "ResNet18"):
        net = build_model(name, 3, 10, 32).eval()
        with torch.no_grad():
            fmap = net.feature_map(x)
            torch.testing.assert_close(net.embed_from_map(fmap), net.embed(x))
    assert build_model("ConvNet", 3, 10, 32).flat_features
    assert not build_model("ResNet18", 3, 10, 32).flat_features


def test_stacking_follows_the_declared_capability():
    """The channel-grouped evaluation path is offered to any net declaring flat features whose
    layers all have a grouped form, and to no other."""
    grouped = CountingNet(True)
    assert _grouped_layers(grouped) is None  # not declared: not stacked
    type(grouped).flat_features = True
    try:
        assert _grouped_layers(grouped) is not None
    finally:
        type(grouped).flat_features = False
    assert _grouped_layers(build_model("ResNet18", 3, 10, 32)) is None
    assert _grouped_layers(build_model("ConvNet", 3, 10, 32)) is not None
