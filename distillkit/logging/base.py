"""The logger interface every run writer implements."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image


class Logger:
    def log_scalars(self, values: Mapping[str, float], step: int) -> None: ...

    def log_images(self, name: str, image: Image.Image, step: int, caption: str = "") -> None: ...

    def log_histogram(self, name: str, values: Any, step: int) -> None:
        """A distribution (e.g. the synthetic pixels); only trackers with histograms keep it."""

    def log_table(
        self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None: ...

    def log_summary(self, values: Mapping[str, Any]) -> None: ...

    def resume_state(self) -> dict[str, Any]:
        """What a checkpoint keeps so a resumed run continues this logger (none by default)."""
        return {}

    def finish(self, failed: BaseException | None = None) -> None:
        """Close the writer; `failed` is the exception that ended the run, if any."""
