"""Atomic file writes: a run interrupted mid-write never leaves a half-written state file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def _atomic_write(path: Path, write: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with_suppressed_unlink(tmp)
        raise
    return path


def with_suppressed_unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def save_torch(obj: Any, path: str | Path) -> Path:
    """`torch.save` to a temporary file, then rename over `path`."""
    return _atomic_write(Path(path), lambda handle: torch.save(obj, handle))


def save_json(obj: Any, path: str | Path) -> Path:
    """Pretty JSON, written atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n"
    return _atomic_write(Path(path), lambda handle: handle.write(text.encode()))


def save_bytes(data: bytes, path: str | Path) -> Path:
    return _atomic_write(Path(path), lambda handle: handle.write(data))
