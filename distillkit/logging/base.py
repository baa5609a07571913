"""The logger interface, and the composition of the local writer with W&B."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image


class Logger:
    def log_scalars(self, values: Mapping[str, float], step: int) -> None: ...

    def log_images(self, name: str, image: Image.Image, step: int, caption: str = "") -> None: ...

    def log_table(
        self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None: ...

    def log_summary(self, values: Mapping[str, Any]) -> None: ...

    def finish(self) -> None: ...


class MultiLogger(Logger):
    """Fans every call out to several loggers (the local one first)."""

    def __init__(self, loggers: Sequence[Logger]) -> None:
        self.loggers = list(loggers)

    @property
    def records(self) -> list[dict[str, Any]]:
        """Every scalar record logged locally so far (what a checkpoint keeps)."""
        from distillkit.logging.local import LocalLogger

        local = next((lg for lg in self.loggers if isinstance(lg, LocalLogger)), None)
        return list(local.records) if local is not None else []

    @property
    def wandb_run_id(self) -> str | None:
        """The W&B run id when W&B mirrors this run (a resume continues the same run)."""
        return next((lg.run_id for lg in self.loggers if hasattr(lg, "run_id")), None)

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        for logger in self.loggers:
            logger.log_scalars(values, step)

    def log_images(self, name: str, image: Image.Image, step: int, caption: str = "") -> None:
        for logger in self.loggers:
            logger.log_images(name, image, step, caption)

    def log_table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        for logger in self.loggers:
            logger.log_table(name, columns, rows)

    def log_summary(self, values: Mapping[str, Any]) -> None:
        for logger in self.loggers:
            logger.log_summary(values)

    def finish(self) -> None:
        for logger in self.loggers:
            logger.finish()


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
    from distillkit.logging.local import LocalLogger

    loggers: list[Logger] = [LocalLogger(run_dir, records)]
    wandb_cfg = dict(logger_cfg.get("wandb") or {})
    if wandb_cfg.get("enabled", False) and wandb_cfg.get("mode", "offline") != "disabled":
        from distillkit.logging.wandb_logger import WandbLogger

        loggers.append(WandbLogger(wandb_cfg, run_dir, run_config, name, run_id=wandb_run_id))
    return MultiLogger(loggers)
