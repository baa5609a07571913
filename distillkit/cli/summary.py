"""Print a side-by-side table of the results.json files under a directory (`make demo` uses it)."""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any


def collect(root: Path) -> list[dict[str, Any]]:
    """Every results.json under `root`, plus the failed.json of jobs that failed in a sweep."""
    paths = sorted([*root.rglob("results.json"), *root.rglob("failed.json")])
    return [json.loads(p.read_text()) for p in paths]


def cell(r: dict[str, Any]) -> str:
    """A table cell: headline mean ± std, "failed (error)" or "not evaluated"."""
    if r.get("status") == "failed":
        return f"failed ({r.get('error', 'error')})"
    h = r.get("headline")
    if not h:
        return "not evaluated"
    return f"{h['mean']:.1f} ± {h['std']:.1f} (n={h['n']}, {h['model']})"


def score_cells(r: dict[str, Any]) -> tuple[str, str] | None:
    """(LRS, ARS) cells of a run with fair scores (`eval.scores`): the headline model's mean ±
    std over its evaluation models, fractions; None when the run has none."""
    head = (r.get("scores") or {}).get("headline") if r.get("status") != "failed" else None
    if not head:
        return None

    def show(key: str) -> str:
        value, std = head.get(key), head.get(f"{key}_std")
        if value is None:
            return "n/a"
        return f"{value:.3f}" + ("" if std is None else f" ± {std:.3f}")

    return show("lrs"), show("ars")


def render(results: list[dict[str, Any]]) -> str:
    """Rows: method (+ add-ons) on a dataset; columns: IPC; cells: headline mean ± std. When some
    run has fair scores (`eval.scores`), each IPC also gets LRS and ARS columns.

    A job that failed in a sweep (its failed.json) shows as "failed (<error>)".
    """
    cells: dict[tuple[str, str], dict[int, str]] = defaultdict(dict)
    scores: dict[tuple[str, str], dict[int, tuple[str, str]]] = defaultdict(dict)
    ipcs: set[int] = set()
    for r in results:
        regs = "+".join(r.get("regularizers") or [])
        row = (str(r.get("dataset")), str(r.get("method")) + (f"+{regs}" if regs else ""))
        ipc = r.get("ipc") if isinstance(r.get("ipc"), int) else -1
        if r.get("status") == "failed" and ipc in cells[row]:
            continue  # a result for this cell (say, a later successful run) wins
        cells[row][ipc] = cell(r)
        scores[row].pop(ipc, None)
        if (pair := score_cells(r)) is not None:
            scores[row][ipc] = pair
        ipcs.add(ipc)
    columns = sorted(ipcs)
    scored = any(scores.values())
    header = ["dataset", "method"]
    for i in columns:
        header += [f"IPC {i}", f"LRS {i}", f"ARS {i}"] if scored else [f"IPC {i}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, by_ipc in sorted(cells.items()):
        row = list(key)
        for i in columns:
            row.append(by_ipc.get(i, "–"))
            if scored:
                row += list(scores[key].get(i, ("–", "–")))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="distillkit-summary",
        description="A side-by-side table (method x IPC) of every results.json under a "
        "directory; jobs that failed in a sweep show as 'failed'.",
    )
    parser.add_argument("root", nargs="?", default="outputs", help="directory (outputs)")
    root = Path(parser.parse_args(sys.argv[1:] if argv is None else argv).root)
    results = collect(root)
    if not results:
        raise SystemExit(f"no results.json under {root}")
    print(f"Test accuracy (%), final epoch, mean ± std over evaluation models ({root}):")
    print(render(results))
    if any((r.get("scores") or {}).get("headline") for r in results):
        print(
            "LRS / ARS: DD-Ranking's label- and augmentation-robust scores of the headline model "
            "(fractions in the exponent, in [0, 1]; mean ± std over evaluation models)."
        )


if __name__ == "__main__":
    main()
