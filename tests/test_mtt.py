"""MTT: the functional student, unrolled vs constant-memory gradients, FYI, resume, configs."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import MTT_PUBLISHED, build_addons, resumed_twin, student_batches

from distillkit.augment import DSA
from distillkit.data import load_dataset
from distillkit.experts import ExpertSettings, train_experts
from distillkit.methods.base import MethodContext
from distillkit.methods.mtt import FunctionalNetwork, TrajectoryMatching
from distillkit.networks import NetworkFactory
from distillkit.seeding import RunGenerators
from distillkit.synthetic import SyntheticSet
from distillkit.trainer import Trainer

STRATEGY = "color_crop_cutout_scale_rotate"


@pytest.fixture(scope="module")
def buffer_dir(tmp_path_factory, digits, factory) -> Path:
    """Two tiny experts of 3 epochs (width 8, 8x8 digits): well under a second."""
    directory = tmp_path_factory.mktemp("experts")
    gens = RunGenerators(0)
    train_experts(
        directory, digits, factory, DSA(STRATEGY), 2, ExpertSettings(epochs=3), 2,
        lambda i: gens[f"experts/{i}"],
    )  # fmt: skip
    return directory


def build_mtt(
    data, factory, buffer_dir, *, ipc=2, seed=1, dsa=True, fyi=False, double=False, **cfg
):
    """An MTT method wired as the trainer wires it (FYI installed on `synthetic.transforms`)."""
    gens = RunGenerators(seed)
    synthetic = SyntheticSet.initialise(data, ipc, "real", gens["init"])
    if double:
        synthetic.images = synthetic.images.detach().double().requires_grad_(True)
    regularizers = build_addons({"fyi": {}} if fyi else {}, "mtt")
    synthetic.use_addons(regularizers)
    settings = {
        "name": "mtt", "iterations": 3, "syn_steps": 3, "expert_epochs": 2, "max_start_epoch": 2,
        "lr_img": 100.0, "lr_lr": 1e-5, "lr_teacher": 0.01, "momentum": 0.5, "batch_syn": None,
        "mode": "unrolled", "buffer": str(buffer_dir), "dsa": dsa, **cfg,
    }  # fmt: skip
    ctx = MethodContext(
        settings, data, synthetic, factory, DSA(STRATEGY) if dsa else None, gens, regularizers
    )
    return TrajectoryMatching(ctx)


# -- the functional student ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, options",
    [("ConvNet", {"width": 8}), ("ConvNet", {"width": 8, "norm": "batchnorm"}), ("MLP", {})],
)
def test_functional_student_reproduces_the_module_forward_exactly(name, options):
    net = NetworkFactory(name, 1, 10, (8, 8), options)(torch.Generator().manual_seed(0))
    net.train()
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    expected = net(x)
    student = FunctionalNetwork(net)
    flat = student.flatten()
    assert flat.shape == (sum(p.numel() for p in net.parameters()),)
    assert torch.equal(student(flat, x), expected)
    # A moved vector moves the output, and the gradient reaches the flat vector.
    flat = flat.clone().requires_grad_(True)
    grad = torch.autograd.grad(student(flat, x).square().sum(), flat)[0]
    assert grad.shape == flat.shape and grad.abs().sum() > 0


# -- constant memory vs unrolled ----------------------------------------------------------------
def _gradients(mode, lr, digits, factory, buffer_dir):
    method = build_mtt(
        digits, factory, buffer_dir, double=True, syn_steps=4, lr_teacher=lr, mode=mode
    )
    start, target, _, _ = method.buffer.sample(method.generator, 2, 2)
    loss = getattr(method, mode)(start.double(), target.double())
    return loss.detach(), method.synthetic.images.grad.clone(), method.syn_lr.grad.clone()


def test_constant_memory_gradient_equals_unrolled_to_first_order(digits, factory, buffer_dir):
    """Both modes see the same expert, start epoch, batches and DSA draws (same seed), in float64.

    The loss is exact in both. The gradients differ only by the terms constant_memory drops: how
    step i's images move the later iterates W_j (j > i) and hence their gradients g_j. Those terms
    carry an extra factor α·H (H the loss curvature), so the relative gap is O(α·N): measured
    ~1.9e-3 at α = 1e-3 and ~1.9e-4 at α = 1e-4 (N = 4). Tolerances: at α = 1e-3 relative error
    < 1e-2 and cosine > 0.9999 for the image gradient, relative error < 1e-2 for dL/dα; and the
    gap must shrink about tenfold with α (< 0.2x for α / 10), which is what "equal to first
    order" means and what a bug (a wrong factor, a wrong replayed batch) would not do.
    """
    errors = {}
    for lr in (1e-3, 1e-4):
        loss_u, img_u, alpha_u = _gradients("unrolled", lr, digits, factory, buffer_dir)
        loss_c, img_c, alpha_c = _gradients("constant_memory", lr, digits, factory, buffer_dir)
        assert torch.allclose(loss_u, loss_c, rtol=1e-12, atol=0)
        img_rel = float((img_u - img_c).norm() / img_u.norm())
        alpha_rel = float((alpha_u - alpha_c).abs() / alpha_u.abs())
        cosine = float(F.cosine_similarity(img_u.flatten(), img_c.flatten(), dim=0))
        errors[lr] = (img_rel, alpha_rel)
        if lr == 1e-3:
            assert img_rel < 1e-2 and alpha_rel < 1e-2 and cosine > 0.9999, errors
    assert errors[1e-4][0] < 0.2 * errors[1e-3][0], errors
    assert errors[1e-4][1] < 0.2 * errors[1e-3][1], errors


@pytest.mark.parametrize("mode", ["unrolled", "constant_memory"])
def test_step_updates_images_and_learned_lr(mode, digits, factory, buffer_dir):
    method = build_mtt(digits, factory, buffer_dir, mode=mode)
    before = method.synthetic.images.detach().clone()
    losses = method.step(0)
    assert set(losses) == {"loss", "lr"} and torch.isfinite(losses["loss"])
    assert not torch.equal(before, method.synthetic.images.detach())
    assert isinstance(method.eval_lr, float) and method.eval_lr != pytest.approx(0.01, abs=0)


# -- FYI ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["unrolled", "constant_memory"])
@pytest.mark.parametrize("batch_syn", [None, 10])
def test_fyi_student_batches_have_batch_syn_rows_second_half_mirrored(
    mode, batch_syn, digits, factory, buffer_dir
):
    """FYI for MTT: half of batch_syn stored rows are sampled, then doubled by the flip."""
    method = build_mtt(
        digits, factory, buffer_dir, fyi=True, dsa=False, mode=mode, batch_syn=batch_syn
    )
    expected_rows = batch_syn or method.synthetic.images.shape[0]  # ipc 2: 20 stored rows
    seen = student_batches(method)
    calls = method.syn_steps * (2 if mode == "constant_memory" else 1)
    assert len(seen) == calls
    for x in seen:
        half = expected_rows // 2
        assert x.shape[0] == expected_rows
        assert torch.equal(x[half:], x[:half].flip(-1))


# -- resume -------------------------------------------------------------------------------------
def test_state_dict_holds_both_optimisers_and_the_lr_and_resumes_exactly(
    digits, factory, buffer_dir
):
    a = build_mtt(digits, factory, buffer_dir, batch_syn=5)
    a.step(0)
    # Deep copies: on the CPU, state dicts alias the live tensors (a checkpoint file would not).
    state = copy.deepcopy(a.state_dict())
    assert {"optimiser_img", "optimiser_lr", "syn_lr"} <= set(state)
    assert state["optimiser_lr"]["state"], "the lr optimiser's momentum must be saved"
    _, b = resumed_twin(a, lambda: build_mtt(digits, factory, buffer_dir, batch_syn=5))
    assert b.eval_lr == float(state["syn_lr"])
    b.step(1)
    assert torch.equal(a.synthetic.images, b.synthetic.images)
    assert a.eval_lr == b.eval_lr


def test_insufficient_expert_epochs_are_refused(digits, factory, buffer_dir):
    with pytest.raises(ValueError, match="experts have 3 epochs.*need 4"):
        build_mtt(digits, factory, buffer_dir, max_start_epoch=3, expert_epochs=2)
    with pytest.raises(ValueError, match="method.mode"):
        build_mtt(digits, factory, buffer_dir, mode="tesla")


# -- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset, ipc", sorted(MTT_PUBLISHED))
def test_published_settings_are_picked_up_automatically(dataset, ipc):
    from helpers import compose_config

    cfg = compose_config(["method=mtt", f"dataset={dataset}", f"ipc={ipc}"])
    n, m, t, lr_img, lr_lr, lr_teacher, zca, batch_syn = MTT_PUBLISHED[(dataset, ipc)]
    method = cfg.method
    assert (method.syn_steps, method.expert_epochs, method.max_start_epoch) == (n, m, t)
    assert (method.lr_img, method.lr_lr, method.lr_teacher) == (lr_img, lr_lr, lr_teacher)
    assert method.batch_syn == batch_syn and cfg.dataset.zca is zca
    assert method.buffer == f"buffers/{dataset}/ConvNet_zca-{zca}"


def test_default_buffer_path_matches_the_experts_default():
    from helpers import compose_config
    from hydra import compose, initialize_config_module

    mtt = compose_config(["method=mtt", "dataset=cifar10", "ipc=1"])
    with initialize_config_module(config_module="distillkit.conf", version_base="1.3"):
        experts = compose("experts", overrides=["dataset=cifar10", "dataset.zca=true"])
    assert experts.buffer_dir == mtt.method.buffer


# -- end to end ---------------------------------------------------------------------------------
def test_saved_set_carries_the_learned_lr_and_zca(tiny_config, tmp_path, factory):
    data = load_dataset("digits", image_size=8, zca=True)
    gens = RunGenerators(0)
    buffer = tmp_path / "buffer"
    train_experts(
        buffer, data, factory, None, 1, ExpertSettings(epochs=2), 1, lambda i: gens[f"e/{i}"]
    )
    cfg = tiny_config(
        "method=mtt", "ipc=1", "dataset.zca=true", f"method.buffer={buffer}",
        "method.syn_steps=2", "method.max_start_epoch=1", "unequalness.enabled=false",
        "images.flips=false",
    )  # fmt: skip
    results = Trainer(cfg, tmp_path / "run").run()
    synthetic, saved = SyntheticSet.load(tmp_path / "run" / "synthetic_set.pt")
    assert saved["lr"] == results["eval_lr"] and saved["lr"] != 0.01
    assert saved["meta"]["zca"] is True
    reloaded = load_dataset("digits", image_size=8, zca_state=saved["zca"])
    assert torch.equal(reloaded.test_images, data.test_images)
    assert synthetic.images.shape == (10, 1, 8, 8)
    assert results["best"]["mean"] == results["headline"]["mean"]
    assert "test set" in results["best"]["selection"]


def test_mtt_buffer_for_other_data_fails_before_any_work(tiny_config, tmp_path, buffer_dir):
    """The shared buffer was trained without ZCA: a ZCA run must refuse it, naming the file."""
    cfg = tiny_config("method=mtt", "ipc=1", "dataset.zca=true", f"method.buffer={buffer_dir}")
    with pytest.raises(ValueError, match=r"experts_00000\.pt.*zca=False.*zca=True"):
        Trainer(cfg, tmp_path)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
