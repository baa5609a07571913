"""`distillkit-pretrain [overrides]`: train the pool IID's class centralisation samples from
(conf/pretrain.yaml).

    distillkit-pretrain dataset=cifar10                          # the published pool: 1000 x 40
    distillkit-pretrain dataset=digits pool.size=4 pool.epochs=2  # a CPU-scale one

Writes shards to `pool.dir` (by default where `regularizer.cc.pool` looks for the same dataset),
recording size, epochs, model and width: runs with a smaller pool warn and record it, paper-scale
tables refuse it. Re-running with a larger pool.size extends the pool.

Every key of the composed config is read by `PretrainConfig` (the pool's by `PoolOptions`): a
misspelt one is one line naming it and the nearest valid key, exit 2, before any data is loaded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from distillkit.cli._common import run_hydra_app
from distillkit.cli._stores import MemberReport, store_job
from distillkit.cli.experts import Block, StoreSettings
from distillkit.errors import ConfigError
from distillkit.pool import PUBLISHED_POOL, PoolSettings, check_pool_size
from distillkit.settings import ranged


@dataclasses.dataclass(frozen=True)
class PoolOptions(Block):
    """`pool`: how many members, their recipe (IID's pre_model.py) and where they are stored."""

    size: int = PUBLISHED_POOL["size"]
    epochs: int = ranged(PoolSettings.epochs, minimum=1)
    lr: float = ranged(PoolSettings.lr, above=0)
    momentum: float = ranged(PoolSettings.momentum, minimum=0)
    weight_decay: float = ranged(PoolSettings.weight_decay, minimum=0)
    batch: int = ranged(PoolSettings.batch_size, minimum=1)
    members_per_shard: int = 10
    dir: str = ""

    def check(self) -> None:
        check_pool_size(self.size, self.members_per_shard)
        if not self.dir:
            raise ConfigError("pool.dir must name the pool's directory")

    def recipe(self) -> PoolSettings:
        return PoolSettings(
            epochs=self.epochs,
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            batch_size=self.batch,
        )


@dataclasses.dataclass(frozen=True)
class PretrainConfig(StoreSettings):
    """conf/pretrain.yaml: every key distillkit-pretrain reads."""

    pool: PoolOptions = dataclasses.field(default_factory=PoolOptions)


def run_pretrain(settings: dict[str, Any]) -> dict[str, Any]:
    """Train `pool.size` members into `pool.dir`; returns a short summary."""
    from distillkit.assembly import Bench
    from distillkit.pool import train_pool

    command = PretrainConfig.from_config(settings)  # every key known, before any data
    pool = command.pool
    bench = Bench.from_config(settings)
    report = MemberReport(bench.data, pool.size, "pool", "member", command.progress)
    written = train_pool(
        Path(pool.dir),
        bench.data,
        bench.networks,
        pool.size,
        pool.recipe(),
        pool.members_per_shard,
        lambda i: bench.generators[f"pool/{i}"],
        on_member=report,
        training_note={
            "train_images": int(bench.data.train_images.shape[0]),
            "seed": command.seed,
        },
    )
    return report.summary(pool.dir, written)


@hydra.main(config_path="pkg://distillkit.conf", config_name="pretrain", version_base="1.3")
def pretrain_job(cfg: DictConfig) -> None:
    store_job(run_pretrain, cfg, "pool members")


def main(argv: Sequence[str] | None = None) -> None:
    run_hydra_app(pretrain_job, argv)
