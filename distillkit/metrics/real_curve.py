"""U of real per-class sets against set size: the evidence for bilateral equivalence (FYI Fig. 3).

Sets of one image are far from their flips; as a class's set grows, a part on one side of some
images is matched by the same part on the other side of others, and U falls toward 0.
"""

from __future__ import annotations

import csv
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from distillkit.augment import DSA
from distillkit.metrics.unequalness import unequalness
from distillkit.networks import NetworkFactory
from distillkit.progress import progress_bar
from distillkit.visualize import save_line_plot


def unequalness_curve(
    data: Any,
    sizes: Sequence[int],
    networks: NetworkFactory,
    generator: torch.Generator,
    distances: Sequence[str],
    num_nets: int,
    repeats: int,
    augment: DSA | None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Rows {size, distance, mean, std, repeats}; sizes above the smallest class are skipped."""
    smallest = int(data.class_counts().min())
    usable = [s for s in sizes if 1 <= s <= smallest]
    rows = []
    bar = progress_bar(total=len(usable) * repeats, desc="unequalness", disable=not progress)
    for size in usable:
        scores: dict[str, list[float]] = {d: [] for d in distances}
        for _ in range(repeats):
            images, labels = data.sample_per_class(size, generator)
            u = unequalness(
                images,
                labels,
                data.info.num_classes,
                networks,
                generator,
                distances,
                num_nets,
                augment,
            )
            for d in distances:
                scores[d].append(u[d])
            bar.update(1)
        for d in distances:
            values = scores[d]
            std = statistics.pstdev(values) if len(values) > 1 else 0.0
            rows.append(
                {
                    "size": size,
                    "distance": d,
                    "mean": statistics.fmean(values),
                    "std": std,
                    "repeats": len(values),
                }
            )
    bar.close()
    return rows


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with Path(path).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["size", "distance", "mean", "std", "repeats"])
        writer.writeheader()
        writer.writerows(rows)


def plot_curve(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """One line per distance, each normalised by its value at the smallest size (log x)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    for distance in sorted({r["distance"] for r in rows}):
        line = [r for r in rows if r["distance"] == distance]
        base = line[0]["mean"] or 1.0
        ax.errorbar(
            [r["size"] for r in line],
            [r["mean"] / base for r in line],
            yerr=[r["std"] / base for r in line],
            marker="o",
            capsize=3,
            label=f"{distance} (÷ {base:.3g})",
        )
    ax.set_xscale("log")
    ax.set_xlabel("images per class")
    ax.set_ylabel("unequalness U / U(size 1)")
    save_line_plot(fig, ax, path, title)
