"""Stacked evaluation: the same draws and the same accuracies as training models one by one."""

from __future__ import annotations

import pytest
import torch
from helpers import evaluate_quietly

from distillkit.augment import DSA
from distillkit.evaluation import EvalSettings, evaluate_set
from distillkit.evaluation.protocol import test_accuracy as accuracy_of
from distillkit.evaluation.protocol import train_network
from distillkit.evaluation.stacked import (
    StackedModels,
    stacked_accuracies,
    supports_stacking,
    train_stacked,
)
from distillkit.networks import NetworkFactory


def subset(data, n):
    return data.sample_per_class(n, torch.Generator().manual_seed(0))


def sequential(factory, images, labels, settings, augment, seed, num_models):
    generator = torch.Generator().manual_seed(seed)
    nets = [
        train_network(factory, images, labels, settings, augment, generator)
        for _ in range(num_models)
    ]
    return nets, generator


def max_param_difference(nets, stacked):
    return max(
        float((p.detach() - stacked.params[name][m].detach()).abs().max())
        for m, net in enumerate(nets)
        for name, p in net.named_parameters()
    )


@pytest.mark.parametrize(
    ("name", "options"),
    [("ConvNet", {"width": 8, "depth": 2}), ("ConvNetBN", {"width": 8, "depth": 2}), ("MLP", {})],
)
def test_stacked_training_matches_sequential_for_the_same_seed(digits, name, options):
    """Same init, same data order and DSA draws: weights equal up to float rounding, the same
    accuracies, and the caller's generator left where the sequential loop leaves it."""
    images, labels = subset(digits, 5)
    factory = NetworkFactory(name, 1, 10, (8, 8), options)
    settings = EvalSettings(epochs=6, batch_size=16, lr=0.05)
    augment = DSA("color_crop_cutout_scale_rotate")
    nets, seq_gen = sequential(factory, images, labels, settings, augment, 3, 3)
    stacked_gen = torch.Generator().manual_seed(3)
    stacked = train_stacked(factory, images, labels, settings, augment, stacked_gen, 3)
    assert torch.equal(seq_gen.get_state(), stacked_gen.get_state())
    # Grouped convolutions / batched matmuls may round differently: a few ulps, not a drift.
    assert max_param_difference(nets, stacked) < 1e-4
    seq_acc = [accuracy_of(n, digits.test_images, digits.test_labels, 256) for n in nets]
    assert stacked_accuracies(stacked, digits.test_images, digits.test_labels, 256) == seq_acc


def test_stacked_initial_weights_are_the_sequential_ones(digits):
    factory = NetworkFactory("ConvNet", 1, 10, (8, 8), {"width": 8, "depth": 2})
    settings = EvalSettings(epochs=0)
    images, labels = subset(digits, 1)
    stacked = train_stacked(
        factory, images, labels, settings, None, torch.Generator().manual_seed(5), 2
    )
    generator = torch.Generator().manual_seed(5)
    for m in range(2):
        net = factory(generator)
        for name, p in net.named_parameters():
            assert torch.equal(p.detach(), stacked.params[name][m].detach())


def test_evaluate_set_stacked_equals_sequential(digits):
    """The protocol's switch: identical accuracies per model, and more models than one stack."""
    images, labels = subset(digits, 3)
    factory = NetworkFactory("ConvNet", 1, 10, (8, 8), {"width": 8, "depth": 2})
    augment = DSA("color_crop_cutout_scale_rotate")

    def run(stacked):
        settings = EvalSettings(
            models=("ConvNet", "MLP"), num_models=3, epochs=5, batch_size=16, stacked=stacked
        )
        return evaluate_quietly(images, labels, digits, factory, settings, augment, 0)

    seq, stk = run(False), run(True)
    for arch in ("ConvNet", "MLP"):
        assert stk[arch]["runs"] == pytest.approx(seq[arch]["runs"], abs=1e-9)


def test_stacked_groups_follow_the_sequential_draws(digits, monkeypatch):
    """Models beyond one stack (MAX_STACK) continue the same generator stream."""
    import distillkit.evaluation.protocol as protocol

    monkeypatch.setattr(protocol, "MAX_STACK", 2)
    images, labels = subset(digits, 2)
    factory = NetworkFactory("MLP", 1, 10, (8, 8))
    settings = EvalSettings(models=("MLP",), num_models=3, epochs=3, batch_size=8, stacked=True)
    stacked = evaluate_set(
        images, labels, digits, factory, settings, None, torch.Generator().manual_seed(1),
        progress=False,
    )  # fmt: skip
    settings = EvalSettings(models=("MLP",), num_models=3, epochs=3, batch_size=8)
    seq = evaluate_set(
        images, labels, digits, factory, settings, None, torch.Generator().manual_seed(1),
        progress=False,
    )  # fmt: skip
    assert stacked["MLP"]["runs"] == pytest.approx(seq["MLP"]["runs"], abs=1e-9)


def test_stacked_forward_equals_each_network(digits):
    factory = NetworkFactory("ConvNet", 1, 10, (8, 8), {"width": 8, "depth": 2})
    nets = [factory(torch.Generator().manual_seed(s)) for s in range(2)]
    stacked = StackedModels(nets)
    x = digits.test_images[:7]
    logits = stacked.shared(x)
    per_model = stacked(x.unsqueeze(0).expand(2, *x.shape))
    for m, net in enumerate(nets):
        assert torch.allclose(net(x), logits[m], atol=1e-5)
        assert torch.allclose(net(x), per_model[m], atol=1e-5)
    assert supports_stacking(nets[0])
    assert not supports_stacking(torch.nn.Sequential(torch.nn.Dropout()))


def test_auto_stacks_on_cuda_only_and_grouped_path_for_convnets():
    from distillkit.evaluation.stacked import use_stacked

    conv = NetworkFactory("ConvNet", 1, 10, (8, 8), {"width": 8, "depth": 2})(
        torch.Generator().manual_seed(0)
    )
    mlp = NetworkFactory("MLP", 1, 10, (8, 8))(torch.Generator().manual_seed(0))
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert StackedModels([conv]).layers is not None and StackedModels([mlp]).layers is None
    assert not use_stacked(conv, "auto", cpu) and not use_stacked(mlp, "auto", cpu)
    assert use_stacked(mlp, "auto", cuda) and use_stacked(conv, True, cpu)
    assert not use_stacked(conv, False, cuda)
    with pytest.raises(ValueError, match="eval.stacked"):
        use_stacked(conv, "sometimes", cpu)
