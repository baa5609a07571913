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


def render(results: list[dict[str, Any]]) -> str:
    """Rows: method (+ add-ons) on a dataset; columns: IPC; cells: headline mean ± std.

    A job that failed in a sweep (its failed.json) shows as "failed (<error>)".
    """
    cells: dict[tuple[str, str], dict[int, str]] = defaultdict(dict)
    ipcs: set[int] = set()
    for r in results:
        regs = "+".join(r.get("regularizers") or [])
        row = (str(r.get("dataset")), str(r.get("method")) + (f"+{regs}" if regs else ""))
        ipc = r.get("ipc") if isinstance(r.get("ipc"), int) else -1
        if r.get("status") == "failed" and ipc in cells[row]:
            continue  # a result for this cell (say, a later successful run) wins
        cells[row][ipc] = cell(r)
        ipcs.add(ipc)
    columns = sorted(ipcs)
    header = ["dataset", "method", *[f"IPC {i}" for i in columns]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (dataset, method), by_ipc in sorted(cells.items()):
        row = [dataset, method, *[by_ipc.get(i, "–") for i in columns]]
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


if __name__ == "__main__":
    main()
