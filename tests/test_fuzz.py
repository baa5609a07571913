"""Every shipped method with every shipped regularizer: one tiny step each, or a declared refusal.

The sweep is read from the config groups, not listed here: every file of conf/method/ times
every file of conf/regularizer/ (alone) and every transform add-on file paired with every loss
add-on file (e.g. [fyi,iid]). A new YAML in either group is swept by adding it. Each combination
runs one iteration on 8x8 digits with width-8 networks (no evaluation, no unequalness), or is
refused with a declared, clear error: one of CLEAR_ERRORS, one line. Any other exception, a Hydra
composition error included, fails its combination.

MTT-style methods (a `buffer` option) get a tiny expert buffer built once for the module (a
GSAM one where the shipped default buffer is a GSAM buffer, `..._gsam`); add-ons with a `pool`
option get the tiny pool. The counts at the bottom fail if combinations stop running or stop
being refused.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import REPO, TINY, addon_targets, compose_config, group_options, tiny_factory
from hydra.utils import get_class
from omegaconf import OmegaConf

from distillkit.errors import ConfigError, UserError
from distillkit.trainer import Trainer

#: What a user may see: one clear line from the CLI (exit 2) or the numerical-failure line.
CLEAR_ERRORS = (UserError, FileNotFoundError, FloatingPointError)
METHOD_DIR = REPO / "conf" / "method"
REGULARIZER_DIR = REPO / "conf" / "regularizer"
#: Overrides of every combination: TINY, 2 images per class, 16 training digits per class, no
#: evaluation networks, no unequalness, no flip figure.
BASE = [
    *TINY,
    "ipc=2",
    "dataset.train_limit=16",
    "eval.num_models=0",
    "unequalness.enabled=false",
    "images.flips=false",
]
#: Method options that keep one iteration to a fraction of a second, each set for the methods
#: whose config has the key (option names, not method names: a new method needs no entry).
QUICK = {
    "batch_real": 16,
    "batch_train": 32,
    "model_train_steps": 1,
    "initial_nets": 1,
    "nets_trained_per_iteration": 1,
    "outer_loop": 1,
    "inner_loop": 2,
    "n_data": 32,
    "syn_steps": 2,
    "expert_epochs": 1,
    "max_start_epoch": 1,
}
#: The sweep's outcome today (8 methods x 8 regularizer choices = 64): 26 combinations take one
#: step, the random baseline runs (no iterations) alone and with FYI (2), and 36 are refused
#: (IID's loss add-ons with the 6 methods that take none). Adding a method or add-on YAML only
#: raises these; a drop means combinations stopped running or stopped being refused.
MIN_STEPPED = 26
MIN_REFUSED = 36

#: The tiny pool is not the published one, which each run with CC says.
pytestmark = pytest.mark.filterwarnings("ignore::distillkit.pool.UnpublishedPoolWarning")


def method_files() -> list[str]:
    return sorted(p.stem for p in METHOD_DIR.glob("*.yaml"))


def regularizer_files() -> list[str]:
    return sorted(p.stem for p in REGULARIZER_DIR.glob("*.yaml"))


def addons_of(option: str) -> list[str]:
    """The add-ons a regularizer file selects: its own keys and those of the files it includes
    in its defaults list (iid: cc and cm; none: nothing)."""
    spec = yaml.safe_load((REGULARIZER_DIR / f"{option}.yaml").read_text()) or {}
    names = [k for k, v in spec.items() if isinstance(v, dict) and "_target_" in v]
    for entry in spec.get("defaults") or []:
        if isinstance(entry, str) and entry != "_self_":
            names += addons_of(entry)
    return sorted(names)


@functools.cache
def addon_class(name: str) -> type:
    return get_class(addon_targets()[name])


@functools.cache
def addon_options(name: str) -> dict[str, Any]:
    """An add-on's shipped options, from whichever regularizer file defines it."""
    for path in REGULARIZER_DIR.glob("*.yaml"):
        spec = yaml.safe_load(path.read_text()) or {}
        if isinstance(spec.get(name), dict) and "_target_" in spec[name]:
            return spec[name]
    raise KeyError(name)


def has_loss(choice: tuple[str, ...]) -> bool:
    return any(addon_class(a).has_loss for option in choice for a in addons_of(option))


def transform_only(option: str) -> bool:
    classes = [addon_class(a) for a in addons_of(option)]
    return bool(classes) and all(c.has_transform and not c.has_loss for c in classes)


def regularizer_choices() -> list[tuple[str, ...]]:
    """Every file alone, then each transform add-on file with each loss add-on file."""
    files = regularizer_files()
    pairs = [(t, l) for t in files if transform_only(t) for l in files if l != t and has_loss((l,))]
    return [(f,) for f in files] + pairs


COMBINATIONS = [(m, c) for m in method_files() for c in regularizer_choices()]


@functools.cache
def method_options(method: str) -> dict[str, Any]:
    """The method's composed options, interpolations unresolved (its `buffer` default)."""
    cfg = compose_config([*BASE, f"method={method}"])
    return OmegaConf.to_container(cfg.method, resolve=False)


def takes_iterations(method: str) -> bool:
    """False for a baseline that learns nothing (`optimises`: the trainer runs no iterations)."""
    return bool(get_class(method_options(method)["_target_"]).optimises)


@dataclass
class Outcome:
    results: dict[str, Any] | None = None
    run_dir: Path | None = None
    error: Exception | None = None

    @property
    def refused(self) -> bool:
        return self.error is not None

    @property
    def stepped(self) -> bool:
        return self.results is not None and self.results["iterations"] > 0


def overrides_for(method: str, choice: tuple[str, ...], pool: Path, buffers: dict) -> list[str]:
    options = method_options(method)
    quick = [f"method.{k}={v}" for k, v in QUICK.items() if k in options]
    if takes_iterations(method):
        quick.append("method.iterations=1")
    if "buffer" in options:
        kind = "gsam" if str(options["buffer"]).endswith("_gsam") else "sgd"
        quick.append(f"method.buffer={buffers[kind]}")
    pools = [
        f"regularizer.{a}.pool={pool}"
        for option in choice
        for a in addons_of(option)
        if "pool" in addon_options(a)
    ]
    return [*BASE, f"method={method}", f"regularizer=[{','.join(choice)}]", *quick, *pools]


@pytest.fixture(scope="module")
def buffers(tmp_path_factory) -> dict[str, Path]:
    """One 2-epoch expert of each optimiser (SGD for MTT, GSAM for FTD) on 16 digits per class."""
    from distillkit.augment import DSA
    from distillkit.data import load_dataset
    from distillkit.experts import ExpertSettings, train_experts
    from distillkit.seeding import RunGenerators

    few = load_dataset("digits", image_size=8, train_limit=16)
    gens = RunGenerators(0)
    made = {}
    for optimiser in ("sgd", "gsam"):
        directory = tmp_path_factory.mktemp(f"experts_{optimiser}")
        settings = ExpertSettings(epochs=2, optimiser=optimiser)
        augment = DSA("color_crop_cutout_scale_rotate")
        train_experts(
            directory, few, tiny_factory(), augment, 1, settings, 1, lambda i: gens[f"e/{i}"]
        )
        made[optimiser] = directory
    return made


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, tiny_pool, buffers):
    """outcome(method, choice): runs the combination the first time it is asked for."""
    done: dict[tuple[str, tuple[str, ...]], Outcome] = {}

    def outcome(method: str, choice: tuple[str, ...]) -> Outcome:
        key = (method, choice)
        if key not in done:
            cfg = compose_config(overrides_for(method, choice, tiny_pool, buffers))
            run_dir = tmp_path_factory.mktemp(f"{method}-{'-'.join(choice)}")
            try:
                done[key] = Outcome(results=Trainer(cfg, run_dir).run(), run_dir=run_dir)
            except CLEAR_ERRORS as exc:
                done[key] = Outcome(error=exc)
        return done[key]

    return outcome


@pytest.mark.parametrize(
    ("method", "choice"), COMBINATIONS, ids=[f"{m}-{'+'.join(c)}" for m, c in COMBINATIONS]
)
def test_combination_takes_one_step_or_is_refused_clearly(sweep, method, choice):
    got = sweep(method, choice)
    if got.refused:
        message = str(got.error).strip()
        assert message and "\n" not in message, message
        # Only a loss add-on is ever refused, and only as the declared ConfigError.
        assert has_loss(choice), f"{method} refused {choice}: {message}"
        assert isinstance(got.error, ConfigError), repr(got.error)
        assert re.search(rf"regularizer '\w+' cannot be combined with method '{method}'", message)
        return
    results = got.results
    assert results["method"] == method
    wanted = sorted(a for option in choice for a in addons_of(option))
    assert sorted(results["regularizers"]) == wanted
    assert results["iterations"] == (1 if takes_iterations(method) else 0)
    if takes_iterations(method):
        assert math.isfinite(results["final_loss"])
    assert (got.run_dir / "synthetic_set.pt").exists()


def test_the_sweep_is_every_method_file_by_every_regularizer_choice(sweep):
    methods, files = method_files(), regularizer_files()
    assert methods == group_options("method") and files == group_options("regularizer")
    transforms = [f for f in files if transform_only(f)]
    losses = [f for f in files if has_loss((f,))]
    assert transforms and losses  # FYI, and IID's cc, cm and iid
    choices = len(files) + len(transforms) * len(losses)
    outcomes = {(m, c): sweep(m, c) for m, c in COMBINATIONS}
    assert len(outcomes) == len(methods) * choices

    stepped = [k for k, o in outcomes.items() if o.stepped]
    refused = [k for k, o in outcomes.items() if o.refused]
    baseline = [k for k, o in outcomes.items() if not o.refused and not o.stepped]
    assert len(stepped) + len(refused) + len(baseline) == len(outcomes)
    assert len(stepped) >= MIN_STEPPED, stepped
    assert len(refused) >= MIN_REFUSED, refused
    assert all(not takes_iterations(m) for m, _ in baseline), baseline
    # Without a loss add-on every method runs; with one, a method runs all or refuses all.
    assert not [k for k in refused if not has_loss(k[1])]
    for method in methods:
        kinds = {outcomes[(method, c)].refused for c in regularizer_choices() if has_loss(c)}
        assert len(kinds) == 1, (method, kinds)
    assert any(not outcomes[(m, (losses[0],))].refused for m in methods)  # DM and IDM take them
