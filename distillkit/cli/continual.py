"""`distillkit-continual [overrides]`: class-incremental learning with distilled sets (a Hydra
app, conf/continual.yaml).

    distillkit-continual dataset=cifar100 method=dm ipc=20 steps=5 orders=5 method.iterations=...
    distillkit-continual dataset=cifar100 method=dm regularizer=iid compare=[path/continual.csv]

Writes continual.csv (one row per order, step and evaluation model) and continual.png (accuracy
against classes seen, mean +- std over orders; runs listed in `compare` drawn alongside), and
prints the per-step table. The run is checked and assembled as `distillkit`'s (the same
validation, the same per-setting published values from conf/tuned).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from distillkit.cli._common import exit_on_user_errors, run_hydra_app


@exit_on_user_errors
def checked_settings(cfg: DictConfig) -> dict[str, Any]:
    """The continual config, validated once (the run's checks plus steps, orders, compare)."""
    from distillkit.config import checked_config
    from distillkit.continual import CONTINUAL_KEYS

    return checked_config(cfg, CONTINUAL_KEYS)


@exit_on_user_errors
def continual_rows(settings: dict[str, Any]) -> tuple[list[dict[str, Any]], list, str]:
    """(this run's rows, the compared runs' rows, the dataset's name); `settings` checked."""
    from distillkit.assembly import assemble_run
    from distillkit.continual import read_csv, run_continual

    bench = assemble_run(settings, distil=False).bench
    others = [read_csv(p) for p in settings.get("compare") or []]

    def show(row: dict) -> None:
        if settings.get("progress", True):
            print(
                f"order {row['order']} step {row['step']} ({row['classes_seen']} classes, "
                f"{row['images']} images): {row['model']} {row['mean']:.2f}%",
                flush=True,
            )

    rows = run_continual(settings, bench.data, bench.device, on_step=show)
    return rows, others, bench.data.info.name


def wandb_enabled(settings: dict[str, Any]) -> bool:
    wandb_cfg = (settings.get("logger") or {}).get("wandb") or {}
    return bool(wandb_cfg.get("enabled")) and wandb_cfg.get("mode", "offline") != "disabled"


def log_to_wandb(settings: dict[str, Any], run_dir: Path, rows: list, summary: list) -> None:
    """With `+logger=wandb`: one W&B run of job type `continual` holding the accuracy per
    classes seen (mean and std over orders), every row as a table, and the plot."""
    from PIL import Image

    from distillkit.continual import FIELDS
    from distillkit.logging import build_logger
    from distillkit.report import run_name

    wandb_cfg = {**settings["logger"]["wandb"], "job_type": "continual"}
    logger = build_logger({"wandb": wandb_cfg}, run_dir, settings, run_name(settings))
    for r in summary:
        values = {f"continual/{r['model']}/{k}": r[k] for k in ("mean", "std")}
        logger.log_scalars(values, int(r["classes_seen"]))
    logger.log_table("continual", FIELDS, [[row[f] for f in FIELDS] for row in rows])
    with Image.open(run_dir / "continual.png") as picture:
        logger.log_images("continual", picture.convert("RGB"), 0)
    logger.finish()


@hydra.main(config_path="pkg://distillkit.conf", config_name="continual", version_base="1.3")
def continual_job(cfg: DictConfig) -> None:
    from distillkit.continual import format_table, plot_continual, summarise_steps, write_csv

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    settings = checked_settings(cfg)
    rows, others, name = continual_rows(settings)
    write_csv(rows, run_dir / "continual.csv")
    title = (
        f"{name}: {settings['steps']} steps, ipc {settings['ipc']}, {settings['orders']} order(s)"
    )
    plot_continual([rows, *others], run_dir / "continual.png", title)
    summary = summarise_steps(rows)
    if wandb_enabled(settings):
        log_to_wandb(settings, run_dir, rows, summary)
    print(format_table(summary))
    print(f"-> {run_dir / 'continual.csv'}, {run_dir / 'continual.png'}")


def main(argv: Sequence[str] | None = None) -> None:
    run_hydra_app(continual_job, argv)
