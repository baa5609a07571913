"""`distillkit-cam dataset=...`: train (or load) a classifier on real data, then map where it
looks: per-class CAM top-region frequency maps and their mirror symmetry (conf/cam.yaml)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from distillkit.assembly import Bench
from distillkit.augment import DSA
from distillkit.cli._common import exit_on_user_errors, run_hydra_app
from distillkit.config import as_dict
from distillkit.errors import InputError
from distillkit.evaluation import EvalSettings, test_accuracy, train_network
from distillkit.io import save_json, save_torch
from distillkit.metrics.cam import mirror_symmetry, plot_frequency, region_frequency


@exit_on_user_errors
def run_cam_analysis(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Writes classifier.pt, cam_frequency.png, cam.json; returns the summary."""
    bench = Bench.from_config(cfg)
    data, networks, generators, device = bench.data, bench.networks, bench.generators, bench.device
    if cfg.get("checkpoint"):
        path = Path(cfg["checkpoint"])
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such classifier checkpoint")
        net = networks(generators["cam/init"])
        try:
            net.load_state_dict(torch.load(path, map_location=device, weights_only=True))
        except RuntimeError as exc:
            raise InputError(f"{path}: does not fit {cfg['model']['name']} here ({exc})") from None
    else:
        train = cfg["train"]
        settings = EvalSettings(
            epochs=int(train["epochs"]), lr=float(train["lr"]), batch_size=int(train["batch_size"])
        )
        augment = DSA.from_config(cfg["dsa"]) if train["dsa"] else None
        net = train_network(
            networks,
            data.train_images,
            data.train_labels,
            settings,
            augment,
            generators["cam/train"],
        )
        save_torch(net.state_dict(), run_dir / "classifier.pt")
    accuracy = test_accuracy(net, data.test_images, data.test_labels, 1024)
    if cfg["split"] == "train":
        images, labels = data.train_images, data.train_labels
    else:
        images, labels = data.test_images, data.test_labels
    frequency = region_frequency(net, images, labels, data.info.num_classes, cfg["fraction"])
    symmetry = mirror_symmetry(frequency)
    names = list(data.info.class_names)
    plot_frequency(
        frequency,
        names,
        symmetry,
        run_dir / "cam_frequency.png",
        f"{data.info.name}: top-{cfg['fraction']:.0%} CAM region frequency ({cfg['split']})",
    )
    summary = {
        "dataset": data.info.name,
        "test_accuracy": accuracy,
        "mirror_symmetry": {n: float(r) for n, r in zip(names, symmetry, strict=True)},
        "mean_mirror_symmetry": float(symmetry.mean()),
    }
    save_json(summary, run_dir / "cam.json")
    return summary


@hydra.main(config_path="pkg://distillkit.conf", config_name="cam", version_base="1.3")
def cam_job(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    summary = run_cam_analysis(as_dict(cfg), run_dir)
    print(f"classifier test accuracy {summary['test_accuracy']:.2f}%")
    for name, r in summary["mirror_symmetry"].items():
        print(f"{name:>12}: mirror correlation {r:.3f}")
    print(f"-> {run_dir}")


def main(argv: Sequence[str] | None = None) -> None:
    run_hydra_app(cam_job, argv)
