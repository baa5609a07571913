"""DM: the loss matches its definition, falls when optimised, and a run is reproducible."""

from __future__ import annotations

import torch
from helpers import build_method

from distillkit.augment import DSA
from distillkit.classwise import class_means
from distillkit.data import load_dataset
from distillkit.methods import MethodContext
from distillkit.networks import NetworkFactory
from distillkit.seeding import RunGenerators
from distillkit.synthetic import SyntheticSet


def make_dm(seed: int = 0, ipc: int = 2, dsa: bool = False, lr_img: float = 1.0):
    data = load_dataset("digits", image_size=8)
    gens = RunGenerators(seed)
    syn = SyntheticSet.initialise(data, ipc, "real", gens["init"])
    networks = NetworkFactory("ConvNet", 1, 10, (8, 8), {"width": 16})
    augment = DSA("color_crop_cutout_scale_rotate") if dsa else None
    cfg = {"lr_img": lr_img, "momentum": 0.5, "batch_real": 32, "iterations": 10}
    ctx = MethodContext(cfg, data, syn, networks, augment, gens)
    return build_method("dm", ctx), data, syn


def test_class_means_match_a_per_class_loop():
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(30, 5, generator=gen)
    labels = torch.randint(0, 4, (30,), generator=gen)
    labels[:4] = torch.arange(4)
    expected = torch.stack([features[labels == c].mean(0) for c in range(4)])
    assert torch.allclose(class_means(features, labels, 4), expected, atol=1e-6)


def test_matching_loss_equals_a_per_class_reference():
    """The one-pass loss equals the per-class loop of the reference code (no DSA, same batch)."""
    method, data, syn = make_dm()
    net = method.ctx.networks.frozen(torch.Generator().manual_seed(1))
    state = method.generator.get_state()
    loss = method.matching_loss(net)
    method.generator.set_state(state)
    real, real_labels = data.sample_per_class(method.batch_real, method.generator)
    expected = torch.zeros(())
    for c in range(10):
        r = net.embed(real[real_labels == c]).mean(0)
        s = net.embed(syn.images[syn.class_rows(c)]).mean(0)
        expected = expected + (r - s).pow(2).sum()
    assert torch.allclose(loss, expected, rtol=1e-5)


def test_dm_loss_falls_with_a_fixed_network():
    method, _, syn = make_dm(lr_img=0.5)
    net = method.ctx.networks.frozen(torch.Generator().manual_seed(3))
    gen_state = method.generator.get_state()
    losses = []
    for _ in range(15):
        method.generator.set_state(gen_state)  # the same real batch each time
        loss = method.matching_loss(net)
        method.optimiser.zero_grad()
        loss.backward()
        method.optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_dm_steps_change_every_synthetic_image_and_loss_trends_down():
    method, _, syn = make_dm(dsa=True)
    before = syn.images.detach().clone()
    losses = [method.step(i)["loss"].item() for i in range(30)]
    changed = (syn.images.detach() - before).flatten(1).abs().sum(1)
    assert bool((changed > 0).all())
    assert sum(losses[-10:]) < sum(losses[:10])


def test_same_seed_same_synthetic_set_and_other_seed_differs():
    results = []
    for seed in (0, 0, 1):
        method, _, syn = make_dm(seed=seed, dsa=True)
        for i in range(3):
            method.step(i)
        results.append(syn.images.detach().clone())
    assert torch.equal(results[0], results[1])
    assert not torch.equal(results[0], results[2])
