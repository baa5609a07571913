"""Shared benchmark helpers: the machine block, side-by-side timing, medians, result files.

Every benchmark times its variants interleaved (A, B, C, A, B, C, ...) in one process, so load
from other work on the machine hits every variant alike, and reports medians and ratios of
medians. Results go to `benchmarks/results/<name>.json` together with the machine they ran on.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The CPU features that decide the fast paths (vector width, bf16 / AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return []
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return [f for f in wanted if f in flags]


def machine(device: str = "cpu") -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    try:
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return info


def machine_line(info: Mapping[str, Any]) -> str:
    flags = ",".join(info.get("cpu_flags", [])) or "-"
    gpu = f", GPU {info['gpu']}" if "gpu" in info else ""
    load = info.get("load_average_at_start")
    load_text = f", load avg {load[0]}" if load else ""
    return (
        f"machine: {info['cpu']} ({flags}), {info['cores']} cores, {info['threads']} torch "
        f"threads, torch {info['torch']}, device {info['device']}{gpu}{load_text}"
    )


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str = "cpu") -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def median_time(fn: Callable[[], object], repeats: int, device: str = "cpu") -> float:
    return statistics.median(timed(fn, device) for _ in range(repeats))


def interleaved(
    variants: Mapping[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    device: str = "cpu",
    verbose: bool = False,
) -> dict[str, list[float]]:
    """Seconds of every variant, `repeats` rounds of A, B, C, ... after `warmup` rounds."""
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(repeats):
        for name, fn in variants.items():
            times[name].append(timed(fn, device))
        if verbose:
            done = ", ".join(f"{k} {v[-1]:.3f}s" for k, v in times.items())
            print(f"  round {r + 1}/{repeats}: {done}", file=sys.stderr, flush=True)
    return times


def medians(times: Mapping[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(values) for name, values in times.items()}


def save(name: str, payload: Mapping[str, Any]) -> Path:
    """Write `benchmarks/results/<name>.json` (machine included by the caller)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    print(f"results: {path.relative_to(RESULTS.parent.parent)}")
    return path


def set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def add_setting_arguments(parser: Any) -> None:
    """The CIFAR-shaped setting the method benchmarks share: ConvNet-3 width 128, IPC 10,
    10 classes, 256 real images per class (the published DM/DC step)."""
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--real-per-class", type=int, default=256)
