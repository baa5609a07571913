"""Slow end-to-end checks on the real data in ../shared/data (skipped where it is absent)."""

from __future__ import annotations

import pytest

from distillkit.trainer import Trainer


@pytest.mark.slow
def test_dm_beats_random_subset_on_cifar10(tiny_config, shared_data, tmp_path):
    common = [
        "dataset=cifar10",
        f"dataset.root={shared_data}",
        "dataset.test_limit=200",
        "model.width=32",
        "ipc=10",
        "eval.num_models=2",
        "eval.epochs=200",
    ]
    scores = {}
    for method in ("random", "dm"):
        extra = ["method.iterations=200", "method.batch_real=64"] if method == "dm" else []
        cfg = tiny_config(*common, f"method={method}", *extra)
        scores[method] = Trainer(cfg, tmp_path / method).run()["headline"]["mean"]
    assert scores["dm"] > scores["random"] + 2.0, scores
