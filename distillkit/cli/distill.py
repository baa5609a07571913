"""`distillkit [overrides]`: compose the config groups and run one (or -m: many) distillations."""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from distillkit.cli._common import EXIT_NUMERICAL, EXIT_USER, USER_ERRORS, report, run_hydra_app
from distillkit.io import save_json

#: Jobs of this process's multirun that failed: (job directory, error line).
FAILED_JOBS: list[tuple[Path, str]] = []
#: What a failed job returns to the sweeper. Optuna's sweeper (hydra-optuna-sweeper 1.3 with
#: optuna 2.10) records a value that is not float-castable as a failed trial and goes on;
#: NaN would make it pass the value along with the failed state, which optuna refuses (the
#: whole search stops). The basic sweeper ignores return values.
FAILED_VALUE = None

log = logging.getLogger("distillkit")


def _is_multirun() -> bool:
    return HydraConfig.get().mode == RunMode.MULTIRUN


def _record_failure(cfg: DictConfig, run_dir: Path, exc: BaseException) -> None:
    """failed.json in the job's directory (the table renderer marks the cell), one line out."""

    def pick(path: str) -> object:
        return OmegaConf.select(cfg, path, default=None)

    regularizers = pick("regularizer")
    record = {
        "status": "failed",
        "error": type(exc).__name__,
        "message": str(exc),
        "method": pick("method.name"),
        "regularizers": sorted(regularizers) if isinstance(regularizers, DictConfig) else [],
        "dataset": pick("dataset.name"),
        "ipc": pick("ipc"),
        "seed": pick("seed"),
        "model": pick("model.name"),
    }
    if not isinstance(exc, USER_ERRORS + (FloatingPointError,)):
        record["traceback"] = traceback.format_exception(exc)
    save_json(record, run_dir / "failed.json")
    line = f"job {HydraConfig.get().job.num} failed ({type(exc).__name__}): {exc}"
    FAILED_JOBS.append((run_dir, line))
    print(f"distillkit: {line} -> {run_dir / 'failed.json'}", file=sys.stderr)


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


@hydra.main(config_path="pkg://distillkit.conf", config_name="config", version_base="1.3")
def distill_job(cfg: DictConfig) -> float | None:
    """One job: a Trainer run in Hydra's output directory; returns the objective (validation
    accuracy when `dataset.validation` > 0, else the headline test accuracy)."""
    from distillkit.trainer import RunInterrupted, Trainer  # torch loads only for a job

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    default_sweep_group(cfg)
    try:
        results = Trainer(cfg, run_dir).run()
    except RunInterrupted as exc:  # stops a whole sweep too
        print(f"distillkit: interrupted: {exc}", file=sys.stderr)
        raise SystemExit(128 + exc.signum) from None
    except Exception as exc:
        if _is_multirun():  # one failing job must not stop the others
            _record_failure(cfg, run_dir, exc)
            return FAILED_VALUE
        if isinstance(exc, FloatingPointError):
            report(exc)
            raise SystemExit(EXIT_NUMERICAL) from None
        if isinstance(exc, USER_ERRORS):
            report(exc)
            raise SystemExit(EXIT_USER) from None
        raise
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
    FAILED_JOBS.clear()
    run_hydra_app(distill_job, argv)
    if FAILED_JOBS:
        print(f"distillkit: {len(FAILED_JOBS)} job(s) of the sweep failed:", file=sys.stderr)
        for _, line in FAILED_JOBS:
            print(f"  {line}", file=sys.stderr)
        raise SystemExit(1)
