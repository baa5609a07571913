"""DC and DSA: the distance, per-class gradients, one step, the inner loop's door, DSA, BN, runs."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import build_method

from distillkit.augment import DSA
from distillkit.config import ConfigError
from distillkit.data import load_dataset
from distillkit.methods import MethodContext
from distillkit.methods.gradient_matching import (
    class_gradient_distance,
    class_gradients,
    freeze_batchnorm,
    gradient_distance,
    matched_parameters,
    resolve_loops,
)
from distillkit.networks import NetworkFactory
from distillkit.seeding import RunGenerators
from distillkit.synthetic import SyntheticSet
from distillkit.trainer import Trainer

DATA = load_dataset("digits", image_size=8)


def make_method(
    name: str = "dc",
    ipc: int = 2,
    seed: int = 0,
    norm: str = "instancenorm",
    **cfg_overrides,
):
    gens = RunGenerators(seed)
    syn = SyntheticSet.initialise(DATA, ipc, "real", gens["init"])
    networks = NetworkFactory("ConvNet", 1, 10, (8, 8), {"width": 8, "norm": norm})
    augment = DSA("color_crop_cutout_scale_rotate") if name == "dsa" else None
    cfg = {
        "name": name,
        "iterations": 3,
        "lr_img": 0.1,
        "momentum": 0.5,
        "lr_net": 0.01,
        "batch_real": 16,
        "batch_train": 256,
        "outer_loop": 2,
        "inner_loop": 1,
        **cfg_overrides,
    }
    ctx = MethodContext(cfg, DATA, syn, networks, augment, gens)
    return build_method(name, ctx), syn


def random_grads(gen: torch.Generator) -> list[torch.Tensor]:
    shapes = [(4, 3, 3, 3), (4,), (10, 16), (10,)]
    return [torch.randn(s, generator=gen) for s in shapes]


# -- the distance -----------------------------------------------------------------------------
def test_distance_is_zero_for_identical_gradients():
    g = random_grads(torch.Generator().manual_seed(0))
    assert float(gradient_distance(g, [t.clone() for t in g])) == pytest.approx(0.0, abs=1e-5)


def test_distance_ignores_one_dimensional_tensors():
    gen = torch.Generator().manual_seed(1)
    g_syn, g_real = random_grads(gen), random_grads(gen)
    before = gradient_distance(g_syn, g_real)
    g_syn[1] = g_syn[1] * -7.0 + 3.0  # a bias gradient changes
    g_real[3] = torch.zeros(10)
    assert torch.equal(gradient_distance(g_syn, g_real), before)
    assert float(gradient_distance([torch.ones(5)], [-torch.ones(5)])) == 0.0


def test_distance_matches_a_hand_computation():
    # Rows are output units: row 0 is parallel (cos 1), row 1 is at 45 degrees (cos 1/sqrt 2).
    g_syn = [torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([5.0, 5.0])]
    g_real = [torch.tensor([[2.0, 0.0], [1.0, 1.0]]), torch.tensor([-1.0, 0.0])]
    expected = (1 - 2 / (2 + 1e-6)) + (1 - 1 / (math.sqrt(2) + 1e-6))
    assert float(gradient_distance(g_syn, g_real)) == pytest.approx(expected, rel=1e-6)
    # A conv tensor flattens everything but the output unit; orthogonal rows give 1 each.
    conv_s = torch.zeros(3, 2, 2, 2)
    conv_r = torch.zeros(3, 2, 2, 2)
    conv_s[:, 0, 0, 0], conv_r[:, 1, 1, 1] = 1.0, 1.0
    assert float(gradient_distance([conv_s], [conv_r])) == pytest.approx(3.0)


def test_class_distance_equals_the_per_class_distance():
    gen = torch.Generator().manual_seed(2)
    g_syn = [torch.stack(t) for t in zip(*[random_grads(gen) for _ in range(3)], strict=True)]
    g_real = [torch.stack(t) for t in zip(*[random_grads(gen) for _ in range(3)], strict=True)]
    batched = class_gradient_distance(g_syn, g_real)
    for c in range(3):
        expected = gradient_distance([g[c] for g in g_syn], [g[c] for g in g_real])
        assert torch.allclose(batched[c], expected, atol=1e-5)


# -- per-class gradients ---------------------------------------------------------------------------
def shuffled_batch(n_per_class: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x, y = DATA.sample_per_class(n_per_class, gen)
    order = torch.randperm(x.shape[0], generator=gen)  # any row order works
    return x[order], y[order]


@pytest.mark.parametrize("norm", ["instancenorm", "batchnorm", "none"])
def test_vmap_gradients_equal_the_per_class_loop(norm):
    networks = NetworkFactory("ConvNet", 1, 10, (8, 8), {"width": 8, "norm": norm})
    net = networks(torch.Generator().manual_seed(0))
    x, y = shuffled_batch(5)
    if norm == "batchnorm":
        freeze_batchnorm(net, x)
    loop = class_gradients(net, x, y, 10, mode="loop")
    # In slices of classes (first_class), as DC's chunked matching asks for them.
    slices = [(0, 3), (3, 6), (6, 9), (9, 10)]
    parts = [
        class_gradients(net, x[(y >= a) & (y < b)], y[(y >= a) & (y < b)], b - a,
                        mode="vmap", first_class=a)
        for a, b in slices
    ]  # fmt: skip
    vmapped = [torch.cat(tensors) for tensors in zip(*parts, strict=True)]
    names = list(matched_parameters(net))
    assert len(loop) == len(vmapped) == len(names)
    for a, b, name in zip(loop, vmapped, names, strict=True):
        assert a.shape == b.shape == (10, *matched_parameters(net)[name].shape)
        assert torch.allclose(a, b, atol=1e-5), name
    # A single class by hand.
    rows = y == 4
    loss = F.cross_entropy(net(x[rows]), torch.full((int(rows.sum()),), 4))
    by_hand = torch.autograd.grad(loss, list(matched_parameters(net).values()))
    for a, b in zip(by_hand, vmapped, strict=True):
        assert torch.allclose(a, b[4], atol=1e-5)


def test_vmap_synthetic_gradients_carry_the_same_graph_to_the_images():
    networks = NetworkFactory("ConvNet", 1, 10, (8, 8), {"width": 8})
    net = networks(torch.Generator().manual_seed(0))
    x0, y = shuffled_batch(2, seed=1)
    target = class_gradients(net, *shuffled_batch(6, seed=2), 10)
    image_grads = []
    for mode in ("loop", "vmap"):
        x = x0.clone().requires_grad_(True)
        g = class_gradients(net, x, y, 10, create_graph=True, mode=mode)
        class_gradient_distance(g, target).sum().backward(inputs=[x])
        image_grads.append(x.grad)
        assert all(p.grad is None for p in net.parameters())  # nothing leaks into the net
    assert image_grads[0].abs().sum() > 0
    assert torch.allclose(image_grads[0], image_grads[1], atol=1e-5)


def test_training_batchnorm_falls_back_to_the_loop():
    """Rows interact under batch statistics: each class then gets its own batch, as in the loop."""
    networks = NetworkFactory("ConvNet", 1, 10, (8, 8), {"width": 8, "norm": "batchnorm"})
    net = networks(torch.Generator().manual_seed(0))
    net.train()
    x, y = shuffled_batch(4)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    a = class_gradients(net, x, y, 10, mode="vmap")
    net.load_state_dict(state)
    b = class_gradients(net, x, y, 10, mode="loop")
    for u, v in zip(a, b, strict=True):
        assert torch.allclose(u, v, atol=1e-6)


# -- one step and the inner loop ---------------------------------------------------------------
def test_one_dc_step_lowers_the_matching_loss():
    method, syn = make_method(outer_loop=1, inner_loop=0)
    net = method.ctx.networks(torch.Generator().manual_seed(3))
    state = method.generator.get_state()
    losses = []
    for _ in range(2):
        method.generator.set_state(state)  # the same real batch both times
        method.optimiser.zero_grad()
        losses.append(float(method.match(net)))
        method.optimiser.step()
    assert losses[1] < losses[0]


def test_steps_change_the_images_and_return_a_tensor_loss():
    method, syn = make_method()
    before = syn.images.detach().clone()
    out = method.step(0)
    assert set(out) == {"loss"} and isinstance(out["loss"], torch.Tensor)
    assert not out["loss"].requires_grad and torch.isfinite(out["loss"])
    assert bool(((syn.images.detach() - before).flatten(1).abs().sum(1) > 0).all())


def test_inner_loop_batches_pass_through_synthetic_batch():
    method, syn = make_method(outer_loop=3, inner_loop=2, batch_train=8)
    calls = []

    def spy(x, y):
        calls.append((x.shape[0], x.requires_grad, torch.is_grad_enabled()))
        return torch.cat([x, x.flip(-1)]), torch.cat([y, y])  # a FYI-like transform

    syn.transforms = [spy]
    method.step(0)
    matching = [c for c in calls if c[1]]
    inner = [c for c in calls if not c[1]]
    assert len(matching) == 3 and all(c[0] == 20 for c in matching)
    # 2 inner phases x 2 epochs x batches of 8, 8, 4 stored rows; taken without a graph.
    assert sorted(c[0] for c in inner) == sorted([8, 8, 4] * 4)
    assert not any(c[2] for c in inner)


def test_dc_and_dsa_runs_are_reproducible():
    images = []
    for seed in (0, 0, 1):
        method, syn = make_method("dsa", seed=seed)
        method.step(0)
        images.append(syn.images.detach().clone())
    assert torch.equal(images[0], images[1])
    assert not torch.equal(images[0], images[2])


# -- DSA ------------------------------------------------------------------------------------------
def test_dsa_uses_one_siamese_draw_per_class_and_per_sample_in_the_inner_loop(monkeypatch):
    method, syn = make_method("dsa", outer_loop=2, inner_loop=1)
    augment = method.ctx.augment
    applied, per_sample = [], []
    apply, call = augment.apply, type(augment).__call__

    def spy_apply(x, params, groups=None):
        applied.append((params, None if groups is None else groups.clone(), x.shape[0]))
        return apply(x, params, groups)

    def spy_call(self, x, generator):
        per_sample.append(x.shape[0])
        return call(self, x, generator)

    monkeypatch.setattr(augment, "apply", spy_apply)
    monkeypatch.setattr(type(augment), "__call__", spy_call)
    method.step(0)
    siamese = [a for a in applied if a[1] is not None and a[0].n_groups == 10]
    assert len(siamese) == 4  # real + synthetic, two rounds
    for (p_real, g_real, n_real), (p_syn, g_syn, n_syn) in (siamese[:2], siamese[2:]):
        assert p_real is p_syn  # the same draw for both sides
        assert (n_real, n_syn) == (10 * 16, 20)
        assert torch.equal(g_real, torch.arange(10).repeat_interleave(16))
        assert torch.equal(g_syn, syn.labels)
    assert per_sample == [20]  # one inner epoch, one batch, per-sample parameters


def test_dsa_without_an_augmentation_is_a_clear_error():
    gens = RunGenerators(0)
    syn = SyntheticSet.initialise(DATA, 1, "real", gens["init"])
    networks = NetworkFactory("ConvNet", 1, 10, (8, 8), {"width": 8})
    cfg = {"name": "dsa", "lr_img": 0.1, "momentum": 0.5, "lr_net": 0.01}
    cfg |= {"batch_real": 8, "batch_train": 8, "outer_loop": 1, "inner_loop": 1}
    with pytest.raises(ConfigError, match="needs DSA"):
        build_method("dsa", MethodContext(cfg, DATA, syn, networks, None, gens))


# -- BatchNorm ------------------------------------------------------------------------------------
def test_batchnorm_statistics_come_from_real_data_and_stay_frozen_in_matching():
    method, _ = make_method(norm="batchnorm")
    net = method.ctx.networks(torch.Generator().manual_seed(0))
    net.train()
    bn = next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    state = method.generator.get_state()
    method.prepare_network(net)
    method.generator.set_state(state)
    images, _ = DATA.sample_per_class(method.bn_images, method.generator)
    with torch.no_grad():
        conv_out = net.features[0][0](images)
    assert torch.allclose(bn.running_mean, conv_out.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, conv_out.var((0, 2, 3)), atol=1e-4)
    assert not bn.training and bn.momentum == 0.1
    frozen = [t.clone() for t in (bn.running_mean, bn.running_var)]
    method.match(net)
    assert torch.equal(bn.running_mean, frozen[0]) and torch.equal(bn.running_var, frozen[1])
    method.step(0)  # the whole iteration runs with BN too


# -- configuration and end to end -----------------------------------------------------------------
def test_loops_come_from_the_ipc_mapping_unless_given():
    cfg = {"name": "dc", "loops": {1: [1, 1], 10: [10, 50]}, "outer_loop": None, "inner_loop": None}
    assert resolve_loops(cfg, 10) == (10, 50)
    assert resolve_loops({**cfg, "inner_loop": 5}, 10) == (10, 5)
    assert resolve_loops({**cfg, "outer_loop": 2, "inner_loop": 3}, 7) == (2, 3)
    with pytest.raises(ConfigError, match="ipc=7"):
        resolve_loops(cfg, 7)


@pytest.mark.parametrize("method", ["dc", "dsa"])
def test_trainer_runs_dc_and_dsa_end_to_end(tiny_config, tmp_path, method):
    cfg = tiny_config(f"method={method}", "ipc=1", "method.iterations=2", "regularizer=fyi")
    results = Trainer(cfg, tmp_path).run()
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["method"] == method == results["method"]
    assert math.isfinite(saved["final_loss"])
    assert 0.0 <= saved["accuracy"]["ConvNet"]["mean"] <= 100.0


def test_trainer_with_an_unmapped_ipc_fails_clearly(tiny_config, tmp_path):
    with pytest.raises(ConfigError, match="method.outer_loop"):
        Trainer(tiny_config("method=dc", "ipc=2"), tmp_path)
    cfg = tiny_config("method=dc", "ipc=2", "method.outer_loop=2", "method.inner_loop=1")
    Trainer(cfg, tmp_path).method.step(0)


# -- real data (slow) -----------------------------------------------------------------------------
@pytest.fixture
def mnist_root():
    from helpers import SHARED_DATA

    if not (SHARED_DATA / "MNIST" / "raw").exists():
        pytest.skip("../shared/data/MNIST is not present on this machine")
    return SHARED_DATA


@pytest.mark.slow
def test_dc_beats_random_subset_on_mnist_at_ipc1(tiny_config, mnist_root, tmp_path):
    common = [
        "dataset=mnist",
        f"dataset.root={mnist_root}",
        "dataset.test_limit=200",
        "model.width=32",
        "ipc=1",
        "eval.num_models=3",
        "eval.epochs=300",
        "unequalness.enabled=false",
    ]
    scores = {}
    for method in ("random", "dc"):
        extra = ["method.iterations=100", "method.batch_real=64"] if method == "dc" else []
        cfg = tiny_config(*common, f"method={method}", *extra)
        scores[method] = Trainer(cfg, tmp_path / method).run()["headline"]["mean"]
    assert scores["dc"] > scores["random"] + 5.0, scores
