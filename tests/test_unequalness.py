"""The unequalness score: 0 for symmetric and flip-closed sets, falling with real set size."""

from __future__ import annotations

import pytest
import torch

from distillkit.augment import DSA
from distillkit.data import load_dataset
from distillkit.metrics.real_curve import unequalness_curve
from distillkit.metrics.unequalness import unequalness
from distillkit.networks import NetworkFactory

DISTANCES = ("dm", "dc", "dsa")
NETS = NetworkFactory("ConvNet", 3, 4, (8, 8), {"width": 8})
AUGMENT = DSA("color_crop_cutout_flip_scale_rotate")


def score(images, labels, k=4, distances=DISTANCES):
    return unequalness(
        images, labels, k, NETS, torch.Generator().manual_seed(0), distances, 2, AUGMENT
    )


def random_set(n_per_class=3, k=4):
    images = torch.randn(n_per_class * k, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    return images, torch.arange(k).repeat_interleave(n_per_class)


#: D(g, g) of the gradient distance is not exactly 0: the published cosine keeps 1e-6 in its
#: denominator, leaving sum_rows 1e-6 / (|g_row|^2 + 1e-6) (about 1e-4 here, against about 8 for
#: an asymmetric set). The DM distance has no such floor.
FLOOR = {"dm": 1e-6, "dc": 1e-3, "dsa": 1e-3}


def test_left_right_symmetric_images_score_zero():
    images, labels = random_set()
    symmetric = images + images.flip(-1)
    for name, value in score(symmetric, labels).items():
        assert value == pytest.approx(0.0, abs=FLOOR[name]), name


def test_flip_closed_set_scores_zero():
    images, labels = random_set()
    closed = torch.cat([images, images.flip(-1)])
    for name, value in score(closed, torch.cat([labels, labels])).items():
        assert value == pytest.approx(0.0, abs=FLOOR[name]), name


def test_asymmetric_images_score_above_zero():
    images, labels = random_set()
    for name, value in score(images, labels).items():
        assert value > 1000 * FLOOR[name], name


def test_batch_norm_networks_score_one_image_per_class():
    """IPC 1 with a BN net: training-mode BN cannot take a batch of one; the score is defined."""
    images, labels = random_set(n_per_class=1)
    nets = NetworkFactory("VGG11BN", 3, 4, (8, 8), {})  # a 1x1 map before its last BN
    values = unequalness(images, labels, 4, nets, torch.Generator().manual_seed(0), ("dm", "dc"), 1)
    assert all(value > 0 for value in values.values()), values
    symmetric = unequalness(
        images + images.flip(-1), labels, 4, nets, torch.Generator().manual_seed(0), ("dm",), 1
    )
    assert symmetric["dm"] == pytest.approx(0.0, abs=FLOOR["dm"])


def test_dsa_distance_needs_an_augmentation():
    images, labels = random_set()
    with pytest.raises(ValueError, match="dsa"):
        unequalness(images, labels, 4, NETS, torch.Generator(), ("dsa",), 1, None)


def curve(data, sizes, distances=("dm", "dc")):
    nets = NetworkFactory("ConvNet", data.info.channels, 10, data.info.image_size, {"width": 8})
    rows = unequalness_curve(
        data, sizes, nets, torch.Generator().manual_seed(0), distances, 2, 2, None, progress=False
    )
    return {(r["distance"], r["size"]): r["mean"] for r in rows}


def test_real_digits_unequalness_falls_as_the_set_grows(digits):
    u = curve(digits, [1, 50])
    for distance in ("dm", "dc"):
        assert u[(distance, 50)] < u[(distance, 1)]


def test_real_cifar10_sets_become_nearly_flip_invariant(shared_data):
    data = load_dataset("cifar10", root=shared_data, train_limit=200, test_limit=1)
    u = curve(data, [1, 200], distances=("dm",))
    assert u[("dm", 200)] < 0.1 * u[("dm", 1)]
