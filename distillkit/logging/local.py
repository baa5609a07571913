"""Local files: every scalar to metrics.jsonl (with its step), tables to CSV, images to PNG."""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Mapping, Sequence
from io import StringIO
from pathlib import Path
from typing import Any

from PIL import Image

from distillkit.io import save_bytes
from distillkit.logging.base import Logger


class LocalLogger(Logger):
    """Appends to metrics.jsonl and keeps the records in memory, so a checkpoint can hold them.

    `records` (given on a fresh start or a resume) replaces the file's contents first: lines a
    killed run logged after its last checkpoint would otherwise appear twice.
    """

    def __init__(self, run_dir: Path, records: Sequence[Mapping[str, Any]] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.records: list[dict[str, Any]] = []
        if records is not None:
            self.records = [dict(r) for r in records]
            text = "".join(json.dumps(r) + "\n" for r in self.records)
            save_bytes(text.encode(), self.metrics_path)
        self._metrics = self.metrics_path.open("a", encoding="utf-8")

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        record = {"step": int(step), "time": round(time.time(), 3)}
        record.update({k: float(v) for k, v in values.items()})
        self.records.append(record)
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()

    def log_images(self, name: str, image: Image.Image, step: int, caption: str = "") -> None:
        path = self.run_dir / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)

    def log_table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        buffer = StringIO()
        csv.writer(buffer).writerows([list(columns), *[list(r) for r in rows]])
        save_bytes(buffer.getvalue().encode(), self.run_dir / f"{name}.csv")

    def resume_state(self) -> dict[str, Any]:
        return {"metrics": list(self.records)}

    def finish(self, failed: BaseException | None = None) -> None:
        self._metrics.close()
