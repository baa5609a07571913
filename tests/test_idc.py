"""IDC: the mse/l1 gradient distance against a direct computation, the real-data network updates
on the published schedule, the per-class image steps, FYI's doubled decoded batch, the
unequalness score, resume, IDC's evaluation protocol (CutMix, two-step schedule) and configs."""

from __future__ import annotations

import copy
import json
import sys

import pytest
import torch
import torch.nn.functional as F
from helpers import build_addons, compose_config, crash_and_resume

from distillkit.data import load_dataset
from distillkit.evaluation.protocol import EvalSettings, cutmix
from distillkit.methods.base import MethodContext
from distillkit.methods.idc import EfficientCondensation, idc_distance
from distillkit.seeding import RunGenerators
from distillkit.synthetic import SyntheticSet
from distillkit.trainer import Trainer


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", image_size=8, train_limit=40)


def build_idc(data, factory, *, ipc=2, seed=1, fyi=False, **cfg):
    """An IDC method wired as the trainer wires it (factor 2 mosaics, FYI on the one door)."""
    gens = RunGenerators(seed)
    factor = int(cfg.get("factor", 2))
    synthetic = SyntheticSet.initialise(data, ipc, "real", gens["init"], factor=factor)
    regularizers = build_addons({"fyi": {}} if fyi else {}, "idc")
    synthetic.use_addons(regularizers)
    settings = {
        "name": "idc", "iterations": 2, "inner_loop": 3, "batch_real": 8, "n_data": 40,
        "net_batch": 16, "factor": factor, **cfg,
    }  # fmt: skip
    ctx = MethodContext(settings, data, synthetic, factory, None, gens, regularizers)
    return EfficientCondensation(ctx)


# -- the distance ----------------------------------------------------------------------------------
def _direct_gradients(net, x, y, c, graph):
    """The reference's per-class gradient: CE of class c's rows, autograd over every parameter."""
    params = list(net.parameters())
    rows = y == c
    loss = F.cross_entropy(net(x[rows]), y[rows])
    return torch.autograd.grad(loss, params, create_graph=graph)


@pytest.mark.parametrize("metric", ["mse", "l1"])
def test_matching_loss_equals_a_direct_computation(metric, digits, factory):
    method = build_idc(digits, factory, metric=metric, matching_strategy=None)
    net = factory(torch.Generator().manual_seed(3))
    state = method.generator.get_state()
    losses = method.matching_losses(net)
    method.generator.set_state(state)  # the same real batch again
    real, real_labels = digits.sample_per_class(method.batch_real, method.generator)
    syn, syn_labels = method.synthetic.batch()
    assert syn.shape[0] == 10 * 2 * 4  # ipc 2, factor 2: four decoded images per stored one
    expected = []
    for c in range(10):
        g_real = _direct_gradients(net, real, real_labels, c, graph=False)
        g_syn = _direct_gradients(net, syn, syn_labels, c, graph=True)
        total = 0.0
        for gr, gs in zip(g_real, g_syn, strict=True):
            if gr.dim() > 2:  # convolution weights only (no biases, norms or classifier)
                d = gs - gr
                total = total + (d.pow(2).sum() if metric == "mse" else d.abs().sum())
        expected.append(total)
    torch.testing.assert_close(losses, torch.stack(expected), rtol=1e-4, atol=1e-6)


def test_distance_skips_the_classifier_and_one_dimensional_tensors():
    conv = torch.ones(3, 2, 1, 1, 1)  # class axis + a 4-d weight
    fc = torch.ones(3, 4, 5)  # class axis + a 2-d weight: skipped
    bias = torch.ones(3, 4)
    d = idc_distance([2 * conv, 2 * fc, 2 * bias], [conv, fc, bias], "l1")
    assert d.tolist() == [2.0, 2.0, 2.0]
    with pytest.raises(ValueError, match="metric"):
        idc_distance([conv], [conv], "cos")


# -- the schedule ----------------------------------------------------------------------------------
def test_real_data_network_updates_follow_the_published_schedule(digits, factory):
    """Per outer iteration: a fresh network; rounds of (match, per-class image steps) each
    followed by an update on real data except the last; an update sees n_data real images (whole
    batches of net_batch), unaugmented here, straight from the training set."""
    method = build_idc(
        digits, factory, inner_loop=3, n_data=40, net_batch=16, net_strategy=None,
        net_cutmix_p=0.0, matching_strategy=None,
    )  # fmt: skip
    events, batches, updates = [], [], []
    networks, match, update = method.ctx.networks, method.sequential_steps, method.update_network

    def new_network(gen):
        events.append("net")
        net = networks(gen)
        forward = net.forward

        def spy(x):
            if not torch.is_grad_enabled() or not x.requires_grad:
                batches.append(x.detach().clone())
            return forward(x)

        net.forward = spy
        return net

    def matching(net):
        events.append("match")
        return match(net)

    def updating(net, optimiser):
        events.append("update")
        batches.clear()
        update(net, optimiser)
        events.append(len(batches))
        updates.append(list(batches))

    method.ctx.networks, method.sequential_steps, method.update_network = (
        new_network, matching, updating,
    )  # fmt: skip
    for it in range(2):
        method.step(it)
    one = ["net", "match", "update", 3, "match", "update", 3, "match"]
    assert events == one + one
    assert method.net_updates == 2 * (3 - 1)
    train = digits.train_images
    for x in updates[-1]:  # the last update's batches: real training rows, 16 each
        assert x.shape[0] == 16
        assert all(any(torch.equal(row, t) for t in train) for row in x)


def test_round_start_steps_equal_sequential_sgd_steps_on_one_momentum_buffer(digits, factory):
    """`class_steps: round_start` steps the image optimiser once per class, in class order:
    momentum moves every class's rows at every step. image_steps must equal doing that literally
    with every class's gradient taken at the round's start."""
    method = build_idc(digits, factory, pixel_space=False, class_steps="round_start")
    images = method.synthetic.images
    x = images.detach().clone().requires_grad_(True)
    weights = torch.arange(1.0, 11.0)

    def losses_of(t):
        return t.pow(2).flatten(1).sum(1).view(10, -1).sum(1) * weights

    lr = method.optimiser.param_groups[0]["lr"]
    literal = torch.optim.SGD([x], lr=lr, momentum=0.5)
    once = images.detach().clone().requires_grad_(True)
    together = torch.optim.SGD([once], lr=lr, momentum=0.5)
    for _ in range(2):
        method.image_steps(losses_of(images))
        grad = torch.autograd.grad(losses_of(x).sum(), x)[0]
        for c in range(10):
            rows = method.synthetic.class_rows(c)
            x.grad = torch.zeros_like(grad)
            x.grad[rows] = grad[rows]
            literal.step()
        once.grad = torch.autograd.grad(losses_of(once).sum(), once)[0]
        together.step()
    torch.testing.assert_close(images.detach(), x.detach(), rtol=1e-6, atol=1e-8)
    assert not torch.allclose(images.detach(), once.detach())  # not one step for all classes


def test_sequential_class_steps_follow_the_reference_loop(digits, factory):
    """Efficient-Dataset-Condensation condense.py ~526-542: for each class in order, sample its
    real batch and its decoded synthetic images, take the gradient distance at the CURRENT images
    (after the earlier classes' steps and the shared momentum), backward, step. Restated here
    literally (autograd over every conv weight, mse) and compared with the method's round."""
    method = build_idc(digits, factory, matching_strategy=None)
    net = method.ctx.networks(torch.Generator().manual_seed(3))
    images = method.synthetic.images
    x = images.detach().clone().requires_grad_(True)
    literal = torch.optim.SGD([x], lr=method.optimiser.param_groups[0]["lr"], momentum=0.5)
    generator = torch.Generator()
    generator.set_state(method.generator.get_state())
    weights = [i for i, p in enumerate(net.parameters()) if p.dim() > 2]
    for _ in range(2):  # two rounds: the momentum buffer carries over
        for c in range(10):
            real = digits.sample_class(c, method.batch_real, generator)
            rows = method.synthetic.class_rows(c)
            syn, _ = method.synthetic.decode(x[rows], method.synthetic.labels[rows])
            labels = torch.full((real.shape[0],), c)
            g_real = _direct_gradients(net, real, labels, c, False)
            g_syn = _direct_gradients(net, syn, torch.full((syn.shape[0],), c), c, True)
            loss = sum((g_syn[i] - g_real[i]).pow(2).sum() for i in weights)
            grad = torch.autograd.grad(loss, x)[0] * method.grad_scale
            x.grad = grad
            literal.step()
        method.sequential_steps(net)
    torch.testing.assert_close(images.detach(), x.detach(), rtol=1e-5, atol=1e-7)
    shortcut = build_idc(digits, factory, matching_strategy=None, class_steps="round_start")
    for _ in range(2):
        shortcut.image_steps(shortcut.matching_losses(net))
    assert not torch.allclose(shortcut.synthetic.images.detach(), x.detach(), atol=1e-7)


def _families_per_call(method, monkeypatch):
    """Record the DSA families applied on each call, by which augmentation object."""
    from distillkit.augment.dsa import DSA

    calls = []
    apply = DSA.apply

    def spy(self, x, params, groups=None):
        who = "match" if self is method.match_augment else "net"
        calls.append((who, params.families))
        return apply(self, x, params, groups)

    monkeypatch.setattr(DSA, "apply", spy)
    return calls


def test_idc_applies_every_family_in_matching_and_network_updates(digits, factory, monkeypatch):
    """Efficient-Dataset-Condensation misc/augment.py DiffAug.__call__ with condense.py ~356-369:
    matching's `color_crop_cutout` applies colour, crop and cutout on every call (one Siamese draw
    for a class's real and synthetic rows), the network updates' `color_crop` colour and crop, per
    sample; never DSA's one family per call."""
    method = build_idc(digits, factory, inner_loop=2, n_data=16, net_batch=8, net_cutmix_p=0.0)
    calls = _families_per_call(method, monkeypatch)
    method.step(0)
    match = [f for who, f in calls if who == "match"]
    net = [f for who, f in calls if who == "net"]
    assert len(match) == 2 * 2 * 10  # real and synthetic, per class, per round
    assert set(match) == {("color", "crop", "cutout")}
    assert len(net) == 2 and set(net) == {("color", "crop")}  # 16 images in batches of 8


def test_idc_evaluation_composition_is_flip_and_colour_then_one_geometric():
    """Efficient-Dataset-Condensation train.py ~122 with misc/augment.py ~57-77: per sample,
    flip (p 0.5) and colour always, then one of crop / scale / rotate drawn per call; no cutout
    (CutMix replaces it)."""
    from distillkit.augment.choice import evaluation_augment

    cfg = compose_config(["method=idc", "dataset=cifar10", "ipc=10"])
    augment = evaluation_augment(cfg)
    assert augment.mode == "IDC"
    g = torch.Generator().manual_seed(0)
    drawn = [augment.sample(4, g, (32, 32)).families for _ in range(60)]
    assert all(f[:2] == ("flip", "color") and len(f) == 3 for f in drawn)
    assert {f[2] for f in drawn} == {"crop", "scale", "rotate"}
    flips = torch.cat([augment.sample(4, g, (32, 32)).values["flip"]["flip"] for _ in range(200)])
    assert 0.4 < flips.float().mean() < 0.6  # a p=0.5 coin per sample


def test_pixel_space_rate_and_clamp(digits, factory):
    method = build_idc(digits, factory, ipc=2)
    std = torch.tensor(digits.info.std).view(1, -1, 1, 1)
    torch.testing.assert_close(method.grad_scale, std.pow(-2))
    assert method.optimiser.param_groups[0]["lr"] == pytest.approx(5e-3 * 2 / 10)
    with torch.no_grad():
        method.synthetic.images.fill_(100.0)
    method.clamp_images()
    mean = torch.tensor(digits.info.mean).view(1, -1, 1, 1)
    torch.testing.assert_close(
        method.synthetic.images.detach()[:1], ((1 - mean) / std).expand(1, 1, 8, 8)
    )


# -- FYI -------------------------------------------------------------------------------------------
def test_fyi_doubles_the_decoded_matching_batch(digits, factory):
    method = build_idc(digits, factory, fyi=True, inner_loop=1, matching_strategy=None)
    seen = []
    batch = method.synthetic.batch

    def spy(rows=None, decoded=None):
        x, y = batch(rows, decoded)
        seen.append((x.detach().clone(), y.clone()))
        return x, y

    method.synthetic.batch = spy
    method.step(0)
    assert len(seen) == 10  # one decoded batch per class, in class order
    decoded = 2 * 4
    for c, (x, y) in enumerate(seen):
        assert x.shape[0] == 2 * decoded and bool((y == c).all())
        assert torch.equal(x[decoded:], x[:decoded].flip(-1))


def test_large_sets_are_subsampled_to_batch_syn_max_decoded_images(digits, factory):
    """condense.py ~94-100, 183-193: a class's stored images are decoded, then a random
    batch_syn_max of the decoded tiles are kept (IPC 50 on CIFAR: 128 of 200)."""
    method = build_idc(digits, factory, ipc=3, batch_syn_max=8)
    kept = method.decoded_subsample(10)
    assert kept.shape[0] == 10 * 8
    assert all(r // 12 == i // 8 for i, r in enumerate(kept.tolist()))  # 12 tiles per class
    assert len(set(kept.tolist())) == 80
    one = method.decoded_subsample()
    x, y = method.synthetic.batch(method.synthetic.class_rows(4), one)
    assert x.shape[0] == 8 and bool((y == 4).all()) and int(one.max()) < 12
    assert build_idc(digits, factory, ipc=2).decoded_subsample() is None  # 8 <= 128: all


# -- resume ----------------------------------------------------------------------------------------
def test_state_resumes_exactly(digits, factory):
    a = build_idc(digits, factory, inner_loop=2)
    a.step(0)
    state = copy.deepcopy(a.state_dict())
    assert state["optimiser"]["state"], "the image optimiser's momentum must be saved"
    synthetic_state = copy.deepcopy(a.synthetic.state_dict())
    generators = copy.deepcopy(a.ctx.generators.state_dict())
    a.step(1)
    b = build_idc(digits, factory, inner_loop=2)
    b.synthetic.load_state_dict(synthetic_state)
    b.ctx.generators.load_state_dict(generators)
    b.load_state_dict(state)
    b.step(1)
    assert torch.equal(a.synthetic.images, b.synthetic.images)
    assert a.net_updates == b.net_updates == 2


# -- end to end ------------------------------------------------------------------------------------
IDC_TINY = (
    "method=idc", "ipc=1", "method.inner_loop=2", "method.n_data=32", "method.batch_real=8",
    "dataset.train_limit=40", "images.flips=false",
)  # fmt: skip


def test_run_logs_unequalness_and_saves_the_mosaics(tiny_config, tmp_path):
    cfg = tiny_config(
        *IDC_TINY, "unequalness.every=1", "unequalness.num_nets=1", "unequalness.distances=[dm]"
    )
    results = Trainer(cfg, tmp_path / "run").run()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["step"] for r in records if "unequalness/dm" in r] == [1, 2, 3]
    assert "dm" in results["unequalness"]
    synthetic, _ = SyntheticSet.load(tmp_path / "run" / "synthetic_set.pt")
    assert synthetic.factor == 2 and synthetic.training_set()[0].shape[0] == 40


@pytest.mark.slow
def test_checkpoint_resume_gives_the_same_set(tiny_config, tmp_path):
    cfg = tiny_config(
        *IDC_TINY, "method.iterations=4", "checkpoint.every=2", "unequalness.enabled=false",
        "eval.num_models=0",
    )  # fmt: skip
    whole, resumed = crash_and_resume(cfg, tmp_path)
    assert resumed.start_iteration == 2
    resumed.run()
    assert torch.equal(resumed.synthetic.images, whole.synthetic.images)


# -- IDC's evaluation protocol ---------------------------------------------------------------------
def test_cutmix_pastes_a_box_from_a_shuffled_batch_and_weights_by_area():
    x = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 8, 8).clone()
    y = torch.arange(4)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        mixed, y_b, kept = cutmix(x, y, 1.0, gen)
        pasted = (mixed != x).float().mean(dim=(1, 2, 3))
        changed = y_b != y
        assert torch.allclose(pasted[changed], torch.full_like(pasted[changed], 1 - kept))
        # The box comes from a shuffled batch: the rows' sources are a permutation of the
        # batch, and every pasted pixel of row i holds its source row's value (= y_b[i] here).
        assert torch.equal(y_b.sort()[0], y)
        for i in range(4):
            own = mixed[i] == x[i]
            assert bool((mixed[i][~own] == y_b[i].float()).all())
        assert 0.0 <= kept <= 1.0


def test_two_step_schedule_and_default_decay():
    idc = EvalSettings(epochs=1000, lr_milestones=(0.6667, 0.8334), lr_gamma=0.2)
    assert [idc.lr_factor(e) for e in (0, 665, 666, 832, 833, 999)] == pytest.approx(
        [1, 1, 0.2, 0.2, 0.04, 0.04]
    )
    standard = EvalSettings(epochs=10)
    assert [standard.lr_factor(e) for e in (4, 5, 9)] == [1.0, 0.1, 0.1]
    assert not standard.needs_plain_loop and idc.needs_plain_loop


@pytest.mark.parametrize("dataset, ipc", [("cifar10", 1), ("cifar10", 10), ("cifar10", 50)])
def test_published_settings_are_picked_up_automatically(dataset, ipc):
    cfg = compose_config(["method=idc", f"dataset={dataset}", f"ipc={ipc}"])
    m, e = cfg.method, cfg.eval
    assert (m.iterations, m.inner_loop, m.metric, m.n_data, m.factor) == (2000, 100, "mse", 2000, 2)
    assert (m.lr_img, m.batch_real, m.batch_syn_max) == (5e-3, 64, 128)
    assert (e.batch_size, e.lr, e.momentum, e.weight_decay, e.epochs) == (64, 0.01, 0.9, 5e-4, 1000)
    assert (e.cutmix_p, e.cutmix_beta, e.lr_gamma) == (0.5, 1.0, 0.2)
    assert e.dsa_strategy == "color_crop_flip_scale_rotate"  # cutout off under CutMix


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
