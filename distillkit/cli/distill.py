"""`distillkit [overrides]`: compose the config groups and run one (or -m: many) distillations."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from distillkit.cli._common import hydra_command

#: The composed config this command runs (conf/config.yaml and its groups).
CONFIG_NAME = "config"

log = logging.getLogger("distillkit")


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


def distill_job(cfg: DictConfig) -> float | None:
    """One job: a Trainer run in Hydra's output directory; returns the objective (validation
    accuracy when `dataset.validation` > 0, else the headline test accuracy). Errors propagate
    to the command's job runner (`_common.run_task`: the exit status, or a multirun failure)."""
    from distillkit.trainer import RunInterrupted, Trainer  # torch loads only for a job

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    default_sweep_group(cfg)
    try:
        results = Trainer(cfg, run_dir).run()
    except RunInterrupted as exc:  # stops a whole sweep too
        print(f"distillkit: interrupted: {exc}", file=sys.stderr)
        raise SystemExit(128 + exc.signum) from None
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


def main(argv: Sequence[str] | None = None) -> None:
    """`distillkit [overrides]`: in a multirun, failing jobs are reported (failed.json) while the
    others complete; the command then exits with status 1 and one line per failed job."""
    hydra_command(distill_job, CONFIG_NAME, argv)
