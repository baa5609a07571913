"""`distillkit-unequalness dataset=... sizes=[...]`: U of real sets against set size
(conf/unequalness.yaml).

Every key of the composed config is read by `UnequalnessConfig` (the `dsa` block by `DSA`): a
misspelt one is one line naming it and the nearest valid key, exit 2, before any data is loaded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from distillkit.cli._common import exit_on_user_errors, run_hydra_app
from distillkit.cli.experts import BenchSettings, mapping
from distillkit.config import as_dict
from distillkit.errors import ConfigError
from distillkit.settings import ranged


@dataclasses.dataclass(frozen=True)
class UnequalnessConfig(BenchSettings):
    """conf/unequalness.yaml: every key distillkit-unequalness reads."""

    sizes: Sequence[int] = (1, 2, 5, 10, 50, 100, 500)
    distances: Sequence[str] = ("dm", "dc", "dsa")
    #: Random networks per measurement, and independent per-class samples per size.
    num_nets: int = ranged(3, minimum=1)
    repeats: int = ranged(3, minimum=1)
    progress: bool = True
    #: The DSA of the `dsa` distance (`DSA.from_config` reads the block).
    dsa: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def check(self) -> None:
        from distillkit.metrics.unequalness import resolve_distances

        super().check()
        for name, values in (("sizes", self.sizes), ("distances", self.distances)):
            if isinstance(values, str | Mapping) or not isinstance(values, Sequence):
                raise ConfigError(f"{name} must be a list, got {name}={values!r}")
        for size in self.sizes:
            ok = not isinstance(size, bool) and isinstance(size, int | float) and size == int(size)
            if not (ok and size >= 1):
                raise ConfigError(f"sizes must hold positive integers, got {size!r}")
        resolve_distances(self.distances)  # names no distance: the metric's own line
        self.augment()  # the dsa block's keys and values, before any data

    def augment(self) -> Any:
        from distillkit.augment import DSA

        return DSA.from_config(mapping(self.dsa, "dsa"))


@exit_on_user_errors
def real_curve(settings: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """The curve's rows and the dataset's name."""
    from distillkit.assembly import Bench
    from distillkit.metrics.real_curve import unequalness_curve

    command = UnequalnessConfig.from_config(settings)  # every key known, before any data
    bench = Bench.from_config(settings)
    rows = unequalness_curve(
        bench.data,
        [int(s) for s in command.sizes],
        bench.networks,
        bench.generators["unequalness/real"],
        [str(d) for d in command.distances],
        command.num_nets,
        command.repeats,
        command.augment(),
        progress=command.progress,
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
