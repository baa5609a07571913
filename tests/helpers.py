"""Helpers the tests import (`from helpers import ...`): tiny run settings, config composition,
the shipped methods and add-ons read from conf/, published tables restated, and ways to crash,
poison or signal a run. Fixtures live in conftest.py."""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

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


@functools.cache
def tiny_digits():
    """The built-in digits at 8x8, every image, loaded once per process (treat as read-only;
    tests take it as the `digits` fixture)."""
    from distillkit.data import load_dataset

    return load_dataset("digits", image_size=8)


def tiny_factory(width: int = 8, **options):
    """ConvNets of `width` for 8x8 digits on the CPU (1 channel, 10 classes); the `factory`
    fixture is the width-8 one."""
    from distillkit.networks import NetworkFactory

    return NetworkFactory("ConvNet", 1, 10, (8, 8), {"width": width, **options}, "cpu")


def compose_config(overrides: list[str]) -> DictConfig:
    from distillkit.cli._args import quote_numeric_group_choices

    with initialize_config_module(config_module="distillkit.conf", version_base="1.3"):
        return compose("config", overrides=quote_numeric_group_choices(overrides))


def group_options(group: str) -> list[str]:
    """The options Hydra lists for `group` (files in distillkit.conf, and the ipc plugin's)."""
    from hydra.core.global_hydra import GlobalHydra

    with initialize_config_module(config_module="distillkit.conf", version_base="1.3"):
        return sorted(GlobalHydra.instance().config_loader().get_group_options(group))


def method_classes() -> dict[str, type]:
    """The shipped methods by config name, read from their YAMLs' `_target_` (no registry)."""
    import yaml
    from hydra.utils import get_class

    classes = {}
    for path in sorted((REPO / "conf" / "method").glob("*.yaml")):
        target = yaml.safe_load(path.read_text()).get("_target_")
        classes[path.stem] = get_class(target)
    return classes


def addon_targets() -> dict[str, str]:
    """The shipped single add-ons by name -> `_target_`, read from conf/regularizer/."""
    import yaml

    targets = {}
    for path in sorted((REPO / "conf" / "regularizer").glob("*.yaml")):
        for name, options in (yaml.safe_load(path.read_text()) or {}).items():
            if isinstance(options, dict) and "_target_" in options:
                targets[name] = options["_target_"]
    return targets


def build_method(name: str, ctx):
    """The method a config named `name` builds, on `ctx` (as the trainer builds it)."""
    return method_classes()[name](ctx)


def build_addons(cfg, method: str, context=None):
    """Add-ons from {name: options} with each shipped add-on's `_target_` filled in."""
    from distillkit.addons import build_addons as build

    targets = addon_targets()
    full = {n: {"_target_": targets.get(n), **dict(o or {})} for n, o in dict(cfg or {}).items()}
    return build(full, method_classes()[method], context)


#: MTT's published settings, restated from ../shared/docs/methods.md (independently of conf/):
#: (dataset, ipc) -> syn_steps N, expert_epochs M, max_start_epoch T+, lr_img, lr_lr, lr_teacher,
#: ZCA, batch_syn. tests/test_mtt.py and tests/test_tables.py check the configs against it.
MTT_PUBLISHED = {
    ("cifar10", 1): (50, 2, 2, 100, 1e-7, 0.01, True, None),
    ("cifar10", 10): (30, 2, 20, 100, 1e-5, 0.001, True, None),
    ("cifar10", 50): (30, 2, 40, 1000, 1e-5, 0.001, False, None),
    ("cifar100", 1): (20, 3, 20, 1000, 1e-5, 0.01, True, None),
    ("cifar100", 10): (20, 2, 20, 1000, 1e-5, 0.01, False, None),
    ("cifar100", 50): (80, 2, 40, 1000, 1e-5, 0.01, True, 125),
    ("tinyimagenet", 1): (10, 2, 10, 10000, 1e-4, 0.01, False, None),
    ("tinyimagenet", 10): (20, 2, 40, 10000, 1e-4, 0.01, False, 200),
    ("tinyimagenet", 50): (20, 2, 40, 10000, 1e-4, 0.01, False, 300),
}

#: FTD's Table 7, restated from FTD's docs/parameters.png (AngusDujw/FTD-distillation) and the
#: issue, independently of conf/: (dataset, ipc) -> syn_steps, expert_epochs, max_start_epoch,
#: batch_syn, lr_img, lr_lr, lr_teacher, alpha (GSAM's, of the experts), EMA decay.
FTD_PUBLISHED = {
    ("cifar10", 1): (50, 2, 2, None, 100, 1e-7, 0.01, 0.3, 0.9999),
    ("cifar10", 10): (30, 2, 20, None, 100, 1e-5, 0.001, 0.3, 0.9995),
    ("cifar10", 50): (30, 2, 40, None, 1000, 1e-5, 0.01, 1.0, 0.999),
    ("cifar100", 1): (40, 3, 20, None, 1000, 1e-5, 0.01, 1.0, 0.9995),
    ("cifar100", 10): (20, 2, 40, None, 1000, 1e-5, 0.01, 1.0, 0.9995),
    ("cifar100", 50): (80, 2, 40, 1000, 1000, 1e-5, 0.01, 1.0, 0.999),
    ("tinyimagenet", 1): (30, 2, 10, None, 10000, 1e-4, 0.01, 1.0, 0.999),
    ("tinyimagenet", 10): (20, 2, 40, 500, 10000, 1e-4, 0.01, 1.0, 0.999),
}


def crash_at(trainer, iteration: int, error) -> None:
    """Make the method raise `error` when it reaches `iteration` (a crash after a checkpoint)."""
    step = trainer.method.step

    def crashing(i: int):
        if i == iteration:
            raise error
        return step(i)

    trainer.method.step = crashing


def poison_at(trainer, bad_iteration: int) -> None:
    """Make the method's step at `bad_iteration` (and after) return NaN and NaN images."""
    import torch

    step = trainer.method.step

    def poisoned(iteration: int):
        losses = step(iteration)
        if iteration >= bad_iteration:
            trainer.synthetic.images.data.fill_(float("nan"))
            losses["loss"] = torch.tensor(float("nan"))
        return losses

    trainer.method.step = poisoned


def signal_at(trainer, iteration: int, sig: int) -> None:
    """Deliver `sig` to this process during the method's step at `iteration`."""
    import os

    step = trainer.method.step

    def signalled(i: int):
        if i == iteration:
            os.kill(os.getpid(), sig)
        return step(i)

    trainer.method.step = signalled


def run_command(name: str, *args: str, cwd, timeout: int = 600):
    """`distillkit.cli.<name>` as a user runs it: a fresh process with `args` as its argv."""
    import subprocess
    import sys

    code = f"import sys; from distillkit.cli.{name} import main; main(sys.argv[1:])"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def distillkit(*args: str, cwd, timeout: int = 600):
    """The `distillkit` command in a fresh process."""
    return run_command("distill", *args, cwd=cwd, timeout=timeout)


def crash_and_resume(cfg, tmp_path: Path, crash: int = 3):
    """(a whole run, a run crashed at iteration `crash` and resumed from its checkpoint)."""
    from distillkit.trainer import Trainer

    whole = Trainer(cfg, tmp_path / "whole")
    whole.run()
    crashed = Trainer(cfg, tmp_path / "crashed")
    crash_at(crashed, crash, RuntimeError("crash"))
    with pytest.raises(RuntimeError, match="crash"):
        crashed.run()
    resumed = Trainer(cfg, tmp_path / "crashed")
    return whole, resumed


def student_batches(method) -> list:
    """The batches MTT's (or FTD's) student sees during one step."""
    seen = []
    student = method.student

    def spy(flat, x):
        seen.append(x.detach().clone())
        return student(flat, x)

    method.student = spy
    method.step(0)
    return seen


def start_distillkit(args, cwd, **popen):
    """The `distillkit` command started in the background (stdout/stderr piped, text)."""
    import subprocess
    import sys

    code = "import sys; from distillkit.cli.distill import main; main(sys.argv[1:])"
    options = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, **popen}
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=cwd, **options)


def resumed_twin(method, build):
    """(`method`'s state before its next step, a fresh `build()` given that state, synthetic set
    and random streams); `method` then takes step 1, which the twin must repeat exactly."""
    import copy

    state = copy.deepcopy(method.state_dict())
    synthetic_state = copy.deepcopy(method.synthetic.state_dict())
    generators = copy.deepcopy(method.ctx.generators.state_dict())
    method.step(1)
    twin = build()
    twin.synthetic.load_state_dict(synthetic_state)
    twin.ctx.generators.load_state_dict(generators)
    twin.load_state_dict(state)
    return state, twin


def evaluate_quietly(images, labels, data, factory, settings, augment, seed: int):
    """`evaluate_set` with a seeded generator and no progress bar."""
    import torch

    from distillkit.evaluation import evaluate_set

    generator = torch.Generator().manual_seed(seed)
    return evaluate_set(images, labels, data, factory, settings, augment, generator, progress=False)


def free_port() -> int:
    """A TCP port nobody listens on now (for a test's process group)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher_free_env(**extra: str) -> dict[str, str]:
    """This environment without any launcher's variables (torchrun's, SLURM's), one thread per
    process, plus `extra`: what a test's child processes start from."""
    launcher = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_", "TORCHELASTIC_", "SLURM_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(launcher)}
    return {**env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **extra}


def finish_processes(procs: list[subprocess.Popen], timeout: float) -> list[tuple[int, str, str]]:
    """(exit status, stdout, stderr) of each process; any still running after `timeout` (for
    them all) is killed."""
    deadline = time.monotonic() + timeout
    done = []
    for proc in procs:
        try:
            stdout, stderr = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        done.append((proc.returncode, stdout, stderr))
    return done
