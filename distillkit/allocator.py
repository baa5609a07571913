"""Host-memory allocator setting: keep freed tensor memory in the process on glibc CPUs.

PyTorch's CPU tensors come from the C library's malloc. glibc serves every block above 32 MiB
(its largest dynamic mmap threshold) with a fresh ``mmap`` and unmaps it on free, so every large
activation of every step is page-faulted and zeroed again by the kernel. On the development CPU
(2-core AMD EPYC, benchmarks/README.md) that made a ConvNet-3 width-128 forward over 2,560 CIFAR
images about 2x slower than the arithmetic needed (1.75 million page faults per DM step, about
half of its time in the kernel). ``retain`` tells glibc (``mallopt``) to serve large blocks
from its heap and never to trim it, so freed memory is reused: the resident size stays at the
run's peak instead of shrinking between steps. Results are bit-identical: only where memory
comes from changes.

The retained heap reuses a freed block only for requests that fit in it, so a pass whose blocks
are many times larger than the rest fragments it above the memory in use. DM's synthetic side in
one pass at 100 classes x IPC 10 (ConvNet-3 width 128: 0.5 GB activation blocks beside the real
side's 60 MB chunks) left the heap 1.2 GB above its peak use, and the step's peak resident size
1.68x the per-class loop's (issue 25; under `system` 1.10x). Trimming does not undo it (the heap
grows inside the first step's backward pass; `malloc_trim` after the real pass left the peak where
it was), so methods keep their blocks chunk-sized instead (distillkit/memory.py;
benchmarks/results/dm_memory_100_classes.md).

`runtime.allocator`: auto (retain where glibc is the C library) | retain | system.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform

from distillkit.errors import ConfigError

ALLOCATORS = ("auto", "retain", "system")

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4
# glibc's defaults, restored by `system`.
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_DEFAULT_TOP_PAD = 128 * 1024
_DEFAULT_MMAP_MAX = 65536
_NEVER_TRIM = -1  # glibc: "setting it to -1 disables trimming completely"
_TOP_PAD = 64 * 1024 * 1024
_state = {"retaining": False}


@functools.lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    """The process's glibc, or None (musl, macOS, Windows)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt  # noqa: B018 - raises AttributeError where mallopt is missing
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def check_allocator(value: object) -> str:
    """The normalised `runtime.allocator` choice, or ConfigError naming the allowed ones."""
    text = "auto" if value is None else str(value).strip().lower()
    if text not in ALLOCATORS:
        raise ConfigError(
            f"runtime.allocator must be one of {', '.join(ALLOCATORS)}, got {value!r}"
        )
    return text


def use_allocator(value: object = "auto") -> str:
    """Apply the `runtime.allocator` choice to this process; returns what is in effect.

    Process-wide and idempotent. `system` after `retain` restores glibc's default values (its
    dynamic mmap threshold stays off) and hands retained memory back; without glibc every choice
    means `system` (nothing to set).
    """
    choice = check_allocator(value)
    libc = _glibc()
    if libc is None:
        return "system"
    if choice in ("auto", "retain"):
        libc.mallopt(_M_MMAP_MAX, 0)
        libc.mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM)
        libc.mallopt(_M_TOP_PAD, _TOP_PAD)
        _state["retaining"] = True
        return "retain"
    if not _state["retaining"]:
        return "system"
    libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
    libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
    libc.mallopt(_M_TOP_PAD, _DEFAULT_TOP_PAD)
    libc.malloc_trim(0)
    _state["retaining"] = False
    return "system"
