"""Atomic file writes: a run interrupted mid-write never leaves a half-written state file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from distillkit.errors import InputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Permissions of written files: what `open()` would give (mkstemp alone gives 0600).
_FILE_MODE = 0o666 & ~_umask()


def _atomic_write(path: Path, write: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
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


def load_torch(path: str | Path, what: str, *, weights_only: bool = True) -> Any:
    """`torch.load` that turns any unreadable file into one line naming the file and the problem.

    A truncated or foreign file otherwise surfaces as a deep pickle/zip traceback.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {what} file")
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as exc:  # truncated, corrupt or foreign: all get the same clear message
        detail = " ".join(str(exc).split())[:200]
        raise InputError(
            f"{path}: not a readable {what} (truncated, corrupt or foreign file: "
            f"{type(exc).__name__}: {detail})"
        ) from None


def remove_stale_temporaries(path: str | Path) -> None:
    """Delete temp files a killed atomic write of `path` left behind (they are never complete)."""
    path = Path(path)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        with_suppressed_unlink(str(stale))
