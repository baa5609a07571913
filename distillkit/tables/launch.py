"""Run an explicit list of `distillkit` jobs through a Hydra launcher (basic, joblib, submitit).

Hydra's sweepers only expand Cartesian products, and a sweeper plugin must live in the
`hydra_plugins` namespace; a table is a list of cells with gaps (jobs already done are skipped).
So this module does what `Hydra.multirun` does, minus the sweeper: compose the master config in
MULTIRUN mode, instantiate the configured launcher plugin and hand it the per-job override lists
(`Launcher.launch`). Each job is then an ordinary multirun job of the `distillkit` app: its own
directory (`hydra.sweep.subdir`), `.hydra/`, results.json or failed.json.

    python -m distillkit.tables.launch jobs.json

jobs.json: {"hydra": [master/hydra overrides], "jobs": [[job overrides], ...]}.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

CONFIG_MODULE = "pkg://distillkit.conf"
#: Set by the table runner for joblib on a multi-GPU machine: number of GPUs, lock folder.
GPU_SLOTS_ENV = "DISTILLKIT_GPU_SLOTS"
GPU_LOCKS_ENV = "DISTILLKIT_GPU_LOCKS"


@contextlib.contextmanager
def gpu_slot(cfg: DictConfig) -> Iterator[int | None]:
    """Hold one free GPU (an flock on `<locks>/gpu<k>.lock`) for the job and set device=cuda:k.

    joblib runs n_jobs workers but does not place them on devices; a lock per GPU makes every
    running job own one GPU, whatever order the jobs finish in. No-op unless GPU_SLOTS_ENV is set.
    """
    slots = int(os.environ.get(GPU_SLOTS_ENV) or 0)
    if slots <= 0:
        yield None
        return
    locks = Path(os.environ.get(GPU_LOCKS_ENV) or ".gpu_locks")
    locks.mkdir(parents=True, exist_ok=True)
    while True:
        for k in range(slots):
            handle = (locks / f"gpu{k}.lock").open("w")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            try:
                with open_dict(cfg):
                    cfg.device = f"cuda:{k}"
                yield k
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
            return
        time.sleep(0.5)


def distill_task(cfg: DictConfig) -> Any:
    """The `distillkit` job; importable, so launchers can pickle it. Returns the objective, or
    for a failed job (failed.json written, one line out) its JobFailure, which comes back in
    the job's JobReturn whichever process the launcher ran it in."""
    from distillkit.cli._common import run_task
    from distillkit.cli.distill import distill_job

    with gpu_slot(cfg):
        return run_task(distill_job, cfg)


def launch(hydra_overrides: Sequence[str], jobs: Sequence[Sequence[str]]) -> list[Any]:
    """Launch `jobs` (each a full list of task overrides) with the launcher in `hydra_overrides`.

    Returns Hydra's JobReturn objects (status, return value) in job order; the value of a job
    that failed in its body is its `JobFailure` (distillkit.cli._common).
    """
    from hydra._internal.callbacks import Callbacks
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.plugins import Plugins
    from hydra.core.utils import JobStatus
    from hydra.types import HydraContext, RunMode
    from omegaconf import OmegaConf

    if not jobs:
        return []
    GlobalHydra.instance().clear()
    hydra = Hydra.create_main_hydra2("distill", create_config_search_path(CONFIG_MODULE))
    try:
        # As `distillkit -m` does: hydra.mode reaches every job (failed.json, not an exit).
        overrides = [*hydra_overrides, "hydra.mode=MULTIRUN"]
        cfg = hydra.compose_config("config", overrides=overrides, run_mode=RunMode.MULTIRUN)
        callbacks = Callbacks(cfg)
        context = HydraContext(config_loader=hydra.config_loader, callbacks=callbacks)
        callbacks.on_multirun_start(config=cfg, config_name="config")
        launcher = Plugins.instance().instantiate_launcher(
            hydra_context=context, task_function=distill_task, config=cfg
        )
        sweep_dir = Path(str(cfg.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, sweep_dir / "multirun.yaml")
        returns = list(launcher.launch([list(j) for j in jobs], initial_job_idx=0))
        callbacks.on_multirun_end(config=cfg, config_name="config")
    finally:
        GlobalHydra.instance().clear()
    for ret in returns:  # a job that raised past the task body (e.g. SIGTERM): report, go on
        if ret.status == JobStatus.FAILED:
            print(f"distillkit.tables: job failed: {ret._return_value!r}", file=sys.stderr)
    return returns


def main(argv: Sequence[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 1:
        raise SystemExit("usage: python -m distillkit.tables.launch jobs.json")
    spec = json.loads(Path(args[0]).read_text())
    launch(spec["hydra"], spec["jobs"])


if __name__ == "__main__":
    main()
