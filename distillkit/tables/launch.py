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

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

CONFIG_MODULE = "pkg://distillkit.conf"


def distill_task(cfg: DictConfig) -> float | None:
    """The `distillkit` job body (failed.json on error); importable, so launchers can pickle it."""
    from distillkit.cli import _distill_job

    return _distill_job.__wrapped__(cfg)


def launch(hydra_overrides: Sequence[str], jobs: Sequence[Sequence[str]]) -> list[Any]:
    """Launch `jobs` (each a full list of task overrides) with the launcher in `hydra_overrides`.

    Returns Hydra's JobReturn objects (status, return value) in job order.
    """
    from hydra._internal.callbacks import Callbacks
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.plugins import Plugins
    from hydra.core.utils import JobStatus
    from hydra.types import HydraContext, RunMode
    from omegaconf import OmegaConf

    from distillkit.cli import FAILED_JOBS

    if not jobs:
        return []
    GlobalHydra.instance().clear()
    hydra = Hydra.create_main_hydra2("distill", create_config_search_path(CONFIG_MODULE))
    try:
        cfg = hydra.compose_config(
            "config", overrides=list(hydra_overrides), run_mode=RunMode.MULTIRUN
        )
        callbacks = Callbacks(cfg)
        context = HydraContext(config_loader=hydra.config_loader, callbacks=callbacks)
        callbacks.on_multirun_start(config=cfg, config_name="config")
        launcher = Plugins.instance().instantiate_launcher(
            hydra_context=context, task_function=distill_task, config=cfg
        )
        sweep_dir = Path(str(cfg.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, sweep_dir / "multirun.yaml")
        FAILED_JOBS.clear()
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
