"""`distillkit-cam dataset=...`: train (or load) a classifier on real data, then map where it
looks: per-class CAM top-region frequency maps and their mirror symmetry (conf/cam.yaml).

Every key of the composed config is read by `CamConfig` (the classifier's training by
`CamTraining`, the `dsa` block by `DSA`): a misspelt one is one line naming it and the nearest
valid key, exit 2, before any data is loaded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from distillkit.assembly import Bench
from distillkit.augment import DSA
from distillkit.cli._common import exit_on_user_errors, run_hydra_app
from distillkit.cli.experts import BenchSettings, Block, mapping
from distillkit.config import as_dict
from distillkit.errors import ConfigError, InputError
from distillkit.evaluation import EvalSettings, test_accuracy, train_network
from distillkit.io import save_json, save_torch
from distillkit.metrics.cam import mirror_symmetry, plot_frequency, region_frequency
from distillkit.settings import ranged

#: The images whose maps are counted.
SPLITS = ("test", "train")


@dataclasses.dataclass(frozen=True)
class CamTraining(Block):
    """`train`: the classifier trained on the real training set (when no `checkpoint`)."""

    epochs: int = ranged(30, minimum=1)
    lr: float = ranged(0.01, above=0)
    batch_size: int = ranged(256, minimum=1)
    #: Per-sample DSA while training (the run's `dsa` block).
    dsa: bool = False

    def settings(self) -> EvalSettings:
        return EvalSettings(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size)


@dataclasses.dataclass(frozen=True)
class CamConfig(BenchSettings):
    """conf/cam.yaml: every key distillkit-cam reads."""

    #: A state_dict saved by an earlier distillkit-cam run (classifier.pt); None: train one.
    checkpoint: str | None = None
    train: CamTraining = dataclasses.field(default_factory=CamTraining)
    split: str = "test"
    #: Each map's top fraction of pixels counted as its region.
    fraction: float = ranged(0.1, above=0)
    #: The DSA of `train.dsa` (`DSA.from_config` reads the block).
    dsa: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def check(self) -> None:
        super().check()
        if self.split not in SPLITS:
            raise ConfigError(f"split must be {' or '.join(SPLITS)}, got {self.split!r}")
        if self.fraction > 1:
            raise ConfigError(f"fraction must be <= 1, got {self.fraction}")
        self.augment()  # the dsa block's keys and values, before any data

    def augment(self) -> DSA:
        return DSA.from_config(mapping(self.dsa, "dsa"))


@exit_on_user_errors
def run_cam_analysis(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Writes classifier.pt, cam_frequency.png, cam.json; returns the summary."""
    command = CamConfig.from_config(cfg)  # every key known, before any data
    bench = Bench.from_config(cfg)
    data, networks, generators, device = bench.data, bench.networks, bench.generators, bench.device
    if command.checkpoint:
        path = Path(command.checkpoint)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such classifier checkpoint")
        net = networks(generators["cam/init"])
        try:
            net.load_state_dict(torch.load(path, map_location=device, weights_only=True))
        except RuntimeError as exc:
            raise InputError(f"{path}: does not fit {cfg['model']['name']} here ({exc})") from None
    else:
        net = train_network(
            networks,
            data.train_images,
            data.train_labels,
            command.train.settings(),
            command.augment() if command.train.dsa else None,
            generators["cam/train"],
        )
        save_torch(net.state_dict(), run_dir / "classifier.pt")
    accuracy = test_accuracy(net, data.test_images, data.test_labels, 1024)
    if command.split == "train":
        images, labels = data.train_images, data.train_labels
    else:
        images, labels = data.test_images, data.test_labels
    frequency = region_frequency(net, images, labels, data.info.num_classes, command.fraction)
    symmetry = mirror_symmetry(frequency)
    names = list(data.info.class_names)
    plot_frequency(
        frequency,
        names,
        symmetry,
        run_dir / "cam_frequency.png",
        f"{data.info.name}: top-{command.fraction:.0%} CAM region frequency ({command.split})",
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
