"""`distillkit-continual`: class-incremental learning with distilled sets (a Hydra app,
conf/continual.yaml).

    distillkit-continual dataset=cifar100 method=dm ipc=20 steps=5 orders=5 method.iterations=...
    distillkit-continual dataset=cifar100 method=dm regularizer=iid compare=[path/continual.csv]

Writes continual.csv (one row per order, step and evaluation model) and continual.png (accuracy
against classes seen, mean +- std over orders; runs listed in `compare` drawn alongside), and
prints the per-step table.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from distillkit.allocator import use_allocator
from distillkit.cli import USER_ERRORS, _report
from distillkit.config import quote_numeric_group_choices


@hydra.main(config_path="pkg://distillkit.conf", config_name="continual", version_base="1.3")
def _continual_job(cfg: DictConfig) -> None:
    from distillkit.config import resolve_device, synthetic_factor
    from distillkit.continual import (
        format_table,
        plot_continual,
        read_csv,
        run_continual,
        summarise_steps,
        write_csv,
    )
    from distillkit.trainer import as_dict, build_dsa, load_data

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    settings = as_dict(cfg)
    use_allocator()  # reuse freed host memory (distillkit/allocator.py)
    try:
        device = resolve_device(str(settings["device"]))
        data = load_data(settings["dataset"], device)
        others = [read_csv(p) for p in settings.get("compare") or []]

        def show(row: dict) -> None:
            if settings.get("progress", True):
                print(
                    f"order {row['order']} step {row['step']} ({row['classes_seen']} classes, "
                    f"{row['images']} images): {row['model']} {row['mean']:.2f}%",
                    flush=True,
                )

        rows = run_continual(
            settings, data, device, build_dsa, synthetic_factor(settings), on_step=show
        )
    except USER_ERRORS as exc:
        _report(exc)
        raise SystemExit(2) from None
    write_csv(rows, run_dir / "continual.csv")
    title = (
        f"{data.info.name}: {settings['steps']} steps, ipc {settings['ipc']}, "
        f"{settings['orders']} order(s)"
    )
    plot_continual([rows, *others], run_dir / "continual.png", title)
    print(format_table(summarise_steps(rows)))
    print(f"-> {run_dir / 'continual.csv'}, {run_dir / 'continual.png'}")


def continual(argv: Sequence[str] | None = None) -> None:
    """`distillkit-continual [overrides]`: class-incremental evaluation of a method."""
    args = sys.argv[1:] if argv is None else list(argv)
    sys.argv = [sys.argv[0], *quote_numeric_group_choices(args)]
    _continual_job()
