"""The composition of the local writer with W&B, as one logger."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from distillkit.logging.base import Logger
from distillkit.logging.local import LocalLogger


class MultiLogger(Logger):
    """Fans every call out to several loggers (the local one first)."""

    def __init__(self, loggers: Sequence[Logger]) -> None:
        self.loggers = list(loggers)

    def resume_state(self) -> dict[str, Any]:
        """{"metrics": the local records, "wandb_run_id": W&B's run, or None}, merged."""
        state: dict[str, Any] = {"metrics": [], "wandb_run_id": None}
        for logger in self.loggers:
            state.update(logger.resume_state())
        return state

    @property
    def records(self) -> list[dict[str, Any]]:
        """Every scalar record logged locally so far (what a checkpoint keeps)."""
        return list(self.resume_state()["metrics"])

    @property
    def wandb_run_id(self) -> str | None:
        """The W&B run id when W&B mirrors this run (a resume continues the same run)."""
        return self.resume_state()["wandb_run_id"]

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        for logger in self.loggers:
            logger.log_scalars(values, step)

    def log_images(self, name: str, image: Image.Image, step: int, caption: str = "") -> None:
        for logger in self.loggers:
            logger.log_images(name, image, step, caption)

    def log_histogram(self, name: str, values: Any, step: int) -> None:
        for logger in self.loggers:
            logger.log_histogram(name, values, step)

    def log_table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        for logger in self.loggers:
            logger.log_table(name, columns, rows)

    def log_summary(self, values: Mapping[str, Any]) -> None:
        for logger in self.loggers:
            logger.log_summary(values)

    def finish(self, failed: BaseException | None = None) -> None:
        for logger in self.loggers:
            logger.finish(failed)


#: The keys of a run's `logger` block and of its `wandb` part (conf/logger/*.yaml).
LOGGER_KEYS = frozenset({"wandb"})
WANDB_KEYS = frozenset(
    {"enabled", "mode", "project", "entity", "group", "job_type", "tags", "console"}
)


def build_logger(
    logger_cfg: Mapping[str, Any],
    run_dir: Path,
    run_config: Mapping[str, Any],
    name: str,
    records: Sequence[Mapping[str, Any]] | None = None,
    wandb_run_id: str | None = None,
) -> MultiLogger:
    """The local writer (starting from `records` when given) plus W&B when enabled.

    `wandb_run_id` (from a checkpoint) makes W&B continue that run instead of starting another.
    """
    loggers: list[Logger] = [LocalLogger(run_dir, records)]
    wandb_cfg = dict(logger_cfg.get("wandb") or {})
    if wandb_cfg.get("enabled", False) and wandb_cfg.get("mode", "offline") != "disabled":
        from distillkit.logging.wandb_logger import WandbLogger  # wandb loads only when used

        loggers.append(
            WandbLogger(wandb_cfg, run_dir, run_config, name, run_id=wandb_run_id, records=records)
        )
    return MultiLogger(loggers)
