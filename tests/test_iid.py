"""IID: covariance matching and class centralisation as loss add-ons of DM and IDM."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from helpers import build_addons, build_method

import distillkit.addons.covariance as covariance
from distillkit.addons import AddOn, LossContext, SetupContext
from distillkit.addons.centralisation import class_centralisation
from distillkit.addons.covariance import class_covariances, covariance_matching
from distillkit.augment import DSA
from distillkit.classwise import class_means
from distillkit.data import load_dataset
from distillkit.methods import MethodContext
from distillkit.networks import NetworkFactory
from distillkit.seeding import RunGenerators
from distillkit.synthetic import SyntheticSet
from distillkit.trainer import Trainer

STRATEGY = "color_crop_cutout_scale_rotate"
DATA = load_dataset("digits", image_size=8)


@pytest.fixture(scope="module")
def pool_dir(tiny_pool) -> Path:
    return tiny_pool


def iid_cfg(pool: Path, **weights: float) -> dict:
    return {
        "cc": {"weight": {"dm": 0.05, "idm": 0.01, **weights}, "pool": str(pool)},
        "cm": {"weight": {"dm": 0.01, "idm": 0.03}},
    }


def make_method(name: str, reg_cfg: dict, ipc: int = 2, dsa: bool = True, seed: int = 0):
    gens = RunGenerators(seed)
    factor = 2 if name == "idm" else 1
    syn = SyntheticSet.initialise(DATA, ipc, "real", gens["init"], factor=factor)
    regs = build_addons(reg_cfg, name)
    syn.use_addons(regs)
    networks = NetworkFactory("ConvNet", 1, 10, (8, 8), {"width": 16})
    cfg = {"name": name, "lr_img": 1.0, "momentum": 0.5, "batch_real": 16, "iterations": 5}
    if name == "idm":
        cfg.update(batch_train=32, net_num=3, model_train_steps=1, nets_trained_per_iteration=1)
    augment = DSA(STRATEGY) if dsa else None
    ctx = MethodContext(cfg, DATA, syn, networks, augment, gens, regs)
    return build_method(name, ctx), syn, regs


# -- covariance matching ------------------------------------------------------------------------
def direct_covariance(maps: torch.Tensor) -> torch.Tensor:
    """(1/m) sum_k sum_p (z_kp - zbar_p)(z_kp - zbar_p)^T, one image and one position at a time."""
    m, c = maps.shape[:2]
    z = maps.reshape(m, c, -1)
    zbar = z.mean(0)
    cov = torch.zeros(c, c, dtype=maps.dtype)
    for k in range(m):
        for p in range(z.shape[2]):
            d = z[k, :, p] - zbar[:, p]
            cov += torch.outer(d, d)
    return cov / m


@pytest.mark.parametrize("chunk", [256, 3])
def test_class_covariance_equals_a_direct_per_position_computation(monkeypatch, chunk):
    monkeypatch.setattr(covariance, "CHUNK", chunk)
    gen = torch.Generator().manual_seed(0)
    maps = torch.randn(17, 5, 2, 3, generator=gen, dtype=torch.float64)
    labels = torch.tensor([2, 0, 1, 2, 2, 0, 1, 1, 0, 2, 3, 0, 1, 2, 0, 1, 2])  # any order
    cov, counts = class_covariances(maps, labels, 5)
    assert counts.tolist() == [5, 5, 6, 1, 0]
    for c in range(4):
        assert torch.allclose(cov[c], direct_covariance(maps[labels == c]), atol=1e-10)
    assert torch.equal(cov[3], torch.zeros(5, 5, dtype=torch.float64))  # one image: degenerate
    assert torch.equal(cov[4], torch.zeros(5, 5, dtype=torch.float64))  # absent class


def test_covariance_matching_is_the_squared_frobenius_distance_of_classes_with_two_rows():
    gen = torch.Generator().manual_seed(1)
    real = torch.randn(12, 4, 2, 2, generator=gen, dtype=torch.float64)
    real_labels = torch.arange(3).repeat_interleave(4)
    syn = torch.randn(5, 4, 2, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    syn_labels = torch.tensor([0, 1, 0, 1, 2])  # class 2 has one synthetic row: skipped
    expected = sum(
        (direct_covariance(real[real_labels == c]) - direct_covariance(syn[syn_labels == c]))
        .pow(2)
        .sum()
        for c in (0, 1)
    )
    loss = covariance_matching(real, real_labels, syn, syn_labels, 3)
    assert torch.allclose(loss, expected)
    loss.backward()
    assert syn.grad[:4].abs().sum(dim=(1, 2, 3)).gt(0).all() and syn.grad[4].abs().sum() == 0


def test_class_centralisation_linear_and_exp_forms():
    gen = torch.Generator().manual_seed(2)
    feats = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 1, 1, 0, 2])
    d = torch.zeros(7, dtype=torch.float64)
    for c in (0, 1):
        rows = labels == c
        d[rows] = (feats[rows] - feats[rows].mean(0)).pow(2).sum(1)
    linear = class_centralisation(feats, labels, 3)
    assert torch.allclose(linear, d.sum())  # a sum over samples; class 2 (one row) adds 0
    exp = class_centralisation(feats, labels, 3, form="exp", tau=0.5)
    assert torch.allclose(exp, (torch.exp(0.5 * d[:6]) - 1).clamp_min(0).sum())
    thresholded = class_centralisation(feats, labels, 3, form="linear", beta=1.0)
    assert torch.allclose(thresholded, (d - 1).clamp_min(0).sum())


# -- wiring into DM and IDM ---------------------------------------------------------------------
def test_both_terms_are_zero_with_zero_gradient_at_one_image_per_class(pool_dir):
    with pytest.warns(UserWarning, match="cc, cm with method 'dm'.*identically 0") as record:
        method, syn, regs = make_method("dm", iid_cfg(pool_dir), ipc=1)
    assert len([w for w in record if "identically 0" in str(w.message)]) == 1  # once
    net = method.ctx.networks.frozen(torch.Generator().manual_seed(1))
    terms = method.matching_terms(net)
    assert terms["cc"].item() == 0.0 and terms["cm"].item() == 0.0
    (grad,) = torch.autograd.grad(terms["regularizers"], syn.images, allow_unused=True)
    assert grad is None or torch.count_nonzero(grad) == 0


def test_with_fyi_at_ipc_1_the_terms_live_and_nothing_is_warned(pool_dir):
    from distillkit.pool import UnpublishedPoolWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", UnpublishedPoolWarning)  # the test pool is a tiny one
        method, syn, _ = make_method("dm", {"fyi": {}, **iid_cfg(pool_dir)}, ipc=1)
    net = method.ctx.networks.frozen(torch.Generator().manual_seed(1))
    terms = method.matching_terms(net)
    assert terms["cc"].item() > 0 and terms["cm"].item() > 0


@pytest.mark.parametrize("term", ["cc", "cm"])
@pytest.mark.parametrize("name", ["dm", "idm"])
def test_the_gradient_of_each_term_reaches_every_synthetic_image(pool_dir, term, name):
    cfg = {term: iid_cfg(pool_dir)[term]}
    method, syn, _ = make_method(name, cfg, ipc=2)
    net = method.ctx.networks.frozen(torch.Generator().manual_seed(2))
    if name == "dm":
        value = method.matching_terms(net)[term]
    else:  # IDM: one class per step, its term covers that class's images only
        real = DATA.sample_class(3, 16, torch.Generator().manual_seed(0))
        value = method.class_terms(net, 3, real)[term]
    (grad,) = torch.autograd.grad(value, syn.images)
    moved = grad.flatten(1).abs().sum(1) > 0
    expected = torch.ones(20, dtype=torch.bool) if name == "dm" else syn.labels == 3
    assert torch.equal(moved, expected)


class Recorder(AddOn):
    """Keeps every context it is given (a test double for a loss add-on)."""

    name = "recorder"
    has_loss = True
    needs_feature_map = True

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.seen: list[LossContext] = []

    def loss(self, ctx: LossContext) -> torch.Tensor:
        self.seen.append(ctx)
        return ctx.syn_map.sum() * 0


#: A test add-on is named by its config, as any user's add-on is.
RECORDER = {"_target_": f"{__name__}.Recorder"}


def test_dm_add_ons_see_the_dm_terms_draw_and_forward_pass_with_fyi_rows():
    method, syn, regs = make_method("dm", {"fyi": {}, "recorder": RECORDER}, ipc=2)
    net = method.ctx.networks.frozen(torch.Generator().manual_seed(3))
    terms = method.matching_terms(net)
    (ctx,) = regs[1].seen
    assert ctx.syn.shape[0] == 40 and torch.equal(ctx.syn_labels, syn.labels.repeat(2))
    real_means = class_means(ctx.real_map.flatten(1), ctx.real_labels, 10)
    syn_means = class_means(ctx.syn_map.flatten(1), ctx.syn_labels, 10)
    assert torch.allclose((real_means - syn_means).pow(2).sum(), terms["match"], rtol=1e-5)
    assert not ctx.real_map.requires_grad and ctx.syn_map.requires_grad


def test_idm_add_ons_see_one_class_per_step_and_cc_draws_one_member_per_iteration(pool_dir):
    method, syn, regs = make_method("idm", {"fyi": {}, "recorder": RECORDER, **iid_cfg(pool_dir)})
    cc = next(r for r in regs if r.name == "cc")
    draws = []
    original = cc.pool.sample
    cc.pool.sample = lambda *a, **k: draws.append(1) or original(*a, **k)
    out = method.step(0)
    recorder = regs[1]
    assert len(recorder.seen) == 10 and len(draws) == 1
    for ctx in recorder.seen:  # 2 stored x 4 decoded x 2 (FYI) rows of one class
        assert ctx.num_classes == 1 and ctx.syn.shape[0] == 16 and int(ctx.syn_labels.max()) == 0
    assert {"cc", "cm", "match", "ce"} <= set(out)
    expected = out["match"] + 0.5 * out["net_acc"] * out["ce"] + 0.01 * out["cc"] + 0.03 * out["cm"]
    assert torch.allclose(out["loss"], expected, rtol=1e-4)


def test_dm_step_adds_the_published_weights(pool_dir):
    method, syn, regs = make_method("dm", iid_cfg(pool_dir))
    assert {r.name: r.weight for r in regs} == {"cc": 0.05, "cm": 0.01}
    out = method.step(0)
    expected = out["match"] + 0.05 * out["cc"] + 0.01 * out["cm"]
    assert torch.allclose(out["loss"], expected, rtol=1e-5)


def test_weights_follow_the_base_method_and_can_be_overridden(pool_dir):
    context = SetupContext(DATA.info, images_per_class=4)
    idm = build_addons(iid_cfg(pool_dir), "idm", context=context)
    assert {r.name: r.weight for r in idm} == {"cc": 0.01, "cm": 0.03}
    (cm,) = build_addons({"cm": {"weight": 0.2}}, "dm", context=context)
    assert cm.weight == 0.2
    with pytest.raises(ValueError, match="no weight for method 'idm'"):
        build_addons({"cm": {"weight": {"dm": 0.01}}}, "idm", context=context)


@pytest.mark.parametrize("name", ["cc", "cm"])
@pytest.mark.parametrize("method", ["dc", "dsa", "mtt", "random"])
def test_unsupported_base_methods_fail_with_a_clear_message(name, method):
    with pytest.raises(ValueError, match=f"{name}' cannot be combined with method '{method}'"):
        build_addons({name: {}}, method)


# -- through the trainer ------------------------------------------------------------------------
def test_a_run_with_fyi_and_iid_logs_both_terms(tiny_config, tmp_path, pool_dir):
    cfg = tiny_config(
        "regularizer=[fyi,iid]", "ipc=2", f"regularizer.cc.pool={pool_dir}",
        "unequalness.enabled=false", "log_every=1",
    )  # fmt: skip
    results = Trainer(cfg, tmp_path).run()
    assert results["regularizers"] == ["cc", "cm", "fyi"]
    logged = (tmp_path / "metrics.jsonl").read_text()
    assert "train/cc" in logged and "train/cm" in logged


def test_a_missing_pool_fails_at_start_up_naming_the_command(tiny_config, tmp_path):
    cfg = tiny_config("regularizer=iid", f"regularizer.cc.pool={tmp_path / 'none'}")
    with pytest.raises(FileNotFoundError, match="distillkit-pretrain dataset=digits"):
        Trainer(cfg, tmp_path / "run")


def test_iid_with_dc_fails_at_start_up(tiny_config, tmp_path):
    with pytest.raises(ValueError, match="'cc' cannot be combined with method 'dc'"):
        Trainer(tiny_config("method=dc", "regularizer=iid"), tmp_path)


# -- the t-SNE picture --------------------------------------------------------------------------
def test_tsne_draws_real_and_synthetic_pool_features_and_measures_spread(
    pool_dir, tmp_path, capsys
):
    from distillkit.cli.tsne import main

    gens = RunGenerators(0)
    spread_out = SyntheticSet.initialise(DATA, 3, "real", gens["a"])
    centred = SyntheticSet.initialise(DATA, 3, "real", gens["b"])
    with torch.no_grad():  # every class's images identical: no spread at all
        centred.images.copy_(centred.images[::3].repeat_interleave(3, 0))
    config = {"dataset": {"name": "digits", "image_size": 8}}
    paths = [spread_out.save(tmp_path / "a.pt", config=config),
             centred.save(tmp_path / "b.pt", config=config)]  # fmt: skip
    output = tmp_path / "tsne.png"
    main([*map(str, paths), "--labels", "DM", "centred", "--pool", str(pool_dir),
          "--real-per-class", "12", "--device", "cpu", "--output", str(output)])  # fmt: skip
    printed = capsys.readouterr().out
    assert output.stat().st_size > 0
    ratios = [float(line.split("ratio ")[1].split()[0]) for line in printed.splitlines()[:2]]
    assert ratios[0] > 0.1 and ratios[1] == 0.0
