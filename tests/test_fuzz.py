"""Random combinations of every config group: each runs a one-iteration job or fails clearly.

"Clearly" means one of the user-facing error types (reported by the CLI as one line, exit 2), or
Hydra refusing to compose; never any other exception. Datasets other than the built-in digits are
pointed at an empty root, so they fail with DatasetNotFoundError (a clear error) offline.
"""

from __future__ import annotations

import random

import pytest
from conftest import TINY, compose_config, group_options
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from distillkit.errors import UserError
from distillkit.trainer import Trainer

GROUPS = ["dataset", "method", "regularizer", "ipc", "model", "eval", "logger", "experiment"]
#: Scalar overrides mixed in at random (each valid for every option of every group).
EXTRAS = [
    "synthetic.init=noise",
    "eval.dsa=false",
    "method.dsa=false",
    "log_every=1",
    "checkpoint.every=1",
    "seed=3",
    "eval.at=[1]",
]
#: What a user may see: one clear line from the CLI (exit 2) or the numerical-failure line.
CLEAR_ERRORS = (UserError, FileNotFoundError, FloatingPointError)
COMBINATIONS = 16
#: Per-method settings that keep one iteration to a fraction of a second (keys each one has).
QUICK_METHOD = {
    "dm": ["method.batch_real=16"],
    "idm": ["method.batch_real=16", "method.batch_train=32", "method.model_train_steps=1"],
    "dc": ["method.batch_real=16", "method.outer_loop=1", "method.inner_loop=1"],
    "dsa": ["method.batch_real=16", "method.outer_loop=1", "method.inner_loop=1"],
    "idc": ["method.batch_real=16", "method.inner_loop=2", "method.n_data=32"],
}


def options(group: str) -> list[str]:
    return group_options(group)


def combination(seed: int) -> list[str]:
    """One random choice from every group (a list of add-ons for regularizer) plus extras."""
    rng = random.Random(seed)
    picked = {g: rng.choice(options(g)) for g in GROUPS}
    regularizers = rng.sample(options("regularizer"), rng.randint(1, 2))
    picked["regularizer"] = "[" + ",".join(regularizers) + "]"
    if rng.random() < 0.5:  # no preset (the default; Hydra refuses `experiment=null` as typed)
        del picked["experiment"]
    if rng.random() < 0.6:  # lean towards settings that run, so that many combinations do
        picked["dataset"] = "digits"
        picked["ipc"] = rng.choice(["1", "10"])  # DC/DSA publish loops for these
        picked["method"] = rng.choice([m for m in options("method") if m not in ("mtt", "ftd")])
        picked["regularizer"] = rng.choice(["[none]", "[fyi]"])
        if "experiment" in picked:  # the demo preset sets ConvNet options
            picked["model"] = rng.choice(["convnet", "convnet_bn"])
    return [f"{g}={v}" for g, v in picked.items()] + rng.sample(EXTRAS, rng.randint(0, 2))


def overrides_for(choice: list[str], data_root: str) -> list[str]:
    """TINY (its digits and ConvNet keys only where they exist), one iteration, the choice."""
    digits = "dataset=digits" in choice
    convnet = any(c in choice for c in ("model=convnet", "model=convnet_bn"))
    base = [
        o
        for o in TINY
        if (digits or not o.startswith("dataset")) and (convnet or not o.startswith("model."))
    ]
    data = ["dataset.test_limit=100"] if digits else [f"dataset.root={data_root}"]
    method = next(c.partition("=")[2] for c in choice if c.startswith("method="))
    quick = [
        "method.iterations=1",
        "eval.epochs=1",
        "unequalness.num_nets=1",
        "unequalness.distances=[dm]",
        *QUICK_METHOD.get(method, []),
    ]
    return [*base, *choice, *quick, *data]


@pytest.mark.parametrize("seed", range(COMBINATIONS))
def test_random_combination_runs_or_fails_clearly(seed, tmp_path):
    choice = combination(seed)
    try:
        cfg = compose_config(overrides_for(choice, str(tmp_path / "no-data")))
    except (HydraException, OmegaConfBaseException) as exc:  # Hydra's own clear refusal
        assert str(exc).strip(), choice
        return
    try:
        results = Trainer(cfg, tmp_path / "run").run()
    except CLEAR_ERRORS as exc:
        message = str(exc).strip()
        assert message and "\n" not in message, (choice, message)
        return
    assert results["iterations"] in (0, 1), choice
    assert (tmp_path / "run" / "synthetic_set.pt").exists()
