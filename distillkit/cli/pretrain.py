"""`distillkit-pretrain [overrides]`: train the pool IID's class centralisation samples from
(conf/pretrain.yaml).

    distillkit-pretrain dataset=cifar10                          # the published pool: 1000 x 40
    distillkit-pretrain dataset=digits pool.size=4 pool.epochs=2  # a CPU-scale one

Writes shards to `pool.dir` (by default where `regularizer.cc.pool` looks for the same dataset),
recording size, epochs, model and width: runs with a smaller pool warn and record it, paper-scale
tables refuse it. Re-running with a larger pool.size extends the pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from distillkit.cli._common import run_hydra_app
from distillkit.cli._stores import MemberReport, store_job


def run_pretrain(settings: dict[str, Any]) -> dict[str, Any]:
    """Train `pool.size` members into `pool.dir`; returns a short summary."""
    from distillkit.assembly import Bench
    from distillkit.pool import PoolSettings, check_pool_size, train_pool

    pool = settings["pool"]
    check_pool_size(int(pool["size"]), int(pool["members_per_shard"]))
    bench = Bench.from_config(settings)
    size = int(pool["size"])
    report = MemberReport(bench.data, size, "pool", "member", bool(settings.get("progress", True)))
    written = train_pool(
        Path(pool["dir"]),
        bench.data,
        bench.networks,
        size,
        PoolSettings(
            epochs=int(pool["epochs"]),
            lr=float(pool["lr"]),
            momentum=float(pool["momentum"]),
            weight_decay=float(pool["weight_decay"]),
            batch_size=int(pool["batch"]),
        ),
        int(pool["members_per_shard"]),
        lambda i: bench.generators[f"pool/{i}"],
        on_member=report,
        training_note={
            "train_images": int(bench.data.train_images.shape[0]),
            "seed": int(settings["seed"]),
        },
    )
    return report.summary(pool["dir"], written)


@hydra.main(config_path="pkg://distillkit.conf", config_name="pretrain", version_base="1.3")
def pretrain_job(cfg: DictConfig) -> None:
    store_job(run_pretrain, cfg, "pool members")


def main(argv: Sequence[str] | None = None) -> None:
    run_hydra_app(pretrain_job, argv)
