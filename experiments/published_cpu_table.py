"""Print the README table "FYI on CIFAR-10 at the published budget" from the cells' files.

A finished cell is `<results>/cifar10_<method>[_fyi]_ipc1.json` (its run's results.json); a cell
under way is its checkpoint copy `<results>/in_progress/<cell>.pt` (iteration, hours so far).

    .venv/bin/python experiments/published_cpu_table.py [--results benchmarks/results/published_cpu]
    .venv/bin/python experiments/published_cpu_table.py --diagnostics   # DC's sets under flips

`--diagnostics` prints the table of DC's and DC + FYI's sets under each evaluation of
experiments/fyi_dc_diagnostics.sh (`<results>/diagnostics/<cell>_<protocol>.json`); the
published-protocol row is the cell's own results.json (DC's from `<results>/rerun/` when the
re-distilled set is there, since the diagnostics evaluate that set).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from distillkit.tables.spec import load_table

METHODS = (("dc", "DC"), ("dsa", "DSA"), ("dm", "DM"))
BUDGET = {"dc": 1000, "dsa": 1000, "dm": 20000}
HEADER = (
    "| CIFAR-10, IPC 1 | published | distillkit | distillkit + FYI | FYI − base "
    "| U dm / dc / dsa (base; + FYI) | iterations done (base; + FYI) | hours (base; + FYI) |"
)


def cell_name(method: str, fyi: bool) -> str:
    return f"cifar10_{method}{'_fyi' if fyi else ''}_ipc1"


def read_cell(results: Path, method: str, fyi: bool) -> dict[str, Any] | None:
    """The finished run's results.json, or the checkpoint copy's progress, or None."""
    name = cell_name(method, fyi)
    finished = results / f"{name}.json"
    if finished.is_file():
        return {"finished": True, **json.loads(finished.read_text())}
    running = results / "in_progress" / f"{name}.pt"
    if running.is_file():
        import torch

        state = torch.load(running, map_location="cpu", weights_only=False)
        timings = {"distil_s": state["distil_s"], "cpu_s": state.get("cpu_s"),
                   "cpu_from_iteration": state.get("cpu_from_iteration")}  # fmt: skip
        return {"finished": False, "iterations": state["iteration"], "timings": timings}
    return None


def accuracy(cell: dict[str, Any] | None, budget: int) -> str:
    if cell is None:
        return "not started"
    if not cell["finished"]:
        return f"running ({cell['iterations']:,} / {budget:,})"
    head = cell["headline"]
    runs = cell["accuracy"][head["model"]]["runs"]
    return f"**{head['mean']:.2f} ± {head['std']:.2f}** ({min(runs):.2f}–{max(runs):.2f})"


def paired(base_runs: list[float], fyi_runs: list[float]) -> str:
    """Model i of both rows starts from the same draws of the evaluation stream (same seed,
    same set size), so the per-model differences are paired: their mean ± std, and how many
    of the pairs FYI wins."""
    if len(base_runs) != len(fyi_runs) or len(base_runs) < 2:
        return ""
    diffs = [f - b for b, f in zip(base_runs, fyi_runs, strict=True)]
    mean = sum(diffs) / len(diffs)
    std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1))
    wins = sum(d > 0 for d in diffs)
    return f"; paired {mean:+.2f} ± {std:.2f}, FYI ahead in {wins} / {len(diffs)}"


def compare(base: dict[str, Any], fyi: dict[str, Any]) -> str:
    """FYI − base for two evaluations ({mean, std, n, runs}): ± the spread of one model's
    difference (the two stds in quadrature), the standard error of the difference of the two
    means, and the paired per-model differences."""
    spread = math.hypot(base["std"], fyi["std"])
    error = math.sqrt(base["std"] ** 2 / base["n"] + fyi["std"] ** 2 / fyi["n"])
    pairs = paired(base["runs"], fyi["runs"])
    return f"{fyi['mean'] - base['mean']:+.2f} ± {spread:.2f} (s.e. {error:.2f}{pairs})"


def difference(base: dict[str, Any] | None, fyi: dict[str, Any] | None) -> str:
    """The two finished cells' headline evaluations compared, else a dash."""
    if not (base and fyi and base["finished"] and fyi["finished"]):
        return "–"
    return compare(
        base["accuracy"][base["headline"]["model"]], fyi["accuracy"][fyi["headline"]["model"]]
    )


def unequalness(cell: dict[str, Any] | None) -> str:
    if not (cell and cell["finished"] and cell.get("unequalness")):
        return "–"
    u = cell["unequalness"]
    return " / ".join(f"{u[k]:.1f}" for k in ("dm", "dc", "dsa") if k in u)


def iterations(cell: dict[str, Any] | None, budget: int) -> str:
    if cell is None:
        return f"0 / {budget:,}"
    done = cell["iterations"]
    return f"{done:,} / {budget:,}" + ("" if cell["finished"] or done == budget else " (running)")


def hours(cell: dict[str, Any] | None) -> str:
    """CPU hours where the run counted them from its start, else wall hours (marked)."""
    if cell is None:
        return "–"
    t = cell["timings"]
    if t.get("cpu_s") is not None and t.get("cpu_from_iteration") == 0:
        text = f"{(t['cpu_s'] + (t.get('eval_cpu_s') or 0.0)) / 3600:.2f} CPU"
    else:
        text = f"{(t['distil_s'] + (t.get('eval_s') or 0.0)) / 3600:.2f} wall"
    return text if cell["finished"] else f"{text} so far"


def table(results: Path) -> str:
    spec = load_table("fyi")
    lines = [HEADER, "|" + "---|" * 8]
    for method, label in METHODS:
        base, fyi = read_cell(results, method, False), read_cell(results, method, True)
        budget = BUDGET[method]
        paper = spec.paper(method, "cifar10", 1)
        lines.append(
            f"| {label} | {paper or '–'} | {accuracy(base, budget)} | {accuracy(fyi, budget)} "
            f"| {difference(base, fyi)} | {unequalness(base)}; {unequalness(fyi)} "
            f"| {iterations(base, budget)}; {iterations(fyi, budget)} "
            f"| {hours(base)}; {hours(fyi)} |"
        )
    return "\n".join(lines)


#: experiments/fyi_dc_diagnostics.sh's evaluations: (file suffix, row label).
PROTOCOLS = (
    ("", "as published: the stored images, no augmentation"),
    ("_flip_aug", "with random horizontal flips only (`--dsa-strategy flip`)"),
    ("_with_flips", "on the stored images and their flips, no augmentation (`--with-flips`)"),
    ("_with_flips_flip_aug", "on the images and their flips, random flips (both options)"),
)


def _evaluation(path: Path) -> dict[str, Any] | None:
    """One evaluation's ConvNet accuracy ({mean, std, n, runs}) from a results.json or a
    distillkit-eval output, or None when the file is not there yet."""
    if not path.is_file():
        return None
    return json.loads(path.read_text())["accuracy"]["ConvNet"]


def _mean_std(acc: dict[str, Any] | None) -> str:
    return "–" if acc is None else f"{acc['mean']:.2f} ± {acc['std']:.2f}"


def diagnostics(results: Path) -> str:
    """DC and DC + FYI's sets under each evaluation protocol, with FYI − base per row."""
    dc_cell = results / "rerun" / "cifar10_dc_ipc1.json"
    if not dc_cell.is_file():
        dc_cell = results / "cifar10_dc_ipc1.json"
    lines = [
        "| evaluation of the set (ConvNet, 20 models, 300 epochs) | DC | DC + FYI | FYI − base |",
        "|---|---|---|---|",
    ]
    for suffix, label in PROTOCOLS:
        if suffix:
            base = _evaluation(results / "diagnostics" / f"cifar10_dc_ipc1{suffix}.json")
            fyi = _evaluation(results / "diagnostics" / f"cifar10_dc_fyi_ipc1{suffix}.json")
        else:
            base = _evaluation(dc_cell)
            fyi = _evaluation(results / "cifar10_dc_fyi_ipc1.json")
        diff = compare(base, fyi) if base and fyi else "–"
        lines.append(f"| {label} | {_mean_std(base)} | {_mean_std(fyi)} | {diff} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results/published_cpu"))
    parser.add_argument(
        "--diagnostics", action="store_true", help="DC's and DC + FYI's sets under flips"
    )
    args = parser.parse_args()
    print(diagnostics(args.results) if args.diagnostics else table(args.results))


if __name__ == "__main__":
    main()
