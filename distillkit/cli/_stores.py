"""What `distillkit-experts` and `distillkit-pretrain` share: training a store of networks with
a progress bar, a test accuracy per member and one summary line."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from distillkit.cli._common import exit_on_user_errors
from distillkit.config import as_dict


class MemberReport:
    """The callback each trained member passes through: test accuracy, progress bar."""

    def __init__(self, data: Any, total: int, desc: str, label: str, show: bool) -> None:
        from distillkit.progress import progress_bar

        self.data, self.label = data, label
        self.accuracies: list[float] = []
        self.bar = progress_bar(total=total, desc=desc, disable=not show, unit="net")
        self.started = time.perf_counter()

    def __call__(self, index: int, net: Any, *_: Any) -> float:
        from distillkit.evaluation.protocol import test_accuracy

        acc = test_accuracy(net, self.data.test_images, self.data.test_labels, 1024)
        self.accuracies.append(acc)
        self.bar.update(1)
        self.bar.set_postfix({self.label: index, "test": f"{acc:.1f}%"}, refresh=False)
        return acc

    def summary(self, directory: str, written: list[Path]) -> dict[str, Any]:
        self.bar.close()
        return {
            "directory": str(directory),
            "shards_written": [str(p) for p in written],
            "trained": len(self.accuracies),
            "test_accuracy": self.accuracies,
            "seconds": round(time.perf_counter() - self.started, 2),
        }


def store_job(
    train: Callable[[dict[str, Any]], dict[str, Any]], cfg: DictConfig, what: str
) -> None:
    """Run `train` on the composed config and print one summary line; with `+logger=wandb`,
    the store is also recorded in W&B as a reference artifact (job type experts / pretrain)."""
    settings = as_dict(cfg)
    summary = exit_on_user_errors(train)(settings)
    wandb_cfg = (settings.get("logger") or {}).get("wandb") or {}
    if wandb_cfg.get("enabled") and wandb_cfg.get("mode", "offline") != "disabled":
        from distillkit.logging.wandb_logger import log_reference_artifact

        experts = what == "experts"
        directory = Path(summary["directory"])
        log_reference_artifact(
            wandb_cfg,
            "experts" if experts else "pretrain",
            f"{'experts' if experts else 'pool'}-{settings['dataset']['name']}-{directory.name}",
            "expert-buffer" if experts else "feature-pool",
            directory,
            settings,
            {k: summary[k] for k in ("trained", "test_accuracy", "seconds")},
            Path(HydraConfig.get().runtime.output_dir),
        )
    accs = summary["test_accuracy"]
    mean = f", final test accuracy {sum(accs) / len(accs):.2f}% (mean)" if accs else ""
    print(f"{summary['trained']} {what} trained in {summary['seconds']} s{mean} -> "
          f"{summary['directory']}")  # fmt: skip
