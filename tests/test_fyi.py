"""FYI: the doubled batch, its gradient, and its place on the one synthetic-batch path."""

from __future__ import annotations

import torch
from helpers import build_addons, build_method

from distillkit.data import load_dataset
from distillkit.methods import MethodContext
from distillkit.networks import NetworkFactory
from distillkit.seeding import RunGenerators
from distillkit.synthetic import SyntheticSet
from distillkit.trainer import Trainer


def fyi_set(ipc: int = 2, factor: int = 1) -> tuple[SyntheticSet, object]:
    data = load_dataset("digits", image_size=8)
    syn = SyntheticSet.initialise(data, ipc, "real", torch.Generator().manual_seed(0), factor)
    syn.use_addons(build_addons({"fyi": {}}, "dm"))
    return syn, data


def test_batch_is_the_stored_images_then_their_mirrors():
    syn, _ = fyi_set()
    x, y = syn.batch()
    n = syn.images.shape[0]
    assert x.shape[0] == 2 * n
    assert torch.equal(x[:n], syn.images) and torch.equal(x[n:], syn.images.flip(-1))
    assert torch.equal(y, torch.cat([syn.labels, syn.labels]))
    rows_x, _ = syn.batch(syn.class_rows(3))
    assert rows_x.shape[0] == 2 * syn.ipc


def test_gradient_on_a_stored_image_is_g1_plus_flipped_g2():
    syn, _ = fyi_set()
    x, _ = syn.batch()
    n = syn.images.shape[0]
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    (x * weights).sum().backward()
    expected = weights[:n] + weights[n:].flip(-1)
    assert torch.allclose(syn.images.grad, expected)


def test_evaluation_trains_on_stored_images_only():
    syn, _ = fyi_set(ipc=3)
    images, labels = syn.training_set()
    assert images.shape[0] == 30 and torch.equal(images, syn.images.detach())


def test_dm_feeds_the_doubled_batch_to_its_network(monkeypatch):
    syn, data = fyi_set()
    gens = RunGenerators(0)
    networks = NetworkFactory("ConvNet", 1, 10, (8, 8), {"width": 8})
    cfg = {"lr_img": 1.0, "momentum": 0.5, "batch_real": 16, "iterations": 1}
    method = build_method("dm", MethodContext(cfg, data, syn, networks, None, gens))
    seen = []
    original = NetworkFactory.frozen

    def recording_frozen(self, generator):
        net = original(self, generator)
        embed = net.embed

        def spy(x):
            if x.requires_grad:  # the synthetic side
                seen.append(x.detach().clone())
            return embed(x)

        net.embed = spy
        return net

    monkeypatch.setattr(NetworkFactory, "frozen", recording_frozen)
    stored = syn.images.detach().clone()
    method.step(0)
    (batch,) = seen
    assert batch.shape[0] == 2 * stored.shape[0]
    assert torch.equal(batch[:20], stored) and torch.equal(batch[20:], stored.flip(-1))


def test_trainer_installs_fyi_and_keeps_ipc(tiny_config, tmp_path):
    trainer = Trainer(
        tiny_config("regularizer=fyi", "ipc=1", "unequalness.enabled=false"), tmp_path
    )
    assert len(trainer.synthetic.transforms) == 1
    results = trainer.run()
    assert results["regularizers"] == ["fyi"]
    saved, _ = SyntheticSet.load(tmp_path / "synthetic_set.pt")
    assert saved.images.shape[0] == 10


def test_flip_real_doubles_real_batches_only_when_asked(digits):
    data = digits
    x, y = data.sample_per_class(2, torch.Generator().manual_seed(0))
    for flip_real, rows in ((False, 20), (True, 40)):
        syn = SyntheticSet.initialise(data, 1, "real", torch.Generator().manual_seed(0))
        regs = build_addons({"fyi": {"flip_real": flip_real}}, "dm")
        ctx = MethodContext(
            {"lr_img": 1.0, "momentum": 0.5, "batch_real": 2},
            data,
            syn,
            NetworkFactory("ConvNet", 1, 10, (8, 8), {"width": 8}),
            None,
            RunGenerators(0),
            regs,
        )
        real, labels = build_method("dm", ctx).real_view(x, y)
        assert real.shape[0] == rows and labels.shape[0] == rows
        if flip_real:
            assert torch.equal(real[20:], x.flip(-1))


def test_evaluation_always_flip_switch_reaches_the_evaluation_augmentation(tiny_config, tmp_path):
    strategy = "dsa.strategy=color_crop_cutout_flip_scale_rotate"
    plain = Trainer(tiny_config(strategy), tmp_path / "a")
    flipping = Trainer(tiny_config(strategy, "eval.always_flip=true"), tmp_path / "b")
    assert not plain.eval_augment.always_flip
    assert flipping.eval_augment.always_flip
    assert not flipping.method.ctx.augment.always_flip
