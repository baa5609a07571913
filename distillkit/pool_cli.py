"""`distillkit-pretrain`: train the pool IID's class centralisation samples from (a Hydra app,
conf/pretrain.yaml).

    distillkit-pretrain dataset=cifar10 pool.size=1000 pool.epochs=40   # the published pool

Writes shards to `pool.dir` (by default where `regularizer.cc.pool` looks for the same dataset);
re-running with a larger pool.size extends the pool.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from distillkit.cli import run_training_job


def run_pretrain(settings: dict[str, Any]) -> dict[str, Any]:
    """Train `pool.size` members into `pool.dir`; returns a short summary."""
    import torch

    from distillkit.config import resolve_device
    from distillkit.evaluation.protocol import test_accuracy
    from distillkit.networks import NetworkFactory
    from distillkit.pool import PoolSettings, check_pool_size, train_pool
    from distillkit.progress import progress_bar
    from distillkit.seeding import RunGenerators
    from distillkit.trainer import load_data

    pool = settings["pool"]
    check_pool_size(int(pool["size"]), int(pool["members_per_shard"]))
    device = resolve_device(str(settings["device"]))
    data = load_data(settings["dataset"], device)
    networks = NetworkFactory.from_config(settings["model"], data.info, device)
    generators = RunGenerators(int(settings["seed"]))
    size = int(pool["size"])
    bar = progress_bar(
        total=size, desc="pool", disable=not settings.get("progress", True), unit="net"
    )
    accuracies: list[float] = []

    def report(index: int, net: torch.nn.Module) -> float:
        acc = test_accuracy(net, data.test_images, data.test_labels, 1024)
        accuracies.append(acc)
        bar.update(1)
        bar.set_postfix({"member": index, "test": f"{acc:.1f}%"}, refresh=False)
        return acc

    started = time.perf_counter()
    written = train_pool(
        Path(pool["dir"]),
        data,
        networks,
        size,
        PoolSettings(
            epochs=int(pool["epochs"]),
            lr=float(pool["lr"]),
            momentum=float(pool["momentum"]),
            weight_decay=float(pool["weight_decay"]),
            batch_size=int(pool["batch"]),
        ),
        int(pool["members_per_shard"]),
        lambda i: generators[f"pool/{i}"],
        on_member=report,
        training_note={
            "train_images": int(data.train_images.shape[0]),
            "seed": int(settings["seed"]),
        },
    )
    bar.close()
    return {
        "pool_dir": str(pool["dir"]),
        "shards_written": [str(p) for p in written],
        "members_trained": len(accuracies),
        "test_accuracy": accuracies,
        "seconds": round(time.perf_counter() - started, 2),
    }


@hydra.main(config_path="pkg://distillkit.conf", config_name="pretrain", version_base="1.3")
def _pretrain_job(cfg: DictConfig) -> None:
    run_training_job(run_pretrain, cfg, "pool members", "members_trained", "pool_dir")


def pretrain(argv: Sequence[str] | None = None) -> None:
    """`distillkit-pretrain [overrides]`: train a pool of frozen feature extractors for IID."""
    args = sys.argv[1:] if argv is None else list(argv)
    sys.argv = [sys.argv[0], *args]
    _pretrain_job()
