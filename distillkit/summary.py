"""Print a side-by-side table of the results.json files under a directory (`make demo` uses it)."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any


def collect(root: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(root.rglob("results.json"))]


def render(results: list[dict[str, Any]]) -> str:
    """Rows: method (+ add-ons) on a dataset; columns: IPC; cells: headline mean ± std."""
    cells: dict[tuple[str, str], dict[int, str]] = defaultdict(dict)
    ipcs: set[int] = set()
    for r in results:
        regs = "+".join(r.get("regularizers") or [])
        row = (r["dataset"], r["method"] + (f"+{regs}" if regs else ""))
        h = r["headline"]
        cells[row][r["ipc"]] = f"{h['mean']:.1f} ± {h['std']:.1f} (n={h['n']}, {h['model']})"
        ipcs.add(r["ipc"])
    columns = sorted(ipcs)
    header = ["dataset", "method", *[f"IPC {i}" for i in columns]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (dataset, method), by_ipc in sorted(cells.items()):
        row = [dataset, method, *[by_ipc.get(i, "–") for i in columns]]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0] if args else "outputs")
    results = collect(root)
    if not results:
        raise SystemExit(f"no results.json under {root}")
    print(f"Test accuracy (%), final epoch, mean ± std over evaluation models ({root}):")
    print(render(results))


if __name__ == "__main__":
    main()
