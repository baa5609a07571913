"""CAM analysis: maps decompose the logit, regions hold the top pixels, symmetry is measured."""

from __future__ import annotations

import torch

from distillkit.metrics.cam import (
    class_activation_maps,
    mirror_symmetry,
    region_frequency,
    top_region,
)
from distillkit.models import build_model


def test_convnet_cam_sums_to_the_logit_before_upsampling():
    torch.manual_seed(0)
    net = build_model("ConvNet", 3, 5, (16, 16), width=8).eval()
    x = torch.randn(4, 3, 16, 16)
    y = torch.tensor([0, 1, 2, 3])
    maps = net.feature_map(x)
    weight = net.classifier.weight[y].view(4, *maps.shape[1:])
    logits = net(x)[torch.arange(4), y] - net.classifier.bias[y]
    assert torch.allclose((weight * maps).sum((1, 2, 3)), logits, atol=1e-5)
    assert class_activation_maps(net, x, y).shape == (4, 16, 16)


def test_resnet_cam_works_with_global_pooling():
    net = build_model("ResNet18", 3, 5, (16, 16)).eval()
    out = class_activation_maps(net, torch.randn(2, 3, 16, 16), torch.tensor([1, 4]))
    assert out.shape == (2, 16, 16)


def test_top_region_keeps_the_top_tenth():
    maps = torch.arange(100.0).view(1, 10, 10)
    region = top_region(maps, 0.1)
    assert region.sum() == 10 and bool(region[0, 9].all())


def test_mirror_symmetry_is_one_for_symmetric_and_negative_for_one_sided_maps():
    left = torch.zeros(1, 4, 4)
    left[..., :2] = 1.0
    symmetric = torch.ones(1, 4, 4)
    symmetric[..., 1:3] = 0.0
    assert torch.allclose(mirror_symmetry(symmetric), torch.ones(1))
    assert mirror_symmetry(left).item() < 0


def test_region_frequency_is_a_share_per_class():
    net = build_model("ConvNet", 1, 2, (8, 8), width=4)
    images = torch.randn(6, 1, 8, 8)
    freq = region_frequency(net, images, torch.tensor([0, 0, 0, 1, 1, 1]), 2)
    assert freq.shape == (2, 8, 8)
    assert torch.allclose(freq.sum((1, 2)), torch.full((2,), round(0.1 * 64) * 1.0))
