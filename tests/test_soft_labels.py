"""Soft-label evaluation (`eval.labels=soft`): losses, teacher, and hard labels unchanged."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import TINY, compose_config, evaluate_quietly
from torch import nn

from distillkit.errors import ConfigError, InputError
from distillkit.evaluation import EvalSettings, soft_labels, train_network
from distillkit.evaluation.soft_labels import soft_loss, teacher_for

SOFT_KEYS = {"labels", "soft_loss", "temperature", "soft_scale", "teacher", "teacher_epochs"}


def subset(data, n: int):
    return data.sample_per_class(n, torch.Generator().manual_seed(0))


class LookupTeacher(nn.Module):
    """Confident logits (`scale` on the true class) for images it has stored, found by value:
    a teacher whose soft labels are the hard ones, up to e^-scale."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: int, scale: float):
        super().__init__()
        self.images, self.labels, self.classes, self.scale = images, labels, classes, scale
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        match = (x.flatten(1)[:, None, :] == self.images.flatten(1)[None]).all(-1)
        assert bool(match.any(1).all()), "the teacher was shown an image it does not know"
        found = self.labels[match.float().argmax(1)]
        return self.scale * F.one_hot(found, self.classes).float()


def parameters(net: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def old_loop(factory, images, labels, settings: EvalSettings, seed: int) -> nn.Module:
    """The hard-label loop as it was before soft labels (no CutMix, no augmentation)."""
    generator = torch.Generator().manual_seed(seed)
    net = factory(generator)
    opt = torch.optim.SGD(
        net.parameters(),
        lr=settings.lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
    )
    epochs, _ = settings.schedule()
    net.train()
    for epoch in range(epochs):
        for group in opt.param_groups:
            group["lr"] = settings.lr * settings.lr_factor(epoch)
        order = torch.randperm(images.shape[0], generator=generator)
        for start in range(0, images.shape[0], settings.batch_size):
            rows = order[start : start + settings.batch_size]
            loss = F.cross_entropy(net(images[rows]), labels[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net


# -- hard labels are untouched ------------------------------------------------------------------
def test_hard_labels_train_exactly_as_the_plain_loop_did(digits, factory):
    images, labels = subset(digits, 3)
    # Soft options set but inactive: hard labels must ignore them.
    settings = EvalSettings(
        epochs=4, batch_size=8, soft_loss="sce", temperature=4.0, teacher_epochs=1
    )
    expected = old_loop(factory, images, labels, settings, seed=3)
    net = train_network(factory, images, labels, settings, None, torch.Generator().manual_seed(3))
    for got, want in zip(parameters(net), parameters(expected), strict=True):
        assert torch.equal(got, want)


def test_hard_label_evaluation_ignores_the_soft_options(digits, factory):
    images, labels = subset(digits, 2)
    plain = EvalSettings(num_models=2, epochs=3)
    dressed = EvalSettings(
        num_models=2, epochs=3, labels="hard", soft_loss="sce", temperature=3.0, teacher="x.pt"
    )
    first = evaluate_quietly(images, labels, digits, factory, plain, None, 0)
    assert first == evaluate_quietly(images, labels, digits, factory, dressed, None, 0)


def test_soft_labels_never_take_the_stacked_trainer():
    assert not EvalSettings().needs_plain_loop
    assert EvalSettings(labels="soft").needs_plain_loop


# -- the losses ---------------------------------------------------------------------------------
def test_sce_against_a_confident_one_hot_teacher_is_cross_entropy():
    torch.manual_seed(0)
    logits, target = torch.randn(16, 10), torch.randint(10, (16,))
    teacher = 60.0 * F.one_hot(target, 10).float()
    hard = F.cross_entropy(logits, target)
    assert soft_loss(logits, teacher, "sce", 1.0) == pytest.approx(float(hard), abs=1e-6)
    # KL differs from SCE by the teacher's entropy, ~0 for a one-hot teacher.
    assert soft_loss(logits, teacher, "kl", 1.0) == pytest.approx(float(hard), abs=1e-5)


def test_soft_losses_match_their_definitions_at_a_temperature():
    torch.manual_seed(1)
    s, t, temp = torch.randn(5, 4), torch.randn(5, 4), 2.5
    p, q = torch.softmax(s / temp, 1), torch.softmax(t / temp, 1)
    kl = (q * (q.log() - p.log())).sum(1).mean()
    sce = -(q * p.log()).sum(1).mean()
    assert float(soft_loss(s, t, "kl", temp, scale=False)) == pytest.approx(float(kl), rel=1e-5)
    assert float(soft_loss(s, t, "sce", temp, scale=False)) == pytest.approx(float(sce), rel=1e-5)
    assert float(soft_loss(s, t, "sce", temp)) == pytest.approx(temp**2 * float(sce), rel=1e-5)


def grad_of(kind: str, student: torch.Tensor, teacher: torch.Tensor, temp: float, scale: bool):
    s = student.clone().requires_grad_(True)
    soft_loss(s, teacher, kind, temp, scale).backward()
    return s.grad


@pytest.mark.parametrize("temp", [0.5, 3.0, 8.0])
def test_kl_at_temperature_has_t_squared_scaled_gradients(temp):
    torch.manual_seed(2)
    s, t = torch.randn(6, 10), torch.randn(6, 10)
    scaled = grad_of("kl", s, t, temp, scale=True)
    plain = grad_of("kl", s, t, temp, scale=False)
    torch.testing.assert_close(scaled, temp**2 * plain)
    # d/ds of T^2 KL(q || softmax(s/T)) = T (softmax(s/T) - softmax(t/T)) / batch.
    analytic = temp * (torch.softmax(s / temp, 1) - torch.softmax(t / temp, 1)) / s.shape[0]
    torch.testing.assert_close(scaled, analytic, rtol=1e-5, atol=1e-7)
    # SCE = KL + the teacher's entropy, a constant: the same gradients.
    torch.testing.assert_close(grad_of("sce", s, t, temp, scale=True), scaled)


def test_the_teacher_side_takes_no_gradient():
    t = torch.randn(3, 4, requires_grad=True)
    soft_loss(torch.randn(3, 4, requires_grad=True), t, "kl", 2.0).backward()
    assert t.grad is None


# -- training with a teacher --------------------------------------------------------------------
def test_a_one_hot_teacher_with_sce_trains_like_hard_labels(digits, factory):
    images, labels = subset(digits, 3)
    hard = EvalSettings(epochs=4, batch_size=8)
    soft = EvalSettings(epochs=4, batch_size=8, labels="soft", soft_loss="sce", temperature=1.0)
    teacher = LookupTeacher(images, labels, 10, scale=60.0)
    a = train_network(factory, images, labels, hard, None, torch.Generator().manual_seed(5))
    b = train_network(
        factory, images, labels, soft, None, torch.Generator().manual_seed(5), teacher=teacher
    )
    assert teacher.seen, "the teacher was never asked"
    for got, want in zip(parameters(b), parameters(a), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


class Flip:
    """A deterministic stand-in for DSA: mirror every image (draws nothing)."""

    enabled = True

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return x.flip(-1)


def test_the_teacher_relabels_the_augmented_batch(digits, factory):
    images, labels = subset(digits, 2)
    settings = EvalSettings(epochs=2, batch_size=5, labels="soft")
    # It knows only the mirrored images: an un-augmented image would fail its lookup.
    teacher = LookupTeacher(images.flip(-1), labels, 10, scale=5.0)
    train_network(
        factory, images, labels, settings, Flip(), torch.Generator().manual_seed(0), teacher=teacher
    )
    assert sum(x.shape[0] for x in teacher.seen) == 2 * images.shape[0]


def test_soft_label_evaluation_of_a_digits_set_trains_and_scores(digits, factory, monkeypatch):
    images, labels = subset(digits, 1)
    settings = EvalSettings(epochs=60, labels="soft", temperature=2.0, teacher_epochs=10)
    trained = []
    original = soft_labels.train_teacher
    monkeypatch.setattr(soft_labels, "train_teacher", lambda *a: trained.append(1) or original(*a))
    monkeypatch.setattr(soft_labels, "_TRAINED", [])
    result = evaluate_quietly(images, labels, digits, factory, settings, None, 0)
    accuracy = result["ConvNet"]["mean"]
    assert math.isfinite(accuracy) and 30.0 < accuracy <= 100.0  # chance: 10
    again = evaluate_quietly(images, labels, digits, factory, settings, None, 0)
    assert again == result and trained == [1], "the trained teacher is kept and reused"


def test_the_trained_teacher_learns_the_real_data(digits, factory, monkeypatch):
    from distillkit.evaluation import test_accuracy

    monkeypatch.setattr(soft_labels, "_TRAINED", [])
    teacher = teacher_for(
        factory, digits, EvalSettings(labels="soft", teacher_epochs=10), train_network
    )
    assert not teacher.training
    assert test_accuracy(teacher, digits.test_images, digits.test_labels, 512) > 70.0


def test_a_saved_teacher_is_loaded_not_trained(digits, factory, tmp_path, monkeypatch):
    net = factory(torch.Generator().manual_seed(9))
    path = tmp_path / "ConvNet.pt"
    torch.save(net.state_dict(), path)
    monkeypatch.setattr(soft_labels, "train_teacher", lambda *a: pytest.fail("trained"))
    settings = EvalSettings(labels="soft", teacher=str(tmp_path / "{model}.pt"))
    loaded = teacher_for(factory, digits, settings, train_network)
    for got, want in zip(parameters(loaded), parameters(net), strict=True):
        assert torch.equal(got, want)


def test_a_state_dict_of_another_network_is_an_input_error(digits, factory, tmp_path):
    path = tmp_path / "wide.pt"
    wide = dataclasses.replace(factory, options={"width": 16})
    torch.save(wide(torch.Generator().manual_seed(0)).state_dict(), path)
    settings = EvalSettings(labels="soft", teacher=str(path))
    with pytest.raises(InputError, match="not a state_dict of ConvNet"):
        teacher_for(factory, digits, settings, train_network)


# -- settings -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"labels": "sofft"}, "eval.labels"),
        ({"soft_loss": "mse"}, "eval.soft_loss"),
        ({"temperature": 0}, "eval.temperature"),
        ({"temperature": -1.0}, "eval.temperature"),
        ({"temperature": float("nan")}, "eval.temperature"),
        ({"temperature": float("inf")}, "eval.temperature"),
        ({"temperature": "hot"}, "eval.temperature"),
        ({"temperature": True}, "eval.temperature"),
        ({"soft_scale": "yes"}, "eval.soft_scale"),
        ({"teacher": ""}, "eval.teacher"),
        ({"teacher": None}, "eval.teacher"),
        ({"teacher_epochs": 0}, "eval.teacher_epochs"),
        ({"teacher_epochs": 2.5}, "eval.teacher_epochs"),
        ({"labels": "soft", "teacher": "/nonexistent/teacher.pt"}, "eval.teacher"),
        (
            {"labels": "soft", "teacher": "/tmp/t.pt", "models": ("ConvNet", "MLP")},
            "eval.teacher",
        ),
    ],
)
def test_bad_soft_label_options_are_one_line_config_errors(options, key):
    with pytest.raises(ConfigError) as caught:
        EvalSettings(**options)
    message = str(caught.value)
    assert message.startswith(key) and "\n" not in message


def test_soft_label_keys_are_in_the_schema_and_the_shipped_config():
    assert SOFT_KEYS <= EvalSettings.keys()
    settings = EvalSettings.from_config(compose_config(TINY)["eval"])
    assert (settings.labels, settings.soft_loss, settings.temperature) == ("hard", "kl", 1.0)
    assert (settings.soft_scale, settings.teacher, settings.teacher_epochs) == (True, "train", 200)


def test_soft_label_options_compose_from_the_command_line():
    cfg = compose_config([*TINY, "eval.labels=soft", "eval.soft_loss=sce", "eval.temperature=4"])
    settings = EvalSettings.from_config(cfg["eval"])
    assert (settings.labels, settings.soft_loss, settings.temperature) == ("soft", "sce", 4.0)
    assert isinstance(settings.temperature, float)
    with pytest.raises(ConfigError, match="eval.labels"):
        EvalSettings.from_config(compose_config([*TINY, "eval.labels=mixed"])["eval"])
