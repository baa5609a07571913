"""Paper tables as data: load and check `experiments/tables/<name>.yaml`.

A table is either a `grid` (rows = method + add-ons, columns = dataset x IPC, optionally split by
evaluation architecture; each cell is distilled `distillations` times) or a `figure` (a real-data
analysis command such as the unequalness curve, one job per series). Published numbers sit next to
the rows they belong to, so the renderer can print ours beside theirs.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distillkit.errors import UserError

#: Where the table definitions live: $DISTILLKIT_TABLES, else ./experiments/tables, else the
#: checkout this package was imported from.
TABLES_ENV_VAR = "DISTILLKIT_TABLES"
KINDS = ("grid", "figure")
FIGURE_COMMANDS = ("unequalness",)
_PUBLISHED = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(?:(?:±|\+-|\+/-)\s*(\d+(?:\.\d+)?))?\s*$")


class TableError(UserError, ValueError):
    """A table that cannot be found or is malformed (reported as one line)."""


@dataclass(frozen=True)
class Published:
    """A number from a paper: mean and (when printed) std."""

    mean: float
    std: float | None = None

    def __str__(self) -> str:
        return f"{self.mean:.1f}" if self.std is None else f"{self.mean:.1f} ± {self.std:.1f}"


@dataclass(frozen=True)
class Row:
    """One row: a base method plus add-ons, with its own extra overrides."""

    name: str
    label: str
    method: str
    regularizers: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()
    #: The paper reports its best evaluation point (MTT, FTD): render it beside the final one.
    report_best: bool = False
    #: Evaluate during distillation at start, start + every, ... <= until (the published budget).
    evaluate: tuple[int, int, int] | None = None

    def evaluation_points(self) -> list[int]:
        if self.evaluate is None:
            return []
        start, every, until = self.evaluate
        return list(range(start, until + 1, every))


@dataclass(frozen=True)
class CellOverrides:
    """Overrides for some rows at one (dataset, IPC): a protocol's per-setting values."""

    rows: tuple[str, ...]
    dataset: str
    ipc: int
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class Protocol:
    """How every row of a table is distilled and evaluated (e.g. FYI's DSA vs the original)."""

    name: str
    label: str
    overrides: tuple[str, ...] = ()
    cells: tuple[CellOverrides, ...] = ()
    #: Smoke scale (digits): overrides that make the protocol runnable there.
    smoke_overrides: tuple[str, ...] = ()

    def cell_overrides(self, row: str, dataset: str, ipc: int) -> list[str]:
        return [
            o
            for c in self.cells
            if row in c.rows and c.dataset == dataset and c.ipc == ipc
            for o in c.overrides
        ]


@dataclass(frozen=True)
class Series:
    """One curve of a figure table: a dataset (plus overrides) the command runs on."""

    name: str
    label: str
    dataset: str
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class TableSpec:
    name: str
    title: str
    kind: str
    path: Path
    rows: tuple[Row, ...] = ()
    datasets: tuple[str, ...] = ()
    ipcs: tuple[int, ...] = ()
    #: Evaluation architectures shown as separate columns (None: the run's model only).
    models: tuple[str, ...] | None = None
    distillations: int = 1
    eval_preset: str = "default"
    num_models: int = 5
    overrides: tuple[str, ...] = ()
    smoke_overrides: tuple[str, ...] = ()
    #: published[row][dataset][ipc] (grid tables; columns split by model use the ConvNet value).
    published: dict[str, dict[str, dict[int, Published]]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    command: str | None = None
    series: tuple[Series, ...] = ()
    #: Named protocols (the first listed is the default), each a set of overrides for every job.
    protocols: tuple[Protocol, ...] = ()

    def row(self, name: str) -> Row:
        return next(r for r in self.rows if r.name == name)

    def protocol(self, name: str | None = None) -> Protocol | None:
        """The protocol `name` (None: the default, the first); None when the table has none."""
        if not self.protocols:
            if name is not None:
                raise TableError(f"table {self.name} has no protocols (asked for {name!r})")
            return None
        if name is None:
            return self.protocols[0]
        for p in self.protocols:
            if p.name == name:
                return p
        known = ", ".join(p.name for p in self.protocols)
        raise TableError(f"table {self.name} has no protocol {name!r}; available: {known}")

    def paper(self, row: str, dataset: str, ipc: int) -> Published | None:
        return self.published.get(row, {}).get(dataset, {}).get(ipc)


def tables_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The folder of table YAMLs (see TABLES_ENV_VAR)."""
    if explicit:
        return Path(explicit)
    if os.environ.get(TABLES_ENV_VAR):
        return Path(os.environ[TABLES_ENV_VAR])
    local = Path("experiments/tables")
    if local.is_dir():
        return local
    checkout = Path(__file__).resolve().parents[2] / "experiments" / "tables"
    if checkout.is_dir():
        return checkout
    # An installed wheel: experiments/tables ships as distillkit/tables/specs/ (package data).
    return Path(__file__).resolve().parent / "specs"


def available_tables(directory: Path | None = None) -> list[str]:
    return sorted(p.stem for p in tables_dir(directory).glob("*.yaml"))


def load_table(name: str, directory: Path | None = None) -> TableSpec:
    """The table `name`; an unknown name lists the available ones."""
    folder = tables_dir(directory)
    path = folder / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(available_tables(folder)) or "none"
        raise TableError(f"unknown table {name!r} (in {folder}); available: {known}")
    data = yaml.safe_load(path.read_text()) or {}
    try:
        return _parse(name, path, data)
    except (KeyError, TypeError, ValueError) as exc:
        raise TableError(f"{path}: {exc}") from None


def parse_published(value: Any) -> Published | None:
    """`"28.3±0.5"`, `"28.3 +- 0.5"`, `28.3` -> Published; empty/None/"–" -> None."""
    if value is None or (isinstance(value, str) and value.strip() in ("", "-", "–")):
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Published(float(value))
    match = _PUBLISHED.match(str(value))
    if not match:
        raise TableError(f"cannot read published number {value!r} (write e.g. '28.3±0.5')")
    std = match.group(2)
    return Published(float(match.group(1)), float(std) if std is not None else None)


def _strings(values: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in (values or ()))


def _evaluate(value: Any) -> tuple[int, int, int] | None:
    """`{from: 100, every: 100, until: 5000}` -> (100, 100, 5000)."""
    if not value:
        return None
    start, every, until = int(value["from"]), int(value["every"]), int(value["until"])
    if every < 1 or start < 1 or until < start:
        raise TableError(f"evaluate needs 1 <= from <= until and every >= 1, got {value}")
    return start, every, until


def _protocol(name: str, value: dict[str, Any], rows: list[str]) -> Protocol:
    cells = []
    for cell in value.get("cells") or ():
        unknown = [r for r in cell["rows"] if r not in rows]
        if unknown:
            raise TableError(f"protocol {name}: cell overrides for unknown rows {unknown}")
        cells.append(
            CellOverrides(
                _strings(cell["rows"]),
                str(cell["dataset"]),
                int(cell["ipc"]),
                _strings(cell["overrides"]),
            )
        )
    return Protocol(
        name,
        str(value.get("label", name)),
        _strings(value.get("overrides")),
        tuple(cells),
        _strings(value.get("smoke_overrides")),
    )


def _parse(name: str, path: Path, data: dict[str, Any]) -> TableSpec:
    kind = str(data.get("kind", "grid"))
    if kind not in KINDS:
        raise TableError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    common = {
        "name": name,
        "title": str(data.get("title", name)),
        "kind": kind,
        "path": path,
        "overrides": _strings(data.get("overrides")),
        "smoke_overrides": _strings(data.get("smoke_overrides")),
        "notes": _strings(data.get("notes")),
    }
    if kind == "figure":
        command = str(data["command"])
        if command not in FIGURE_COMMANDS:
            raise TableError(f"command must be one of {', '.join(FIGURE_COMMANDS)}")
        series = tuple(
            Series(
                name=str(s["name"]),
                label=str(s.get("label", s["name"])),
                dataset=str(s.get("dataset", s["name"])),
                overrides=_strings(s.get("overrides")),
            )
            for s in data["series"]
        )
        return TableSpec(**common, command=command, series=series)
    rows = tuple(
        Row(
            name=str(r["name"]),
            label=str(r.get("label", r["name"])),
            method=str(r["method"]),
            regularizers=_strings(r.get("regularizers")),
            overrides=_strings(r.get("overrides")),
            report_best=bool(r.get("report_best", False)),
            evaluate=_evaluate(r.get("evaluate")),
        )
        for r in data["rows"]
    )
    names = [r.name for r in rows]
    if len(set(names)) != len(names):
        raise TableError("row names must be unique")
    evaluation = dict(data.get("evaluation") or {})
    published: dict[str, dict[str, dict[int, Published]]] = {}
    for row, by_dataset in (data.get("published") or {}).items():
        if str(row) not in names:
            raise TableError(f"published numbers for unknown row {row!r}")
        published[str(row)] = {
            str(ds): {int(ipc): p for ipc, v in cells.items() if (p := parse_published(v))}
            for ds, cells in by_dataset.items()
        }
    models = evaluation.get("models")
    spec = TableSpec(
        **common,
        rows=rows,
        datasets=_strings(data["datasets"]),
        ipcs=tuple(int(i) for i in data["ipcs"]),
        models=_strings(models) if models else None,
        distillations=int(data.get("distillations", 1)),
        eval_preset=str(evaluation.get("preset", "default")),
        num_models=int(evaluation.get("num_models", 5)),
        published=published,
        protocols=tuple(
            _protocol(str(k), v, names) for k, v in (data.get("protocols") or {}).items()
        ),
    )
    if spec.distillations < 1 or spec.num_models < 1:
        raise TableError("distillations and evaluation.num_models must be >= 1")
    return spec
