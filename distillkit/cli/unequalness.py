"""`distillkit-unequalness dataset=... sizes=[...]`: U of real sets against set size
(conf/unequalness.yaml)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from distillkit.cli._common import exit_on_user_errors, run_hydra_app
from distillkit.config import as_dict


@exit_on_user_errors
def real_curve(settings: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """The curve's rows and the dataset's name."""
    from distillkit.assembly import Bench
    from distillkit.augment import DSA
    from distillkit.metrics.real_curve import unequalness_curve

    bench = Bench.from_config(settings)
    rows = unequalness_curve(
        bench.data,
        [int(s) for s in settings["sizes"]],
        bench.networks,
        bench.generators["unequalness/real"],
        list(settings["distances"]),
        int(settings["num_nets"]),
        int(settings["repeats"]),
        DSA.from_config(settings["dsa"]),
        progress=bool(settings["progress"]),
    )
    return rows, bench.data.info.name


@hydra.main(config_path="pkg://distillkit.conf", config_name="unequalness", version_base="1.3")
def unequalness_job(cfg: DictConfig) -> None:
    from distillkit.metrics.real_curve import plot_curve, write_csv

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    rows, name = real_curve(as_dict(cfg))
    write_csv(rows, run_dir / "unequalness.csv")
    plot_curve(rows, run_dir / "unequalness.png", f"real {name}: U(X) vs set size")
    for row in rows:
        print(f"{row['distance']:>4} size {row['size']:>4}: {row['mean']:.4g} ± {row['std']:.2g}")
    print(f"-> {run_dir / 'unequalness.csv'}, {run_dir / 'unequalness.png'}")


def main(argv: Sequence[str] | None = None) -> None:
    run_hydra_app(unequalness_job, argv)
