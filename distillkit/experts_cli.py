"""`distillkit-experts`: train the expert trajectories MTT matches (a Hydra app, conf/experts.yaml).

    distillkit-experts dataset=cifar10 dataset.zca=true num_experts=100 epochs=50

Writes shards to `buffer_dir` (by default where `method=mtt` looks for the same dataset, model
and ZCA setting); re-running with more experts extends the buffer.
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


def run_experts(settings: dict[str, Any]) -> dict[str, Any]:
    """Train `num_experts` experts into `buffer_dir`; returns a short summary."""
    import torch

    from distillkit.config import resolve_device
    from distillkit.evaluation.protocol import test_accuracy
    from distillkit.experts import ExpertSettings, train_experts
    from distillkit.networks import NetworkFactory
    from distillkit.progress import progress_bar
    from distillkit.seeding import RunGenerators
    from distillkit.trainer import build_dsa, load_data

    device = resolve_device(str(settings["device"]))
    dataset_cfg = dict(settings["dataset"])
    dataset_cfg["zca"] = bool(settings.get("zca") or dataset_cfg.get("zca"))
    data = load_data(dataset_cfg, device)
    networks = NetworkFactory.from_config(settings["model"], data.info, device)
    augment = None
    if settings["dsa"]:
        augment = build_dsa({"strategy": settings["dsa_strategy"], "mode": "S"})
    generators = RunGenerators(int(settings["seed"]))
    num_experts = int(settings["num_experts"])
    bar = progress_bar(
        total=num_experts, desc="experts", disable=not settings.get("progress", True), unit="net"
    )
    accuracies: list[float] = []

    def report(index: int, net: torch.nn.Module, trajectory: torch.Tensor) -> None:
        del trajectory
        acc = test_accuracy(net, data.test_images, data.test_labels, 1024)
        accuracies.append(acc)
        bar.update(1)
        bar.set_postfix({"expert": index, "test": f"{acc:.1f}%"}, refresh=False)

    started = time.perf_counter()
    written = train_experts(
        Path(settings["buffer_dir"]),
        data,
        networks,
        augment,
        num_experts,
        ExpertSettings(int(settings["epochs"]), float(settings["lr"]), int(settings["batch"])),
        int(settings["experts_per_shard"]),
        lambda i: generators[f"experts/{i}"],
        on_expert=report,
    )
    bar.close()
    return {
        "buffer_dir": str(settings["buffer_dir"]),
        "shards_written": [str(p) for p in written],
        "experts_trained": len(accuracies),
        "test_accuracy": accuracies,
        "seconds": round(time.perf_counter() - started, 2),
    }


@hydra.main(config_path="pkg://distillkit.conf", config_name="experts", version_base="1.3")
def _experts_job(cfg: DictConfig) -> None:
    run_training_job(run_experts, cfg, "experts", "experts_trained", "buffer_dir")


def train_experts(argv: Sequence[str] | None = None) -> None:
    """`distillkit-experts [overrides]`: train an expert buffer for MTT."""
    args = sys.argv[1:] if argv is None else list(argv)
    sys.argv = [sys.argv[0], *args]
    _experts_job()
