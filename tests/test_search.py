"""Search: Hydra's Optuna sweeper over a method's settings, with the objective on a validation
split held out of the training set (`dataset.validation`), never on test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from helpers import TINY, compose_config
from helpers import distillkit as run_cli

from distillkit.data import load_from_config

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")

SMALL = [
    "dataset.image_size=8", "model.width=8", "eval.num_models=1", "eval.epochs=1",
    "progress=false", "device=cpu", "unequalness.enabled=false", "images.flips=false",
    "dataset.validation=5",
]  # fmt: skip


def test_validation_split_is_held_out_of_training(digits):
    data = load_from_config({"name": "digits", "image_size": 8, "validation": 5}, "cpu")
    images, labels = data.validation
    assert torch.equal(torch.bincount(labels, minlength=10), torch.full((10,), 5))
    assert len(data.train_labels) == len(digits.train_labels) - 50
    assert torch.equal(data.test_images, digits.test_images)  # the test split is untouched
    # disjoint: no held-out image is still in the training split
    train = {tuple(x.flatten().tolist()) for x in data.train_images}
    assert not any(tuple(x.flatten().tolist()) in train for x in images)
    plain = load_from_config({"name": "digits", "image_size": 8, "validation": 0}, "cpu")
    assert plain.validation is None and torch.equal(plain.train_images, digits.train_images)


def test_results_report_validation_and_test_apart(tmp_path):
    from distillkit.trainer import Trainer

    report = Trainer(compose_config([*TINY, "ipc=1", "dataset.validation=5"]), tmp_path).run()
    assert set(report["validation"]["accuracy"]) == set(report["accuracy"]) == {"ConvNet"}
    assert report["validation"]["headline"]["model"] == "ConvNet"
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any("val/ConvNet/mean" in r for r in logged)


def trial_results(sweep: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.json"))]


def test_optuna_search_of_three_trials_maximises_validation_accuracy(tmp_path):
    sweep = tmp_path / "search"
    out = run_cli(
        "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3", "method.iterations=choice(2,3)",
        "ipc=choice(1,2)", *SMALL, f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    trials = trial_results(sweep)
    assert len(trials) == 3
    validation = [t["validation"]["headline"]["mean"] for t in trials]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(validation))
    assert {t["ipc"] for t in trials} <= {1, 2}  # ipc searched as a number
    assert all(t["headline"]["mean"] is not None for t in trials)  # test reported apart


def test_a_failed_trial_is_recorded_and_the_search_goes_on(tmp_path):
    """A trial with an impossible value fails in its job (one line, failed.json) and returns
    None, which Optuna records as a failed trial; the search finishes on the others."""
    sweep = tmp_path / "search"
    out = run_cli(
        "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3",
        "method.lr_img=choice(1.0,-1.0)", "method.iterations=2", "ipc=1", *SMALL,
        f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    failed = sorted(sweep.glob("*/failed.json"))
    good = trial_results(sweep)
    assert failed and good, out.stderr  # the seeded sampler draws both values
    assert out.returncode == 1  # the failed jobs are reported, one line each
    assert f"{len(failed)} job(s) of the sweep failed" in out.stderr
    assert "Traceback" not in out.stderr
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_params"]["method.lr_img"] == 1.0
    assert best["best_value"] == pytest.approx(
        max(t["validation"]["headline"]["mean"] for t in good)
    )
