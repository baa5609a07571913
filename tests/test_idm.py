"""IDM: the model queue, the percent-weighted CE term, decoded mosaics, per-class steps, resume."""

from __future__ import annotations

import io
import json

import pytest
import torch
from helpers import build_method, compose_config, crash_at

from distillkit.augment import DSA
from distillkit.data import load_dataset
from distillkit.methods import MethodContext
from distillkit.networks import NetworkFactory
from distillkit.seeding import RunGenerators
from distillkit.synthetic import SyntheticSet

K = 10
DATA = load_dataset("digits", image_size=8)


def make_idm(seed: int = 0, ipc: int = 1, dsa: bool = True, **overrides):
    gens = RunGenerators(seed)
    syn = SyntheticSet.initialise(DATA, ipc, "real", gens["init"], factor=2)
    networks = NetworkFactory("ConvNet", 1, K, (8, 8), {"width": 8})
    augment = DSA("color_crop_cutout_scale_rotate") if dsa else None
    cfg = {
        "name": "idm",
        "batch_real": 16,
        "batch_train": 32,
        "net_num": 5,
        "net_generate_interval": 3,
        "nets_trained_per_iteration": 2,
        "model_train_steps": 3,
        **overrides,
    }
    method = build_method("idm", MethodContext(cfg, DATA, syn, networks, augment, gens))
    return method, syn


def test_queue_starts_at_three_pushes_every_interval_and_drops_the_oldest():
    method, _ = make_idm(net_num=5, net_generate_interval=3, model_train_steps=1)
    assert len(method.queue) == 3
    sizes, first = [], []
    for i in range(10):
        before = [m.net for m in method.queue.members]
        method.step(i)
        after = [m.net for m in method.queue.members]
        sizes.append(len(method.queue))
        first.append(after[0])
        if i % 3 == 0:  # pushed: the new net is last, the old order is kept
            assert after[-1] not in before and after[:-1] == before[-len(after) + 1 :]
        else:
            assert after == before
    # pushes at iterations 0, 3, 6, 9: 4, 5, then the oldest goes each time
    assert sizes == [4, 4, 4, 5, 5, 5, 5, 5, 5, 5]
    assert first[6] is not first[5] and first[9] is not first[8]


def test_each_iteration_trains_nets_trained_per_iteration_nets_for_model_train_steps_each():
    method, _ = make_idm(
        net_generate_interval=100, nets_trained_per_iteration=2, model_train_steps=4
    )
    method.step(1)  # no push at iteration 1
    steps: dict[int, int] = {}
    for index, member in enumerate(method.queue.members):
        member.optimiser.register_step_post_hook(
            lambda *_, i=index: steps.__setitem__(i, steps.get(i, 0) + 1)
        )
    seen = [m.seen for m in method.queue.members]
    weights = [[p.detach().clone() for p in m.net.parameters()] for m in method.queue.members]
    method.step(2)
    assert len(steps) == 2 and set(steps.values()) == {4}
    for index, member in enumerate(method.queue.members):
        trained = index in steps
        assert member.seen - seen[index] == (4 * 32 if trained else 0)
        params = zip(member.net.parameters(), weights[index], strict=True)
        moved = any(not torch.equal(p, q) for p, q in params)
        assert moved == trained  # the matching net's weights never move in matching
        assert all(p.requires_grad for p in member.net.parameters())
        assert 0.0 <= float(member.accuracy) <= 100.0
    assert method.synthetic.images.requires_grad
    assert all(
        p is method.synthetic.images for g in method.optimiser.param_groups for p in g["params"]
    )


def test_running_accuracy_is_in_percent():
    method, _ = make_idm()
    member = method.queue.members[0]
    assert float(member.accuracy) == 0.0  # no training yet: the term is off, as in the paper
    member.correct.fill_(16.0)
    member.seen = 32
    assert float(member.accuracy) == pytest.approx(50.0)
    method.queue.train(DATA.train_images, DATA.train_labels, 3, 30, 64)
    accuracies = [float(m.accuracy) for m in method.queue.members if m.seen > 32]
    assert accuracies and all(10.0 < a <= 100.0 for a in accuracies)  # percent, not a fraction


def test_running_accuracies_reset_every_interval():
    method, _ = make_idm(accuracy_reset_interval=2, model_train_steps=1, net_generate_interval=100)
    method.step(0)
    method.step(1)
    assert sum(m.seen for m in method.queue.members) == 2 * 2 * 32
    losses = method.step(2)  # reset first: the matching net has no accuracy, so no CE term
    assert float(losses["net_acc"]) == 0.0
    assert sorted(m.seen for m in method.queue.members) == [0, 0, 32, 32][-len(method.queue) :]


def test_running_accuracies_reset_only_at_the_listed_iterations():
    # VincenDen/IID IDM+ours/IDM_cifar10_IID.py: reset in the evaluation block, whose points are
    # eval_it_pool = [2000, 5000, 10000, 20000], before that iteration's update.
    method, _ = make_idm(accuracy_reset_at=[2000, 5000, 10000, 20000])
    resets = [it for it in range(20001) if method.resets_accuracy_at(it)]
    assert resets == [2000, 5000, 10000, 20000]
    method, _ = make_idm(accuracy_reset_interval=500)
    assert [it for it in range(2001) if method.resets_accuracy_at(it)] == [500, 1000, 1500, 2000]
    with pytest.raises(ValueError, match="accuracy_reset_at"):
        make_idm(accuracy_reset_at=[0, 100])


@pytest.mark.parametrize("train_dsa", [False, True])
def test_queue_training_uses_per_sample_dsa_only_when_asked(train_dsa):
    calls = []

    class Spy(DSA):
        def __call__(self, x, generator):
            calls.append(x.shape[0])
            return super().__call__(x, generator)

    method, _ = make_idm(train_dsa=train_dsa, model_train_steps=2)
    method.ctx.augment = Spy("color_crop_cutout_scale_rotate")
    method.step(1)
    assert calls == ([32] * 4 if train_dsa else [])


def test_ce_term_is_weighted_by_ce_weight_times_accuracy_in_percent():
    """The first class's gradient equals that of match + ce_weight * 50 * CE at 50% accuracy."""
    method, syn = make_idm(
        dsa=False, initial_nets=1, net_num=1, nets_trained_per_iteration=0, ce_weight=0.3
    )
    member = method.queue.members[0]
    member.correct.fill_(8.0)
    member.seen = 16
    grads = []
    method.optimiser.register_step_pre_hook(lambda *_: grads.append(syn.images.grad.clone()))
    initial = syn.images.detach().clone()
    state = method.generator.get_state()
    losses = method.step(1)  # no push, no training: the only net is the matching net
    assert float(losses["net_acc"]) == pytest.approx(50.0)
    total = losses["match"] + 0.3 * 50.0 * losses["ce"]
    assert torch.allclose(losses["loss"], total, rtol=1e-5)
    # Replay class 0 (the first step, so at the initial images) with the same draws.
    method.generator.set_state(state)
    assert method.queue.sample() is member
    real, _ = DATA.sample_per_class(method.batch_real, method.generator)
    method.synthetic = SyntheticSet(initial, syn.labels, syn.ipc, K, factor=2)
    member.net.requires_grad_(False)
    match, ce = method.class_losses(member.net, 0, real[: method.batch_real])
    images = method.synthetic.images
    (expected,) = torch.autograd.grad(match + 0.3 * 50.0 * ce, images, retain_graph=True)
    assert torch.allclose(grads[0], expected, rtol=1e-4, atol=1e-7)
    (as_fraction,) = torch.autograd.grad(match + 0.3 * 0.5 * ce, images)
    assert not torch.allclose(grads[0], as_fraction, rtol=1e-2)


def test_matching_sees_four_decoded_images_per_stored_image_through_batch():
    method, syn = make_idm(ipc=2)
    shapes = []

    def record(x, y):
        shapes.append((tuple(x.shape), y.tolist()))
        return x, y

    syn.transforms = [record]
    method.step(0)
    assert len(shapes) == K  # one decoded batch per class
    for c, (shape, labels) in enumerate(shapes):
        assert shape == (8, 1, 8, 8) and labels == [c] * 8


def test_one_optimiser_step_per_class_uses_only_that_class_loss():
    method, syn = make_idm(ipc=2)
    rows_with_grad = []

    def record(*_):
        nonzero = syn.images.grad.flatten(1).abs().sum(1) > 0
        rows_with_grad.append(torch.nonzero(nonzero).flatten().tolist())

    method.optimiser.register_step_pre_hook(record)
    before = syn.images.detach().clone()
    method.step(0)
    assert rows_with_grad == [[2 * c, 2 * c + 1] for c in range(K)]
    changed = (syn.images.detach() - before).flatten(1).abs().sum(1) > 0
    assert bool(changed.all())


def test_resume_from_state_gives_identical_synthetic_images():
    def run(method, start, stop):
        for i in range(start, stop):
            method.step(i)

    full, full_syn = make_idm(net_num=4, net_generate_interval=2)
    rng = torch.get_rng_state()
    run(full, 0, 6)
    assert torch.equal(torch.get_rng_state(), rng)  # no draw from the global RNG

    first, first_syn = make_idm(net_num=4, net_generate_interval=2)
    run(first, 0, 3)
    buffer = io.BytesIO()
    torch.save({"synthetic": first_syn.state_dict(), "method": first.state_dict()}, buffer)
    run(first, 3, 4)  # keep going: the saved state must not follow
    buffer.seek(0)
    state = torch.load(buffer, weights_only=False)
    assert len(state["method"]["queue"]["members"]) == 4

    resumed, resumed_syn = make_idm(net_num=4, net_generate_interval=2)
    resumed_syn.load_state_dict(state["synthetic"])
    resumed.load_state_dict(state["method"])
    run(resumed, 3, 6)
    assert torch.equal(resumed_syn.images, full_syn.images)
    for a, b in zip(resumed.queue.members, full.queue.members, strict=True):
        assert a.seen == b.seen and torch.equal(a.correct, b.correct)
        params = zip(a.net.parameters(), b.net.parameters(), strict=True)
        assert all(torch.equal(p, q) for p, q in params)


def test_trainer_distils_and_evaluates_the_decoded_set(tiny_config, tmp_path, monkeypatch):
    import distillkit.trainer as trainer_module

    evaluated = []
    original = trainer_module.evaluate_set

    def recording(images, labels, *args, **kwargs):
        evaluated.append((tuple(images.shape), torch.bincount(labels, minlength=K).tolist()))
        return original(images, labels, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "evaluate_set", recording)
    cfg = tiny_config(
        "method=idm",
        "ipc=1",
        "method.batch_train=32",
        "method.model_train_steps=2",
        "unequalness.enabled=false",
    )
    trainer = trainer_module.Trainer(cfg, tmp_path)
    assert trainer.synthetic.factor == 2
    trainer.run()
    assert evaluated == [((40, 1, 8, 8), [4] * K)]
    saved, _ = SyntheticSet.load(tmp_path / "synthetic_set.pt")
    assert saved.images.shape == (10, 1, 8, 8) and saved.factor == 2
    assert saved.training_set()[0].shape == (40, 1, 8, 8)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["method"] == "idm" and results["config"]["method"]["factor"] == 2
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert len(checkpoint["method"]["queue"]["members"]) == 4  # 3 + the push at iteration 0


def test_trainer_checkpoint_resumes_an_interrupted_run_exactly(tiny_config, tmp_path):
    from distillkit.trainer import Trainer

    overrides = (
        "method=idm",
        "ipc=1",
        "method.iterations=5",
        "method.net_generate_interval=2",
        "method.net_num=4",
        "method.batch_train=32",
        "method.model_train_steps=2",
        "checkpoint.every=2",
        "eval.num_models=0",
        "unequalness.enabled=false",
    )
    Trainer(tiny_config(*overrides), tmp_path / "full").run()
    interrupted = Trainer(tiny_config(*overrides), tmp_path / "resumed")
    crash_at(interrupted, 3, KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        interrupted.run()
    resumed = Trainer(tiny_config(*overrides), tmp_path / "resumed")  # resumes as it is built
    assert resumed.start_iteration == 2 and len(resumed.method.queue) == 4
    resumed.run()
    full = SyntheticSet.load(tmp_path / "full" / "synthetic_set.pt")[0]
    again = SyntheticSet.load(tmp_path / "resumed" / "synthetic_set.pt")[0]
    assert torch.equal(full.images, again.images)


def test_published_values_compose_per_setting():
    cfg = compose_config(["method=idm", "dataset=cifar10", "ipc=1"])
    m = cfg.method
    assert (m.ce_weight, m.batch_real, m.net_generate_interval) == (0.5, 5000, 5)
    assert (m.lr_img, m.momentum, m.factor, m.iterations) == (0.2, 0.5, 2, 20000)
    assert (m.net_num, m.nets_trained_per_iteration, m.model_train_steps, m.batch_train) == (
        100,
        2,
        10,
        256,
    )
    m = compose_config(["method=idm", "dataset=cifar100", "ipc=10"]).method
    assert (m.ce_weight, m.model_train_steps, m.batch_real) == (0.1, 50, 256)
    m = compose_config(["method=idm", "dataset=tinyimagenet", "ipc=50"]).method
    assert (m.ce_weight, m.model_train_steps) == (0.8, 50)
    m = compose_config(["method=idm", "dataset=cifar10", "ipc=50", "method.ce_weight=0.2"]).method
    assert m.ce_weight == 0.2  # still overridable
    m = compose_config(["method=idm", "dataset=digits", "ipc=10"]).method
    assert (m.ce_weight, m.net_generate_interval) == (0.5, 30)
