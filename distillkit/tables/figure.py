"""Figure tables: a real-data analysis command (the unequalness curve) run once per series.

Each series runs in `<results>/<table>/<scale>/<series>/` and is done when its CSV exists; the
renderer copies the CSV/PNG next to `results/<table>.md`. The command is a small Hydra app of its
own, so it runs here as a subprocess rather than through the table's launcher.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distillkit.tables.plan import SMOKE_DATASET
from distillkit.tables.render import dataset_label
from distillkit.tables.spec import Series, TableSpec

COMMANDS = {
    "unequalness": ("distillkit.cli.unequalness", "main", "unequalness"),
}
SMOKE_UNEQUALNESS = (
    "dataset.image_size=8",
    "model.width=8",
    "sizes=[1,2,5,10,50]",
    "num_nets=1",
    "repeats=1",
    "distances=[dm]",
    "device=cpu",
    "progress=false",
)


def series_dir(spec: TableSpec, scale: str, results_dir: Path, series: Series) -> Path:
    return Path(results_dir) / spec.name / scale / series.name


def series_argv(spec: TableSpec, series: Series, scale: str, directory: Path) -> list[str]:
    """The command's overrides for one series (smoke: digits, tiny sizes and networks)."""
    substituted = scale == "smoke" and series.dataset != SMOKE_DATASET
    dataset = SMOKE_DATASET if scale == "smoke" else series.dataset
    args = [f"dataset={dataset}", *spec.overrides]
    if not substituted:
        args += series.overrides
    if scale == "smoke":
        args += [*SMOKE_UNEQUALNESS, *spec.smoke_overrides]
    return [*args, f"hydra.run.dir={directory}"]


def run_figure(
    spec: TableSpec, scale: str, results_dir: Path, extra: Sequence[str] = (), dry_run: bool = False
) -> list[str]:
    """Run every series whose output is missing; returns the names of the series launched."""
    module, function, stem = COMMANDS[str(spec.command)]
    launched = []
    for series in spec.series:
        directory = series_dir(spec, scale, results_dir, series)
        if (directory / f"{stem}.csv").is_file():
            continue
        argv = [*series_argv(spec, series, scale, directory), *extra]
        print(f"distillkit.tables: {spec.name}/{series.name}: {' '.join(argv)}", flush=True)
        launched.append(series.name)
        if dry_run:
            continue
        code = f"from {module} import {function}; {function}()"
        done = subprocess.run([sys.executable, "-c", code, *argv], check=False)
        if done.returncode != 0:
            print(f"distillkit.tables: {series.name} failed (exit {done.returncode})")
    return launched


def render_figure(spec: TableSpec, scale: str, results_dir: Path) -> dict[str, Any]:
    """results/<table>.md (per series: the image and its numbers) and one long CSV."""
    _, _, stem = COMMANDS[str(spec.command)]
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"# {spec.title}", "", f"Scale: **{scale}**."]
    replaced = sorted({s.dataset for s in spec.series if s.dataset != SMOKE_DATASET})
    if scale == "smoke" and replaced:
        names = ", ".join(dataset_label(d) for d in replaced)
        lines.append(
            f"**Smoke scale: the built-in dataset `{SMOKE_DATASET}` was substituted for {names}** "
            "(tiny networks and sizes; the numbers check the plumbing)."
        )
    lines += [f"- {note}" for note in spec.notes]
    all_rows: list[dict[str, Any]] = []
    filled = 0
    for series in spec.series:
        directory = series_dir(spec, scale, results_dir, series)
        lines += ["", f"## {series.label}", ""]
        source = directory / f"{stem}.csv"
        if not source.is_file():
            lines.append("missing (not run yet)")
            continue
        filled += 1
        rows = list(csv.DictReader(source.open()))
        all_rows += [{"table": spec.name, "scale": scale, "series": series.name, **r} for r in rows]
        picture = directory / f"{stem}.png"
        if picture.is_file():
            target = results_dir / f"{spec.name}_{series.name}.png"
            shutil.copyfile(picture, target)
            lines += [f"![{series.label}]({target.name})", ""]
        sizes = sorted({int(r["size"]) for r in rows})
        lines.append("| distance | " + " | ".join(f"size {s}" for s in sizes) + " |")
        lines.append("|---" + "|---:" * len(sizes) + "|")
        for distance in sorted({r["distance"] for r in rows}):
            by_size = {int(r["size"]): r for r in rows if r["distance"] == distance}
            cells = [
                f"{float(by_size[s]['mean']):.4g} ± {float(by_size[s]['std']):.2g}"
                if s in by_size
                else "missing"
                for s in sizes
            ]
            lines.append(f"| {distance} | " + " | ".join(cells) + " |")
    md_path = results_dir / f"{spec.name}.md"
    md_path.write_text("\n".join(lines) + "\n")
    csv_path = results_dir / f"{spec.name}.csv"
    fields = ["table", "scale", "series", "size", "distance", "mean", "std", "repeats"]
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(all_rows)
    missing = len(spec.series) - filled
    return {
        "markdown": md_path,
        "csv": csv_path,
        "cells": len(spec.series),
        "filled": filled,
        "failed": 0,
        "missing": missing,
    }
