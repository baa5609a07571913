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


# -- the distance is the method's own ------------------------------------------------------------
def matching_pair(name: str, monkeypatch, dsa: bool = False):
    """A method whose synthetic set is X (digits, IPC 3) and whose every real batch is flip(X),
    so that its matching loss is D(flip X, X); with the networks it matches under."""
    from helpers import build_method
    from kornia.geometry.transform import hflip

    from distillkit.methods import MethodContext
    from distillkit.seeding import RunGenerators
    from distillkit.synthetic import SyntheticSet

    data = load_dataset("digits", image_size=8)
    gens = RunGenerators(0)
    syn = SyntheticSet.initialise(data, 3, "real", gens["init"])
    networks = NetworkFactory("ConvNet", 1, 10, (8, 8), {"width": 16})
    cfg = {"lr_img": 0.1, "momentum": 0.5, "batch_real": 3, "iterations": 1}
    if name != "dm":
        cfg.update(outer_loop=1, inner_loop=1, real_gradients="loop", syn_gradients="loop")
    ctx = MethodContext(
        cfg, data, syn, networks, AUGMENT if dsa else None, gens, runtime={"memory_budget": 0}
    )
    method = build_method(name, ctx)
    x, labels = syn.batch()
    x = x.detach()
    flipped = hflip(x)
    monkeypatch.setattr(data, "sample_per_class", lambda n, generator: (flipped, labels))
    return method, networks, x, flipped, labels


def test_dm_distance_is_its_matching_loss_on_a_set_and_its_flip(monkeypatch):
    method, networks, x, flipped, labels = matching_pair("dm", monkeypatch)
    net = networks.frozen(torch.Generator().manual_seed(1))
    loss = method.matching_loss(net)
    per_class = type(method).pair_distance(net, x, flipped, labels, 10)
    assert per_class.shape == (10,)
    assert torch.equal(per_class.sum(), loss.detach())


@pytest.mark.parametrize("name", ["dc", "dsa"])
def test_gradient_matching_distance_is_its_matching_loss_on_a_set_and_its_flip(name, monkeypatch):
    method, networks, x, flipped, labels = matching_pair(name, monkeypatch, dsa=name == "dsa")
    net = networks(torch.Generator().manual_seed(1))
    generator = torch.Generator().set_state(method.generator.get_state())  # the same DSA draw
    loss = method.match(net)  # real = flip X, synthetic = X
    per_class = type(method).pair_distance(
        net, flipped, x, labels, 10, augment=AUGMENT, generator=generator
    )
    assert per_class.shape == (10,)
    # The same per-class distances; their sum is taken in another order than match's running
    # total, so equal up to float32 rounding (1 ulp here), not bit for bit.
    torch.testing.assert_close(per_class.sum(), loss, rtol=1e-6, atol=0)


def test_a_new_method_with_a_distance_is_a_distance_without_editing_the_score():
    from distillkit.classwise import class_means
    from distillkit.methods import Method
    from distillkit.metrics.unequalness import distance_names

    class MeanPixelMatching(Method):
        """A stand-in for a method added later: it matches per-class mean pixels."""

        name = "mean_pixel_test"

        @classmethod
        def pair_distance(cls, net, x, x_other, labels, num_classes, **_):
            del net
            means = [class_means(b.flatten(1), labels, num_classes) for b in (x, x_other)]
            return (means[0] - means[1]).abs().sum(1)

    assert "mean_pixel_test" in distance_names()
    images, labels = random_set()
    assert score(images, labels, distances=("mean_pixel_test",))["mean_pixel_test"] > 0
    symmetric = score(images + images.flip(-1), labels, distances=("mean_pixel_test", "dm"))
    assert symmetric["mean_pixel_test"] == pytest.approx(0.0, abs=1e-6)


def test_distances_are_the_methods_that_have_one():
    from distillkit.errors import ConfigError
    from distillkit.metrics import unequalness as module

    names = module.distance_names()
    assert {"dm", "dc", "dsa"} <= set(names) and module.DISTANCES == names
    assert not {"mtt", "ftd", "random", "idc", "idm"} & set(names)  # no matching distance
    images, labels = random_set()
    for bad in ("mtt", "no_such_method"):
        with pytest.raises(ConfigError, match=r"unknown unequalness distance.*use .*dm"):
            score(images, labels, distances=(bad,))
