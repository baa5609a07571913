"""Render a grid table from its jobs' files: ours (mean ± std) beside the paper and the delta.

A cell pools every evaluation accuracy of every distillation (seed) of the cell: n =
distillations x evaluation models, std the population std (as the evaluation protocol reports
it). Cells: "missing" (no job finished yet), "failed (<Error>)" (a failed.json and no result),
"… (k/n)" when only k of n distillations finished. Published numbers absent from the paper: "–".
"""

from __future__ import annotations

import csv
import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any

from distillkit.tables.plan import Plan
from distillkit.tables.spec import Protocol, Published, TableSpec

DATASET_LABELS = {
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
    "svhn": "SVHN",
    "tinyimagenet": "Tiny-ImageNet",
    "mnist": "MNIST",
    "fashion_mnist": "FashionMNIST",
    "digits": "digits",
}
MINUS = "−"
#: The best-evaluation column (rows whose paper reports it: MTT, FTD), and what it means.
BEST_LABEL = "best (test-set selection)"
BEST_NOTE = (
    f"`{BEST_LABEL}`: per distillation, the evaluation point with the highest mean test "
    "accuracy, chosen on the test set as the MTT/FTD papers report it (mean over distillations "
    "of that point's mean ± std); the final column is the unselected final point."
)
NOT_PUBLISHED = "–"
CSV_COLUMNS = (
    "table",
    "scale",
    "row",
    "label",
    "dataset",
    "run_dataset",
    "ipc",
    "model",
    "status",
    "mean",
    "std",
    "n",
    "distillations_done",
    "distillations",
    "paper_mean",
    "paper_std",
    "delta",
    "best_mean",
    "best_std",
    "lrs",
    "ars",
)
#: The fair-score columns (DD-Ranking's, fractions: README, Fair scores), shown when some cell's
#: runs computed them (`eval.scores=true`).
SCORES_NOTE = (
    "`LRS` / `ARS`: DD-Ranking's label- and augmentation-robust scores of the cell's "
    "distillations (mean over them; fractions in the exponent, README: Fair scores)."
)


@dataclass
class CellResult:
    """What the files of one cell (all its seeds) say."""

    expected: int
    runs: list[float] = field(default_factory=list)
    done: int = 0
    errors: list[str] = field(default_factory=list)
    #: Per distillation: the best evaluation point's (mean, std) (results.json `best`).
    best: list[tuple[float, float]] = field(default_factory=list)
    #: Per distillation that computed them: its LRS and ARS (results.json `scores`).
    lrs: list[float] = field(default_factory=list)
    ars: list[float] = field(default_factory=list)

    def score_text(self, name: str) -> str:
        values = getattr(self, name)
        return f"{statistics.fmean(values):.3f}" if values else NOT_PUBLISHED

    @property
    def best_text(self) -> str:
        """Mean over distillations of the best point's mean ± std, or "–" when none."""
        if not self.best:
            return NOT_PUBLISHED
        mean = statistics.fmean(b[0] for b in self.best)
        return format_mean_std(mean, statistics.fmean(b[1] for b in self.best))

    @property
    def status(self) -> str:
        if self.done == self.expected:
            return "ok"
        if self.done:
            return "partial"
        return "failed" if self.errors else "missing"

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.runs) if self.runs else None

    @property
    def std(self) -> float | None:
        if not self.runs:
            return None
        return statistics.pstdev(self.runs) if len(self.runs) > 1 else 0.0


#: (row, dataset, ipc, model or None)
CellKey = tuple[str, str, int, str | None]


def dataset_label(name: str) -> str:
    return DATASET_LABELS.get(name, name)


def format_mean_std(mean: float, std: float) -> str:
    return f"{mean:.1f} ± {std:.1f}"


def format_delta(ours: float | None, paper: Published | None) -> str:
    """ours − paper, signed, one decimal; "–" when either side is absent."""
    if ours is None or paper is None:
        return NOT_PUBLISHED
    delta = round(ours - paper.mean, 1)
    if delta == 0:
        return "0.0"
    return f"+{delta:.1f}" if delta > 0 else f"{MINUS}{abs(delta):.1f}"


def format_cell(cell: CellResult) -> str:
    status = cell.status
    if status == "missing":
        return "missing"
    if status == "failed":
        return f"failed ({cell.errors[0]})"
    text = format_mean_std(cell.mean or 0.0, cell.std or 0.0)
    return text if status == "ok" else f"{text} ({cell.done}/{cell.expected})"


def columns(spec: TableSpec) -> list[tuple[str, int, str | None]]:
    models: Sequence[str | None] = spec.models or (None,)
    return [(d, i, m) for d in spec.datasets for i in spec.ipcs for m in models]


def collect(plan: Plan) -> dict[CellKey, CellResult]:
    """Read results.json / failed.json of every job of the plan into cells."""
    expected: dict[tuple[str, str, int], int] = {}
    for job in plan.jobs:
        key = (job.row, job.dataset, job.ipc)
        expected[key] = expected.get(key, 0) + 1
    cells: dict[CellKey, CellResult] = {}
    for row, dataset, ipc in expected:
        for model in plan.spec.models or (None,):
            cells[(row, dataset, ipc, model)] = CellResult(expected[(row, dataset, ipc)])
    for job in plan.jobs:
        directory = job.directory(plan.root)
        results, failed = directory / "results.json", directory / "failed.json"
        for model in plan.spec.models or (None,):
            cell = cells[(job.row, job.dataset, job.ipc, model)]
            if results.is_file():
                record = json.loads(results.read_text())
                arch = model or (record.get("headline") or {}).get("model")
                accuracy = (record.get("accuracy") or {}).get(arch)
                if accuracy is None:
                    cell.errors.append("not evaluated")
                    continue
                cell.runs.extend(float(a) for a in accuracy["runs"])
                cell.done += 1
                best = record.get("best") or {}
                if model in (None, best.get("model")) and best.get("mean") is not None:
                    cell.best.append((float(best["mean"]), float(best.get("std") or 0.0)))
                scores = ((record.get("scores") or {}).get("models") or {}).get(arch) or {}
                for name in ("lrs", "ars"):
                    if scores.get(name) is not None:
                        getattr(cell, name).append(float(scores[name]))
            elif failed.is_file():
                cell.errors.append(str(json.loads(failed.read_text()).get("error", "error")))
    return cells


def table_rows(
    spec: TableSpec, cells: Mapping[CellKey, CellResult], scale: str
) -> list[dict[str, Any]]:
    """The long form (one line per cell and column): CSV and the W&B table."""
    out = []
    for row in spec.rows:
        for dataset, ipc, model in columns(spec):
            cell = cells.get((row.name, dataset, ipc, model)) or CellResult(0)
            paper = spec.paper(row.name, dataset, ipc) if model in (None, "ConvNet") else None
            mean = cell.mean
            out.append(
                {
                    "table": spec.name,
                    "scale": scale,
                    "row": row.name,
                    "label": row.label,
                    "dataset": dataset,
                    "run_dataset": "digits" if scale == "smoke" else dataset,
                    "ipc": ipc,
                    "model": model or "",
                    "status": cell.status,
                    "mean": None if mean is None else round(mean, 4),
                    "std": None if cell.std is None else round(cell.std, 4),
                    "n": len(cell.runs),
                    "distillations_done": cell.done,
                    "distillations": cell.expected,
                    "paper_mean": paper.mean if paper else None,
                    "paper_std": paper.std if paper else None,
                    "delta": None if mean is None or paper is None else round(mean - paper.mean, 4),
                    **_best_columns(cell if row.report_best else None),
                    **{k: _mean(getattr(cell, k)) for k in ("lrs", "ars")},
                }
            )
    return out


def _best_columns(cell: CellResult | None) -> dict[str, float | None]:
    if cell is None or not cell.best:
        return {"best_mean": None, "best_std": None}
    return {
        "best_mean": round(statistics.fmean(b[0] for b in cell.best), 4),
        "best_std": round(statistics.fmean(b[1] for b in cell.best), 4),
    }


def _mean(values: Sequence[float]) -> float | None:
    return round(statistics.fmean(values), 4) if values else None


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    buffer = StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if r.get(k) is None else r[k] for k in CSV_COLUMNS})
    return buffer.getvalue()


def to_markdown(
    spec: TableSpec,
    cells: Mapping[CellKey, CellResult],
    scale: str,
    substitutions: Mapping[str, str] | None = None,
    protocol: Protocol | None = None,
) -> str:
    """One section per dataset: rows x (IPC [x model]) x (ours, paper, Δ)."""
    lines = [f"# {spec.title}", ""]
    if protocol is not None:
        lines += [f"Protocol: **{protocol.label}** (`protocol={protocol.name}`).", ""]
    lines.append(
        f"Scale: **{scale}**. Test accuracy (%) at the final epoch. Ours: mean ± std over every "
        "evaluation of the cell (distillations × evaluation models, population std); paper: the "
        "published number (– where none is published); Δ = ours − paper."
    )
    if substitutions:
        names = ", ".join(dataset_label(d) for d in substitutions)
        runs = ", ".join(sorted(set(substitutions.values())))
        lines += [
            "",
            f"**Smoke scale: the built-in dataset `{runs}` was substituted for {names}** (tiny "
            "budgets on the CPU; the numbers check the plumbing, not the paper).",
        ]
    lines.append("")
    lines.append(
        "Cells: `missing` = not run yet; `failed (Error)` = see the job's failed.json; "
        "`(k/n)` = only k of n distillations finished."
    )
    for note in spec.notes:
        lines.append(f"- {note}")
    with_best = any(r.report_best for r in spec.rows)
    if with_best:
        lines.append(f"- {BEST_NOTE}")
    with_scores = any(c.lrs or c.ars for c in cells.values())
    if with_scores:
        lines.append(f"- {SCORES_NOTE}")
    for dataset in spec.datasets:
        cols = [(d, i, m) for d, i, m in columns(spec) if d == dataset]
        lines += ["", f"## {dataset_label(dataset)}", ""]
        header = ["method"]
        for _, ipc, model in cols:
            name = f"IPC {ipc}" + (f" {model}" if model else "")
            header += [name, *((f"{name} {BEST_LABEL}",) if with_best else ()), "paper", "Δ"]
            header += ["LRS", "ARS"] if with_scores else []
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|---" + "|---:" * (len(header) - 1) + "|")
        for row in spec.rows:
            out = [row.label]
            for _, ipc, model in cols:
                cell = cells.get((row.name, dataset, ipc, model)) or CellResult(1)
                paper = spec.paper(row.name, dataset, ipc) if model in (None, "ConvNet") else None
                ours = cell.mean if cell.status in ("ok", "partial") else None
                out.append(format_cell(cell))
                if with_best:
                    out.append(cell.best_text if row.report_best else NOT_PUBLISHED)
                out.append(str(paper) if paper else NOT_PUBLISHED)
                out.append(format_delta(ours, paper))
                if with_scores:
                    out += [cell.score_text("lrs"), cell.score_text("ars")]
            lines.append("| " + " | ".join(out) + " |")
    return "\n".join(lines) + "\n"


def write_outputs(
    plan: Plan, results_dir: Path, logger: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """results/<table>.md and .csv (+ the W&B table when `logger` enables W&B)."""
    cells = collect(plan)
    rows = table_rows(plan.spec, cells, plan.scale)
    results_dir.mkdir(parents=True, exist_ok=True)
    stem = plan.spec.name
    default = plan.spec.protocol()
    if plan.protocol is not None and default is not None and plan.protocol.name != default.name:
        stem = f"{stem}-{plan.protocol.name}"
    md_path = results_dir / f"{stem}.md"
    csv_path = results_dir / f"{stem}.csv"
    md_path.write_text(to_markdown(plan.spec, cells, plan.scale, plan.substitutions, plan.protocol))
    csv_path.write_text(to_csv(rows))
    if logger is not None:
        log_table(plan.spec.name, plan.scale, rows, plan.root / "_table", logger)
    statuses = [r["status"] for r in rows]
    return {
        "markdown": md_path,
        "csv": csv_path,
        "cells": len(rows),
        "filled": statuses.count("ok"),
        "failed": statuses.count("failed"),
        "missing": statuses.count("missing") + statuses.count("partial"),
    }


def log_table(
    table: str,
    scale: str,
    rows: Sequence[Mapping[str, Any]],
    run_dir: Path,
    logger_cfg: Mapping[str, Any],
) -> None:
    """The rendered table through the project's logger: one W&B run per table and scale (job
    type `table`, group = the table's name); re-rendering updates that run (a fixed id)."""
    from distillkit.logging import build_logger

    wandb_cfg = {**dict(logger_cfg.get("wandb") or {}), "group": table, "job_type": "table"}
    logger = build_logger(
        {"wandb": wandb_cfg},
        run_dir,
        {"table": table, "scale": scale},
        f"{table}-{scale}-table",
        wandb_run_id=f"table-{table}-{scale}",
    )
    try:
        logger.log_table(
            f"table_{table}", list(CSV_COLUMNS), [[r[c] for c in CSV_COLUMNS] for r in rows]
        )
    finally:
        logger.finish()
