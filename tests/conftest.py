"""Shared fixtures: tiny configurations that run in seconds on a CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_MODE", "offline")

#: Overrides that make any run tiny: small nets, a handful of iterations and epochs.
TINY = [
    "dataset=digits",
    "dataset.image_size=8",
    "model.width=8",
    "method.iterations=3",
    "eval.num_models=1",
    "eval.epochs=2",
    "progress=false",
    "checkpoint.every=0",
    "device=cpu",
]


def compose_config(overrides: list[str]) -> DictConfig:
    from distillkit.config import quote_numeric_group_choices

    with initialize_config_module(config_module="distillkit.conf", version_base="1.3"):
        return compose("config", overrides=quote_numeric_group_choices(overrides))


@pytest.fixture
def tiny_config():
    def make(*overrides: str) -> DictConfig:
        """TINY plus overrides; choosing another dataset drops TINY's digits-only settings."""
        base = TINY
        if any(o.startswith("dataset=") for o in overrides):
            base = [o for o in TINY if not o.startswith("dataset")]
        return compose_config([*base, *overrides])

    return make


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "cifar-10-batches-bin").exists():
        pytest.skip("../shared/data is not present on this machine")
    return SHARED_DATA
