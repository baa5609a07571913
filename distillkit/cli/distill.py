"""`distillkit [overrides]`: compose the config groups and run one (or -m: many) distillations."""

from __future__ import annotations

import logging
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from distillkit.cli._common import hydra_command

if TYPE_CHECKING:
    from distillkit.distributed import World

#: The composed config this command runs (conf/config.yaml and its groups).
CONFIG_NAME = "config"

log = logging.getLogger("distillkit")
MULTIRUN_UNDER_LAUNCH = (
    "a sweep (-m) under a launch of {} processes would run every job in every process: "
    "launch each job on its own (torchrun ... -m distillkit <overrides>, or one srun per job: "
    "README, Many GPUs)"
)


def _is_multirun() -> bool:
    return HydraConfig.get().mode == RunMode.MULTIRUN


def default_sweep_group(cfg: DictConfig) -> None:
    """In a sweep, W&B's group defaults to one per sweep (`distill-<sweep directory name>`), so
    seeds and settings of one sweep are grouped on the dashboard."""
    wandb = OmegaConf.select(cfg, "logger.wandb")
    if _is_multirun() and isinstance(wandb, DictConfig) and not wandb.get("group"):
        hydra_cfg = HydraConfig.get()
        with open_dict(wandb):
            wandb.group = f"{hydra_cfg.job.name}-{Path(hydra_cfg.sweep.dir).name}"


def objective(results: dict) -> float | None:
    """What the job returns to a sweeper: validation accuracy when a validation split is held
    out (an Optuna search must not select on test), else the headline test accuracy."""
    validation = results.get("validation") or {}
    headline = validation.get("headline") or results["headline"]
    return None if headline is None else headline["mean"]


def open_world(cfg: DictConfig) -> World:
    """The ranks of this job: a launcher's (torchrun, srun, submitit's tasks) when it started
    several processes, else one process with no process group. (A sweep under torchrun is
    refused in `main`; submitit's tasks each run one job of a sweep, which is a launch.)"""
    from distillkit.distributed import World
    from distillkit.runtime import resolve_device

    device = resolve_device(str(cfg.get("device", "auto")))
    timeout_s = float(OmegaConf.select(cfg, "distributed.timeout_s", default=1800))
    return World.from_environment(device.type, timeout_s=timeout_s)


def shared_run_dir(world: World, own: Path) -> Path:
    """Rank 0's run directory, on every rank (each rank's Hydra names its own from its clock).
    Another rank's own directory, when it differs and holds only Hydra's files, is removed."""
    run_dir = Path(world.broadcast_object(str(own)))
    if run_dir != own and own.is_dir():
        leftovers = [p for p in own.iterdir() if p.name != ".hydra" and p.suffix != ".log"]
        if not leftovers:
            shutil.rmtree(own, ignore_errors=True)
    return run_dir


def distill_job(cfg: DictConfig) -> float | None:
    """One job: a Trainer run in Hydra's output directory; returns the objective (validation
    accuracy when `dataset.validation` > 0, else the headline test accuracy). Errors propagate
    to the command's job runner (`_common.run_task`: the exit status, or a multirun failure).
    Under a launcher of N processes every rank runs the job in rank 0's run directory."""
    from distillkit.trainer import RunInterrupted, Trainer  # torch loads only for a job

    default_sweep_group(cfg)
    world = open_world(cfg)
    try:
        run_dir = shared_run_dir(world, Path(HydraConfig.get().runtime.output_dir))
        if world.is_distributed and world.is_main:
            log.info(
                "one run over %d processes (%s on %s, launched by %s) -> %s",
                world.size, world.backend, world.device.type, world.launch.source, run_dir,
            )  # fmt: skip
        try:
            results = Trainer(cfg, run_dir, world).run()
        except RunInterrupted as exc:  # stops a whole sweep too
            print(f"distillkit: interrupted: {exc}", file=sys.stderr)
            raise SystemExit(128 + exc.signum) from None
    finally:
        world.close()
    if not world.is_main:
        return objective(results)
    (run_dir / "failed.json").unlink(missing_ok=True)  # a re-run that now works
    headline = results["headline"]
    if headline is None:
        log.info(
            "%s %s ipc=%s: not evaluated", results["method"], results["dataset"], results["ipc"]
        )
        return None
    log.info(
        "%s %s ipc=%s: %s %.2f ± %.2f%% (%d models) -> %s",
        results["method"], results["dataset"], results["ipc"], headline["model"],
        headline["mean"], headline["std"], headline["n"], run_dir,
    )  # fmt: skip
    return objective(results)


def launched_processes(env: Mapping[str, str] | None = None) -> int:
    """How many processes a launcher started for this job (`Launch`, read without importing
    torch); 1 without a launcher, or with variables that do not fit (the job reports those)."""
    from distillkit.launch import DistributedError, Launch

    try:
        return Launch.from_env(env).size
    except DistributedError:
        return 1


def main(argv: Sequence[str] | None = None) -> None:
    """`distillkit [overrides]`: in a multirun, failing jobs are reported (failed.json) while the
    others complete; the command then exits with status 1 and one line per failed job. Under a
    launcher of several processes a sweep is refused before Hydra starts (`open_world`)."""
    args = sys.argv[1:] if argv is None else list(argv)
    processes = launched_processes()
    if processes > 1 and ("-m" in args or "--multirun" in args):
        print(f"distillkit: {MULTIRUN_UNDER_LAUNCH.format(processes)}", file=sys.stderr)
        raise SystemExit(2)
    hydra_command(distill_job, CONFIG_NAME, argv)
