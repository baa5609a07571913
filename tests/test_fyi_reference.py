"""FYI's matching steps (DC, DSA, DM) against the reference's per-class loops, on one batch.

The FYI reference (cvlab-yonsei/FYI DC_DSA_DM/main.py ~210-236 with utils.py BatchAug ~327-332)
matches, class by class, the real gradient with the gradient of CE on the class's synthetic images
followed by their horizontal mirrors (`cat([x_c, flip(x_c)])`, labels repeated), under one
Siamese DSA draw shared by the real and the doubled synthetic batch, and backpropagates each
class's distance into the images before one optimiser step. That loop is written out here from
its description (the same maths, not its code) and compared with distillkit's `match()` for DC
and DSA with the FYI add-on: the same images' gradient. With the per-class loop for both sides
(`real_gradients=loop`, `syn_gradients=loop`: the reference's forward and backward per class) the
rows meet the network in the same order and the images' gradient is the same bit for bit (measured
on this CPU for DC and DSA); vmap mode batches the classes and agrees to 1e-5 (measured 1.5e-7
of a largest entry of 0.32).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import build_addons, build_method

from distillkit.augment import DSA
from distillkit.data import load_dataset
from distillkit.methods import MethodContext
from distillkit.methods.gradient_matching import gradient_distance
from distillkit.networks import NetworkFactory
from distillkit.seeding import RunGenerators
from distillkit.synthetic import SyntheticSet

DATA = load_dataset("digits", image_size=8)
STRATEGY = "color_crop_cutout_scale_rotate"


def fyi_method(name: str, mode: str):
    gens = RunGenerators(0)
    syn = SyntheticSet.initialise(DATA, 2, "real", gens["init"])
    syn.use_addons(addons := build_addons({"fyi": {}}, name))
    networks = NetworkFactory("ConvNet", 1, 10, (8, 8), {"width": 8})
    augment = DSA(STRATEGY) if name == "dsa" else None
    cfg = {
        "lr_img": 0.1, "momentum": 0.5, "lr_net": 0.01, "batch_real": 8, "batch_train": 256,
        "outer_loop": 1, "inner_loop": 1, "iterations": 1, "real_gradients": mode,
        "syn_gradients": mode, "dsa": name == "dsa",
    }  # fmt: skip
    ctx = MethodContext(cfg, DATA, syn, networks, augment, gens, addons=addons)
    return build_method(name, ctx), syn, networks


def reference_gradient(net, real, real_labels, stored, k, augment, params) -> torch.Tensor:
    """The reference's loop: per class, the doubled synthetic batch [x_c; flip x_c] and the
    real batch under the class's Siamese draw, CE gradients of the network's parameters,
    the distance, its backward into the stored images (accumulated over classes)."""
    images = stored.detach().clone().requires_grad_(True)
    ipc = images.shape[0] // k
    params_list = [p for p in net.parameters()]
    for c in range(k):
        x_c = images[c * ipc : (c + 1) * ipc]
        syn = torch.cat([x_c, x_c.flip(-1)])
        real_c = real[real_labels == c]
        if params is not None:  # the class's draw, applied alike to both batches
            syn = augment.apply(syn, params, torch.full((syn.shape[0],), c))
            real_c = augment.apply(real_c, params, torch.full((real_c.shape[0],), c))
        target_real = torch.full((real_c.shape[0],), c)
        g_real = torch.autograd.grad(F.cross_entropy(net(real_c), target_real), params_list)
        g_real = [g.detach() for g in g_real]
        loss_syn = F.cross_entropy(net(syn), torch.full((syn.shape[0],), c))
        g_syn = torch.autograd.grad(loss_syn, params_list, create_graph=True)
        gradient_distance(list(g_syn), g_real).backward(inputs=[images])
    return images.grad


@pytest.mark.parametrize("name", ["dc", "dsa"])
@pytest.mark.parametrize("mode", ["loop", "vmap"])
def test_fyi_matching_gradient_is_the_reference_loops(monkeypatch, name, mode):
    method, syn, networks = fyi_method(name, mode)
    k = syn.num_classes
    net = networks(torch.Generator().manual_seed(3))
    real, real_labels = DATA.sample_per_class(8, torch.Generator().manual_seed(4))
    monkeypatch.setattr(DATA, "sample_per_class", lambda n, generator: (real, real_labels))
    drawn = []
    if name == "dsa":  # record the method's Siamese draw to replay it in the reference loop
        original = method.ctx.augment.sample

        def recording(*args, **kwargs):
            drawn.append(original(*args, **kwargs))
            return drawn[-1]

        monkeypatch.setattr(method.ctx.augment, "sample", recording)
    stored = syn.images.detach().clone()
    method.optimiser.zero_grad(set_to_none=True)
    method.match(net)
    ours = syn.images.grad.detach().clone()
    params = drawn[0] if drawn else None
    expected = reference_gradient(net, real, real_labels, stored, k, method.ctx.augment, params)
    assert ours.abs().max() > 0
    if mode == "loop":
        assert torch.equal(ours, expected), (ours - expected).abs().max()
    else:
        torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5 * ours.abs().max())


def test_fyi_dm_gradient_is_the_reference_loops(monkeypatch):
    """DM with FYI (cvlab-yonsei/FYI DC_DSA_DM/main_DM.py ~175-195): per class, the squared
    distance of the mean embeddings of the real batch and of [x_c; flip x_c] under the class's
    Siamese draw, summed over classes; distillkit's one-pass step gives the same gradient."""
    gens = RunGenerators(0)
    syn = SyntheticSet.initialise(DATA, 2, "real", gens["init"])
    syn.use_addons(addons := build_addons({"fyi": {}}, "dm"))
    networks = NetworkFactory("ConvNet", 1, 10, (8, 8), {"width": 8})
    augment = DSA(STRATEGY)
    cfg = {"lr_img": 1.0, "momentum": 0.5, "batch_real": 8, "iterations": 1, "dsa": True}
    method = build_method(
        "dm", MethodContext(cfg, DATA, syn, networks, augment, gens, addons=addons)
    )
    real, real_labels = DATA.sample_per_class(8, torch.Generator().manual_seed(4))
    monkeypatch.setattr(DATA, "sample_per_class", lambda n, generator: (real, real_labels))
    drawn = []
    original = augment.sample
    monkeypatch.setattr(
        augment, "sample", lambda *a, **k: drawn.append(original(*a, **k)) or drawn[-1]
    )
    net = networks.frozen(torch.Generator().manual_seed(3))
    net.train()
    stored = syn.images.detach().clone()
    method.matching_terms(net)["match"].backward()
    ours = syn.images.grad.detach().clone()
    images = stored.clone().requires_grad_(True)
    (params,) = drawn
    for c in range(10):
        x_c = images[2 * c : 2 * c + 2]
        doubled = augment.apply(torch.cat([x_c, x_c.flip(-1)]), params, torch.full((4,), c))
        real_c = real[real_labels == c]
        real_c = augment.apply(real_c, params, torch.full((real_c.shape[0],), c))
        with torch.no_grad():
            real_mean = net.embed(real_c).mean(0)
        (real_mean - net.embed(doubled).mean(0)).pow(2).sum().backward(inputs=[images])
    assert ours.abs().max() > 0
    torch.testing.assert_close(ours, images.grad, rtol=1e-5, atol=1e-5 * ours.abs().max())
