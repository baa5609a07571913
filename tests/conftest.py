"""Shared fixtures: tiny configurations, data and networks that run in seconds on a CPU.

Plain helper functions and constants live in tests/helpers.py (`from helpers import ...`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:  # rootdir conftest puts it there; --import-mode=importlib does not
    sys.path.insert(0, str(TESTS))

from helpers import SHARED_DATA, TINY, compose_config, tiny_digits, tiny_factory  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_MODE", "offline")


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


@pytest.fixture(scope="session")
def digits():
    """The built-in digits at 8x8, every image (loaded once per session; treat as read-only)."""
    return tiny_digits()


@pytest.fixture(scope="session")
def factory():
    """Width-8 ConvNets for 8x8 digits on the CPU (1 channel, 10 classes)."""
    return tiny_factory()


@pytest.fixture(scope="module")
def tiny_pool(tmp_path_factory) -> Path:
    """Two small ConvNets trained one epoch on 8x8 digits (CC works with any pool architecture).
    Built from the helpers, not the fixtures, so a module's own `digits` cannot change it."""
    from distillkit.pool import PoolSettings, train_pool
    from distillkit.seeding import RunGenerators

    directory = tmp_path_factory.mktemp("pool")
    gens = RunGenerators(0)
    data, factory = tiny_digits(), tiny_factory()
    train_pool(directory, data, factory, 2, PoolSettings(epochs=1), 2, lambda i: gens[f"p/{i}"])
    return directory
