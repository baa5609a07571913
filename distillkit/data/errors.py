"""Error raised when a dataset's files are missing, with a message that says how to fix it.

A missing dataset is a configuration problem, not a bug, so the error is one readable paragraph
(dataset, paths tried, fix) instead of a deep torchvision traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

ROOT_ENV_VAR = "DISTILLKIT_DATA"


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not where the data root says they should be."""


def dataset_not_found(
    name: str,
    tried: Sequence[Path | str],
    *,
    downloadable: bool = True,
    layout: str | None = None,
    detail: str | None = None,
) -> DatasetNotFoundError:
    """Build the one-paragraph error for dataset `name` after looking in `tried`."""
    paths = ", ".join(str(p) for p in tried) or "(no path)"
    parts = [
        f"Dataset '{name}' was not found (looked in: {paths}).",
        f"The data root is the `root` argument, else the environment variable {ROOT_ENV_VAR}, "
        "else ./data.",
    ]
    fix = (
        f"To fix it, set `dataset.root=/path/to/data` (or export {ROOT_ENV_VAR}=/path/to/data) "
        "to a folder that holds the data"
    )
    if downloadable:
        fix += ", or set `dataset.download=true` on a machine with internet access."
    else:
        fix += "; this dataset cannot be downloaded automatically."
    parts.append(fix)
    if layout:
        parts.append(f"Expected layout: {layout}.")
    if detail:
        parts.append(f"Underlying error: {' '.join(detail.split())}")
    return DatasetNotFoundError(" ".join(parts))
