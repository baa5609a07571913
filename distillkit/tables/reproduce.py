"""`distillkit-tables table=<name> [scale=paper|smoke] [launcher=...]` (or `python -m
distillkit.tables.reproduce ...`).

What `make reproduce-table` runs: plan the table's jobs, build missing prerequisites (smoke) or
name the commands that build them (paper), launch only the jobs without results.json through a
Hydra launcher, then render `results/<table>.md` and `.csv` (and a W&B table with logger=wandb).

Options (key=value): table, scale (paper), protocol (tables with several: e.g. fyi's
`protocol=dsa` for the original DSA; default the first listed), launcher (basic, joblib,
submitit_local, submitit_slurm, slurm_gpu), results (results), distillations (the table's),
jobs (joblib workers), gpus (joblib: N workers, each running job holds one of N GPUs), logger
(local, wandb), prepare (paper: build missing experts/pools first), dry_run, render_only, tables
(folder).
Any other `key=value` goes to every job (`dataset.root=/data`, `device=cuda`, `logger.wandb.*`);
`hydra.*` keys go to the launcher (`hydra.launcher.partition=gpu`).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillkit.tables.plan import Plan, describe_cells, make_plan, paper_prerequisites
from distillkit.tables.spec import TableError, TableSpec, available_tables, load_table, tables_dir

LAUNCHERS = ("basic", "joblib", "submitit_local", "submitit_slurm", "slurm_gpu")
_FLAGS = ("prepare", "dry_run", "render_only")


@dataclass
class Options:
    table: str = "fyi"
    scale: str = "paper"
    #: The table's protocol (tables that define several; None: the first listed).
    protocol: str | None = None
    launcher: str = "basic"
    results: Path = Path("results")
    distillations: int | None = None
    jobs: int | None = None
    gpus: int = 0
    logger: str = "local"
    prepare: bool = False
    dry_run: bool = False
    render_only: bool = False
    tables: Path | None = None
    #: Overrides for every job, and for the launcher/master config (hydra.*).
    extra: list[str] = field(default_factory=list)
    hydra: list[str] = field(default_factory=list)


def _bool(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise TableError(f"expected true or false, got {value!r}")


def parse_args(argv: Sequence[str]) -> Options:
    opts = Options()
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            raise TableError(f"arguments are key=value, got {arg!r}")
        if key in ("table", "scale", "launcher", "logger", "protocol"):
            setattr(opts, key, value)
        elif key in ("results", "tables"):
            setattr(opts, key, Path(value))
        elif key in ("distillations", "jobs", "gpus"):
            try:
                setattr(opts, key, int(value))
            except ValueError:
                raise TableError(f"{key} must be an integer, got {value!r}") from None
        elif key in _FLAGS:
            setattr(opts, key, _bool(value))
        elif key.lstrip("+~").startswith("hydra"):
            opts.hydra.append(arg)
        else:
            opts.extra.append(arg)
    if opts.launcher not in LAUNCHERS:
        raise TableError(f"unknown launcher {opts.launcher!r}; available: {', '.join(LAUNCHERS)}")
    if opts.scale not in ("paper", "smoke"):
        raise TableError(f"scale must be paper or smoke, got {opts.scale!r}")
    if opts.logger not in ("local", "wandb"):
        raise TableError(f"logger must be local or wandb, got {opts.logger!r}")
    return opts


def hydra_overrides(plan: Plan, opts: Options) -> list[str]:
    """The master config: where the sweep lives and which launcher runs it."""
    out = [f"hydra.sweep.dir={plan.root.absolute()}"]
    if opts.launcher != "basic":
        out.append(f"hydra/launcher={opts.launcher}")
    if opts.launcher == "joblib" and (opts.jobs or opts.gpus):
        out.append(f"hydra.launcher.n_jobs={opts.jobs or opts.gpus}")
    if opts.launcher == "joblib" and opts.gpus:
        out.append("hydra.launcher.batch_size=1")
    return [*out, *opts.hydra]


@contextlib.contextmanager
def cpu_threads(scale: str) -> Iterator[dict[str, str]]:
    """Smoke jobs are tiny: one intra-op thread each (two threads fighting other work on a
    small shared CPU made a 0.1 s job take 10 s). OMP_NUM_THREADS set by the user wins."""
    env = dict(os.environ)
    if scale != "smoke" or "OMP_NUM_THREADS" in os.environ:
        yield env
        return
    import torch

    before = torch.get_num_threads()
    os.environ["OMP_NUM_THREADS"] = env["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    try:
        yield env
    finally:
        del os.environ["OMP_NUM_THREADS"]
        torch.set_num_threads(before)


@contextlib.contextmanager
def gpu_slots(gpus: int, locks: Path) -> Iterator[None]:
    """gpus=N: every job holds one of N GPUs while it runs (see launch.gpu_slot)."""
    from distillkit.tables.launch import GPU_LOCKS_ENV, GPU_SLOTS_ENV

    if gpus <= 0:
        yield
        return
    os.environ[GPU_SLOTS_ENV], os.environ[GPU_LOCKS_ENV] = str(gpus), str(locks.absolute())
    try:
        yield
    finally:
        os.environ.pop(GPU_SLOTS_ENV, None)
        os.environ.pop(GPU_LOCKS_ENV, None)


def launch_jobs(plan: Plan, opts: Options) -> list[str]:
    """Launch the pending jobs (one Hydra multirun); returns their subdirectories."""
    pending = plan.pending()
    print(
        f"distillkit.tables: {plan.spec.name} ({plan.scale}): {len(plan.jobs) - len(pending)} of "
        f"{len(plan.jobs)} jobs done, {len(pending)} to run -> {plan.root}",
        flush=True,
    )
    if not pending or opts.dry_run:
        for job in pending if opts.dry_run else ():
            print(f"  {job.subdir}: {' '.join(job.overrides)}")
        return [j.subdir for j in pending]
    from distillkit.cli._args import quote_numeric_group_choices

    jobs = [
        [*quote_numeric_group_choices(j.overrides), f"hydra.sweep.subdir='{j.subdir}'"]
        for j in pending
    ]
    plan.root.mkdir(parents=True, exist_ok=True)
    record = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "launcher": opts.launcher}
    record["jobs"] = [j.subdir for j in pending]
    with (plan.root / "launched.jsonl").open("a") as handle:
        handle.write(json.dumps(record) + "\n")
    (plan.root / "jobs.json").write_text(
        json.dumps({"hydra": hydra_overrides(plan, opts), "jobs": jobs}, indent=1)
    )
    from distillkit.tables.launch import launch

    with cpu_threads(plan.scale), gpu_slots(opts.gpus, plan.root / ".gpu_locks"):
        launch(hydra_overrides(plan, opts), jobs)
    return record["jobs"]


def prepare(plan: Plan, opts: Options) -> None:
    """Smoke: build the tiny prerequisites. Paper: build them with prepare=true, else stop."""
    needed = plan.prerequisites
    if plan.scale == "paper" and not opts.render_only:
        needed = paper_prerequisites(plan, opts.extra)
    for p in needed:
        gap = p.unpublished()
        if gap and not opts.dry_run:
            raise TableError(
                f"table {plan.spec.name} at paper scale needs the published {p.kind}, but "
                f"{p.directory} holds {gap}; move it aside and build the published one with: "
                f"{p.command}"
            )
        if gap:
            print(f"distillkit.tables: {p.directory} is not the published {p.kind} ({gap})")
    missing = [p for p in needed if not p.ready()]
    if not missing:
        return
    if opts.dry_run:
        for p in missing:
            print(f"distillkit.tables: missing {p.kind}, built by: {p.command}")
        return
    if plan.scale == "paper" and not opts.prepare:
        commands = "; ".join(p.command for p in missing)
        raise TableError(
            f"table {plan.spec.name} needs files that are not there ({len(missing)}); build "
            f"them with: {commands} (or add prepare=true)"
        )
    for p in missing:
        print(f"distillkit.tables: building {p.kind} in {p.directory}", flush=True)
        with cpu_threads(plan.scale) as env:
            built = subprocess.run(list(p.argv), check=False, env=env).returncode == 0
        if not built or not p.ready():
            raise TableError(f"could not build {p.kind} in {p.directory}: {p.command}")


def logger_config(opts: Options) -> dict[str, Any] | None:
    """W&B settings for the table's own run: offline unless logger.wandb.mode=... says so."""
    if opts.logger != "wandb":
        return None
    cfg: dict[str, Any] = {"enabled": True, "mode": "offline", "project": "distillkit"}
    for arg in opts.extra:
        key, _, value = arg.partition("=")
        if key.startswith("logger.wandb.") and key.count(".") == 2:
            cfg[key.rsplit(".", 1)[1]] = None if value == "null" else value
    return {"wandb": cfg}


def reproduce(opts: Options) -> dict[str, Any]:
    """Run (or resume) one table and render it; returns the renderer's counts."""
    spec: TableSpec = load_table(opts.table, opts.tables)
    if spec.kind == "figure":
        from distillkit.tables.figure import render_figure, run_figure

        if not opts.render_only:
            run_figure(spec, opts.scale, opts.results, opts.extra, opts.dry_run)
        return render_figure(spec, opts.scale, opts.results)
    plan = make_plan(
        spec,
        opts.scale,
        opts.results,
        distillations=opts.distillations,
        extra=opts.extra,
        logger=opts.logger,
        protocol=opts.protocol,
    )
    if opts.dry_run:
        print(f"distillkit.tables: {spec.name} ({plan.scale}) per cell:")
        print("\n".join(describe_cells(plan)), flush=True)
    if not opts.render_only:
        prepare(plan, opts)
        launch_jobs(plan, opts)
    from distillkit.tables.render import write_outputs

    return write_outputs(plan, opts.results, logger_config(opts))


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if {"-h", "--help"} & set(args):
        print(f"usage: distillkit-tables table=<name> [key=value ...]\n\n{__doc__.strip()}")
        print(f"\ntables: {', '.join(available_tables())} (in {tables_dir()})")
        return 0
    try:
        opts = parse_args(args)
        started = time.perf_counter()
        summary = reproduce(opts)
    except TableError as exc:
        print(f"distillkit.tables: error: {exc}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - started
    print(
        f"distillkit.tables: {summary['filled']} of {summary['cells']} cells filled, "
        f"{summary['failed']} failed, {summary['missing']} missing ({seconds:.0f} s) -> "
        f"{summary['markdown']}, {summary['csv']}"
    )
    return 1 if summary["failed"] or (summary["missing"] and not opts.dry_run) else 0


if __name__ == "__main__":
    raise SystemExit(main())
