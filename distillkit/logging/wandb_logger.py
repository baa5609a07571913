"""Weights & Biases mirror of the local logs (offline by default: no account needed)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from distillkit.logging.base import Logger


class WandbLogger(Logger):
    """One W&B run per Hydra job, written under the job's directory."""

    def __init__(
        self,
        cfg: Mapping[str, Any],
        run_dir: Path,
        run_config: Mapping[str, Any],
        name: str,
        run_id: str | None = None,
    ) -> None:
        import wandb

        self._wandb = wandb
        #: Kept in every checkpoint: a resumed run logs into the same W&B run.
        self.run_id = run_id or secrets.token_hex(8)
        self.run = wandb.init(
            id=self.run_id,
            resume="allow",
            project=cfg.get("project", "distillkit"),
            entity=cfg.get("entity"),
            group=cfg.get("group"),
            tags=list(cfg.get("tags") or []),
            name=name,
            mode=cfg.get("mode", "offline"),
            dir=str(run_dir),
            config=dict(run_config),
            reinit="finish_previous",
            settings=wandb.Settings(console="off", silent=True),
        )

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        self.run.log({k: float(v) for k, v in values.items()}, step=int(step))

    def log_images(self, name: str, image: Image.Image, step: int, caption: str = "") -> None:
        self.run.log({name: self._wandb.Image(image, caption=caption)}, step=int(step))

    def log_table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        table = self._wandb.Table(columns=list(columns), data=[list(r) for r in rows])
        self.run.log({name: table})

    def log_summary(self, values: Mapping[str, Any]) -> None:
        for key, value in values.items():
            self.run.summary[key] = value

    def resume_state(self) -> dict[str, Any]:
        return {"wandb_run_id": self.run_id}

    def finish(self) -> None:
        self.run.finish()
