"""Progress bars that stay readable in logs: frequent on a terminal, sparse in a file."""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm


def progress_bar(*args: Any, **kwargs: Any) -> tqdm:
    """A tqdm bar; when stderr is not a terminal (SLURM logs, CI), update every 30 s at most."""
    if not sys.stderr.isatty():
        kwargs.setdefault("mininterval", 30.0)
    return tqdm(*args, **kwargs)
