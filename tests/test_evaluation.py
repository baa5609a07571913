"""The evaluation protocol: it learns, it is seeded, and it reports mean ± std per architecture."""

from __future__ import annotations

import pytest
import torch
from helpers import evaluate_quietly

from distillkit.evaluation import EvalSettings, train_and_test
from distillkit.evaluation.protocol import summarise
from distillkit.networks import NetworkFactory


def subset(data, n):
    return data.sample_per_class(n, torch.Generator().manual_seed(0))


def fit(factory, images, labels, digits, settings) -> float:
    """Test accuracy of one network trained on (images, labels), no augmentation, seed 0."""
    generator = torch.Generator().manual_seed(0)
    test_x, test_y = digits.test_images, digits.test_labels
    return train_and_test(factory, images, labels, test_x, test_y, settings, None, generator)


def test_training_on_real_images_beats_chance_by_far(digits):
    images, labels = subset(digits, 20)
    settings = EvalSettings(epochs=40, batch_size=64)
    factory = NetworkFactory("ConvNet", 1, 10, (8, 8), {"width": 16})
    acc = fit(factory, images, labels, digits, settings)
    assert acc > 60.0


def test_evaluation_is_seeded_and_covers_every_architecture(digits):
    images, labels = subset(digits, 2)
    settings = EvalSettings(models=("ConvNet", "MLP"), num_models=2, epochs=3)
    factory = NetworkFactory("ConvNet", 1, 10, (8, 8), {"width": 8})

    def run(seed):
        return evaluate_quietly(images, labels, digits, factory, settings, None, seed)

    first, again = run(0), run(0)
    assert set(first) == {"ConvNet", "MLP"}
    assert first == again
    assert first["ConvNet"]["n"] == 2 and len(first["MLP"]["runs"]) == 2


def test_lr_decay_happens_once_at_the_configured_epoch(digits, monkeypatch):
    seen = []
    original = torch.optim.SGD.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", spy)
    images, labels = subset(digits, 1)
    settings = EvalSettings(epochs=4, lr=0.1, lr_decay_at=0.5)
    factory = NetworkFactory("MLP", 1, 10, (8, 8))
    fit(factory, images, labels, digits, settings)
    assert seen == pytest.approx([0.1, 0.1, 0.01, 0.01])


def test_summarise_reports_population_std():
    s = summarise([50.0, 60.0])
    assert s["mean"] == 55.0 and s["std"] == 5.0 and s["n"] == 2
