"""Expand a grid table into `distillkit` jobs: one deterministic directory per cell and seed.

The directory `<results>/<table>/<scale>/<row>/<dataset>_ipc<ipc>/seed<k>` is the job's identity:
a job is done when it holds results.json, so re-running a table launches only what is missing
(and a killed job, re-launched into the same directory, continues from its checkpoint).

Paper scale passes only the table's choices (method, add-ons, dataset, IPC, seed, evaluation);
the published per-setting values come from the config itself (`conf/tuned/`, method and
regularizer defaults), exactly as a user typing the command would get them. Smoke scale runs every
cell on the built-in `digits` dataset at a tiny budget on the CPU, to check the plumbing.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distillkit.tables.spec import Protocol, TableError, TableSpec

if TYPE_CHECKING:
    from distillkit.methods.base import Method

SCALES = ("paper", "smoke")
#: Smoke scale always distils on this built-in dataset (ships with scikit-learn, 8x8 here).
SMOKE_DATASET = "digits"
#: Training images in the smallest digits class: a cell whose stored images need more real images
#: than this (IDM's and IDC's mosaics: factor**2 each) starts from noise at smoke scale.
DIGITS_SMALLEST_CLASS = 131
#: Every smoke job: tiny images, nets, budgets; CPU; no plots that cost seconds.
SMOKE_COMMON = (
    "dataset.image_size=8",
    "model.width=8",
    "method.iterations=2",
    "eval.epochs=2",
    "device=cpu",
    "progress=false",
    "checkpoint.every=0",
    "unequalness.enabled=false",
    "images.flips=false",
    "log_every=1",
)
#: Each method's own smoke budget (its class's `smoke_overrides`), the expert buffer it reads
#: (`expert_options`) and its mosaics (its config's `factor`) come from the method: see
#: `_method` and `_stored_images`.
#: Overrides of a table or protocol that the experts share with the distillation: their DSA
#: (FYI's protocol trains and reads always-flip experts: dsa.always_flip=true); the first is the
#: switch, the others the strategy.
EXPERT_AUGMENT_KEYS = ("dsa.always_flip=", "dsa.strategy=", "dataset.dsa_strategy=")
#: Published prerequisite sizes (methods.md): MTT's experts, IID's pre-trained pool.
PAPER_EXPERTS = ("num_experts=100", "epochs=50")
PAPER_POOL = ("pool.size=1000", "pool.epochs=40")  # distillkit.pool.PUBLISHED_POOL
SMOKE_DATA = ("dataset=digits", "dataset.image_size=8")


@dataclass(frozen=True)
class Job:
    """One distillation of one cell."""

    row: str
    dataset: str
    ipc: int
    seed: int
    subdir: str
    overrides: tuple[str, ...]
    #: The dataset the job really distils (digits at smoke scale).
    run_dataset: str

    def directory(self, root: Path) -> Path:
        return root / self.subdir


@dataclass(frozen=True)
class Prerequisite:
    """A file set some jobs need (MTT experts, IID pool) and the command that builds it."""

    kind: str
    directory: Path
    pattern: str
    argv: tuple[str, ...]
    #: The same command as a user would type it (for error messages and docs).
    command: str

    #: Paper scale: the files must be the published ones (IID's pool: 1000 x 40 epochs).
    published: bool = False

    def ready(self) -> bool:
        return self.directory.is_dir() and any(self.directory.glob(self.pattern))

    def unpublished(self) -> str | None:
        """Why the files present are not the published ones (None: they are, or none is there)."""
        if not (self.published and self.kind == "pool" and self.ready()):
            return None
        from distillkit.pool import pool_facts, published_shortfall

        facts = pool_facts(self.directory)
        return None if facts is None else published_shortfall(facts)


@dataclass
class Plan:
    spec: TableSpec
    scale: str
    root: Path
    jobs: list[Job]
    prerequisites: list[Prerequisite] = field(default_factory=list)
    #: table dataset -> the dataset run in its place (smoke scale).
    substitutions: dict[str, str] = field(default_factory=dict)
    #: The protocol every job runs under (tables that define protocols).
    protocol: Protocol | None = None

    def done(self, job: Job) -> bool:
        return (job.directory(self.root) / "results.json").is_file()

    def pending(self) -> list[Job]:
        return [j for j in self.jobs if not self.done(j)]


def regularizer_override(regularizers: Sequence[str]) -> str:
    return f"regularizer=[{','.join(regularizers)}]" if regularizers else "regularizer=none"


def cell_subdir(row: str, dataset: str, ipc: int, seed: int) -> str:
    return f"{row}/{dataset}_ipc{ipc}/seed{seed}"


def logger_overrides(logger: str, table: str, scale: str) -> list[str]:
    """W&B runs of one table share a group (the table's name), tagged with the scale."""
    if logger == "local":
        return []
    if logger != "wandb":
        raise TableError(f"logger must be local or wandb, got {logger!r}")
    return ["logger=wandb", f"logger.wandb.group={table}", f"logger.wandb.tags=[{table},{scale}]"]


def make_plan(
    spec: TableSpec,
    scale: str,
    results_dir: Path,
    *,
    distillations: int | None = None,
    extra: Sequence[str] = (),
    logger: str = "local",
    protocol: str | None = None,
) -> Plan:
    """Every job of a grid table at `scale`, in row, dataset, IPC, seed order.

    `extra` (e.g. `dataset.root=/data`, `device=cuda`) is appended to every job. Tables with
    protocols run under `protocol` (default: the first listed), in a directory of its own.
    """
    if scale not in SCALES:
        raise TableError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    if spec.kind != "grid":
        raise TableError(f"table {spec.name} is a {spec.kind}, not a grid")
    chosen = spec.protocol(protocol)
    root = Path(results_dir) / spec.name / scale
    if chosen is not None:
        root = root / chosen.name
    seeds = range(distillations or (1 if scale == "smoke" else spec.distillations))
    prerequisites = _prerequisites(spec, scale, root, chosen)
    jobs: list[Job] = []
    for row in spec.rows:
        for dataset in spec.datasets:
            for ipc in spec.ipcs:
                for seed in seeds:
                    overrides = _job_overrides(
                        spec, row.name, dataset, ipc, seed, scale, root, chosen
                    )
                    overrides += [*extra, *logger_overrides(logger, spec.name, scale)]
                    jobs.append(
                        Job(
                            row=row.name,
                            dataset=dataset,
                            ipc=ipc,
                            seed=seed,
                            subdir=cell_subdir(row.name, dataset, ipc, seed),
                            overrides=tuple(overrides),
                            run_dataset=SMOKE_DATASET if scale == "smoke" else dataset,
                        )
                    )
    substitutions = (
        {d: SMOKE_DATASET for d in spec.datasets if d != SMOKE_DATASET} if scale == "smoke" else {}
    )
    return Plan(spec, scale, root, jobs, prerequisites, substitutions, chosen)


def _job_overrides(
    spec: TableSpec,
    row_name: str,
    dataset: str,
    ipc: int,
    seed: int,
    scale: str,
    root: Path,
    protocol: Protocol | None = None,
) -> list[str]:
    row = spec.row(row_name)
    overrides = [
        f"method={row.method}",
        regularizer_override(row.regularizers),
        f"dataset={SMOKE_DATASET if scale == 'smoke' else dataset}",
        f"ipc={ipc}",
        f"seed={seed}",
        f"eval={spec.eval_preset}",
        f"eval.num_models={1 if scale == 'smoke' else spec.num_models}",
    ]
    if spec.models:
        overrides.append(f"eval.models=[{','.join(spec.models)}]")
    overrides += [*spec.overrides]
    if protocol is not None and scale == "paper":
        overrides += [*protocol.overrides, *protocol.cell_overrides(row.name, dataset, ipc)]
    elif protocol is not None:
        overrides += [*protocol.smoke_overrides]
    overrides += [*row.overrides]
    if scale == "paper" and row.evaluate is not None:
        overrides.append(f"eval.at=[{','.join(str(i) for i in row.evaluation_points())}]")
    if scale == "smoke":
        method = _method(row.method)
        overrides += [*SMOKE_COMMON, *method.smoke_overrides, *spec.smoke_overrides]
        if ipc * _stored_images(row.method) > DIGITS_SMALLEST_CLASS:
            overrides.append("synthetic.init=noise")  # too few digits for a real init
        if method.expert_options is not None:
            kind = _experts_kind(method, _smoke_flip(spec, protocol))
            overrides.append(f"method.buffer={_smoke_dir(root, kind)}")
            overrides += [*method.smoke_buffer_overrides]
        if _needs_pool(row.regularizers):
            overrides.append(f"regularizer.cc.pool={_smoke_dir(root, 'pool')}")
    return overrides


def _needs_pool(regularizers: Sequence[str]) -> bool:
    return any(r in ("iid", "cc") for r in regularizers)


def _method(name: str) -> type[Method]:
    """The class of conf/method/<name>.yaml (a row's `method`): what it declares is what the
    plan reads of a method (smoke budget, expert buffer)."""
    from distillkit.methods.registry import shipped_method

    return shipped_method(name)


def _stored_images(name: str) -> int:
    """Real images one stored image of the method is built from: factor**2 for the mosaics of a
    method whose config sets a `factor` (IDM, IDC), else 1."""
    from distillkit.methods.registry import method_file

    return int(method_file(name).get("factor") or 1) ** 2


def _expert_methods(spec: TableSpec) -> list[type[Method]]:
    """The classes of the table's methods that read an expert buffer, in row order."""
    methods = [_method(m) for m in dict.fromkeys(r.method for r in spec.rows)]
    return [m for m in methods if m.expert_options is not None]


def _experts_kind(method: type[Method], flip: bool = False) -> str:
    """The smoke prerequisite a method's buffer is: plain SGD experts (`experts`, MTT's), or
    experts with the method's own options in a buffer named after it (FTD's GSAM experts:
    `experts_ftd`); with `_flip` for always-flip experts, as distillkit-experts names its
    default buffer."""
    kind = f"experts_{method.name}" if method.expert_options else "experts"
    return f"{kind}_flip" if flip else kind


def _smoke_augment(spec: TableSpec, protocol: Protocol | None) -> tuple[str, ...]:
    """The smoke jobs' DSA overrides the experts must share (the table's, then the protocol's)."""
    chosen = (
        *spec.overrides,
        *(protocol.smoke_overrides if protocol else ()),
        *spec.smoke_overrides,
    )
    return tuple(o for o in chosen if o.startswith(EXPERT_AUGMENT_KEYS))


def _smoke_flip(spec: TableSpec, protocol: Protocol | None) -> bool:
    """Whether the smoke jobs distil with dsa.always_flip=true (the last such override wins)."""
    flips = [
        o.partition("=")[2].strip().lower()
        for o in _smoke_augment(spec, protocol)
        if o.startswith("dsa.always_flip=")
    ]
    return bool(flips) and flips[-1] == "true"


def _smoke_dir(root: Path, kind: str) -> Path:
    return (root / "_prereq" / kind).absolute()


def _python(module: str, function: str) -> tuple[str, ...]:
    return (sys.executable, "-c", f"from {module} import {function}; {function}()")


def _prerequisites(
    spec: TableSpec, scale: str, root: Path, protocol: Protocol | None = None
) -> list[Prerequisite]:
    """Smoke: a one-expert buffer (with the protocol's DSA: always-flip experts under FYI's),
    a one-member pool (digits). Paper: paper_prerequisites."""
    if scale != "smoke":
        return []
    wanted = []
    augment = _smoke_augment(spec, protocol)
    for method in _expert_methods(spec):
        options = method.expert_options
        directory = _smoke_dir(root, _experts_kind(method, _smoke_flip(spec, protocol)))
        if any(p.directory == directory for p in wanted):
            continue  # another method reading the same buffer
        args = (
            *SMOKE_DATA,
            *(o for o in augment if o.startswith("dataset.")),
            "model.width=8",
            "num_experts=1",
            "epochs=2",
            *options,
            *(o for o in augment if o.startswith("dsa.")),
            "device=cpu",
            "progress=false",
            f"buffer_dir={directory}",
            f"hydra.run.dir={directory / '_run'}",
        )
        wanted.append(
            Prerequisite(
                "experts",
                directory,
                "experts_*.pt",
                (*_python("distillkit.cli.experts", "main"), *args),
                "distillkit-experts " + " ".join(args),
            )
        )
    if any(_needs_pool(r.regularizers) for r in spec.rows):
        directory = _smoke_dir(root, "pool")
        args = (
            *SMOKE_DATA,
            "pool.size=1",
            "pool.epochs=1",
            "device=cpu",
            "progress=false",
            f"pool.dir={directory}",
            f"hydra.run.dir={directory / '_run'}",
        )
        wanted.append(
            Prerequisite(
                "pool",
                directory,
                "pool_*.pt",
                (*_python("distillkit.cli.pretrain", "main"), *args),
                "distillkit-pretrain " + " ".join(args),
            )
        )
    return wanted


def compose_jobs(jobs: Sequence[Sequence[str]]) -> list[Any]:
    """The composed config of each job (the Hydra compose API; numeric groups quoted)."""
    from hydra import compose, initialize_config_module

    from distillkit.cli._args import quote_numeric_group_choices

    with initialize_config_module(config_module="distillkit.conf", version_base="1.3"):
        return [
            compose("config", overrides=quote_numeric_group_choices(list(overrides)))
            for overrides in jobs
        ]


def paper_prerequisites(plan: Plan, extra: Sequence[str] = ()) -> list[Prerequisite]:
    """The expert buffers and IID pools the paper-scale jobs read, found by composing one job of
    each (method, dataset, ipc) that needs them; each with the published-size build command.
    Experts share the job's DSA: under dsa.always_flip=true (FYI's protocol) they are FYI's
    always-flip experts, in the `_flip` buffer the job's method.buffer names."""
    from omegaconf import OmegaConf

    data_args = tuple(o for o in extra if o.startswith(("dataset.", "device=")))
    wanted: dict[Path, Prerequisite] = {}
    jobs = [
        j
        for j in plan.jobs
        if j.seed == 0
        and (
            _method(plan.spec.row(j.row).method).expert_options is not None
            or _needs_pool(plan.spec.row(j.row).regularizers)
        )
    ]
    for job, cfg in zip(jobs, compose_jobs([j.overrides for j in jobs]), strict=True):
        row = plan.spec.row(job.row)
        method = _method(row.method)
        zca = bool(OmegaConf.select(cfg, "dataset.zca", default=False))
        stats = OmegaConf.select(cfg, "dataset.stats", default=None)
        base = (
            f"dataset={job.run_dataset}",
            *(("dataset.zca=true",) if zca else ()),
            *((f"dataset.stats={stats}",) if stats not in (None, "own") else ()),
        )
        if method.expert_options is not None:
            directory = Path(str(cfg.method.buffer))
            options = method.expert_options
            alpha = OmegaConf.select(cfg, "method.gsam_alpha", default=None)
            if alpha is not None:
                options = (*options, f"gsam.alpha={alpha}")
            if any(o.startswith(EXPERT_AUGMENT_KEYS[1:]) for o in job.overrides):
                options = (*options, f"dsa.strategy={cfg.dsa.strategy}")  # a job's own strategy
            if OmegaConf.select(cfg, "dsa.always_flip", default=False):
                options = (*options, "dsa.always_flip=true")
            args = (*base, *data_args, *PAPER_EXPERTS, *options, f"buffer_dir={directory}")
            wanted.setdefault(
                directory,
                Prerequisite(
                    "experts",
                    directory,
                    "experts_*.pt",
                    (*_python("distillkit.cli.experts", "main"), *args),
                    "distillkit-experts " + " ".join(args),
                ),
            )
        if _needs_pool(row.regularizers):
            directory = Path(str(cfg.regularizer.cc.pool))
            args = (*base, *data_args, *PAPER_POOL, f"pool.dir={directory}")
            wanted.setdefault(
                directory,
                Prerequisite(
                    "pool",
                    directory,
                    "pool_*.pt",
                    (*_python("distillkit.cli.pretrain", "main"), *args),
                    "distillkit-pretrain " + " ".join(args),
                    published=True,
                ),
            )
    return list(wanted.values())


def describe_cells(plan: Plan) -> list[str]:
    """One line per (row, dataset, IPC), from its composed config: the protocol (augmentation in
    distillation and evaluation), the budget (iterations, evaluation points, evaluation models
    and epochs) and the precision. What `dry_run=true` prints before listing the jobs."""
    from omegaconf import OmegaConf

    first = [j for j in plan.jobs if j.seed == min(x.seed for x in plan.jobs)]
    lines = []
    for job, cfg in zip(first, compose_jobs([j.overrides for j in first]), strict=True):
        c = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(c, dict)
        method, dsa, ev = c["method"], c["dsa"], c["eval"]
        flip = " always-flip" if dsa.get("always_flip") else ""
        distil = f"DSA {dsa['strategy']}{flip}" if method.get("dsa") else "no augmentation"
        eflip = " always-flip" if ev.get("always_flip") else ""
        aug = ev.get("augment") or ("dsa" if ev.get("dsa") else "none")
        evaluation = f"{aug}{eflip if aug == 'dsa' else ''}, {ev['num_models']} x {ev['epochs']}"
        points = list(ev.get("at") or [])
        at = f", evaluated at {len(points)} points {points[0]}..{points[-1]}" if points else ""
        precision = (c.get("runtime") or {}).get("precision", "fp32")
        if "loops" in method:
            loops = (
                method["loops"].get(job.ipc) or method["loops"].get(str(job.ipc)) or [None, None]
            )
            outer = method.get("outer_loop") or loops[0]
            inner = method.get("inner_loop") or loops[1]
            distil += f", loops ({outer}, {inner})"
        protocol = f"[{plan.protocol.name}] " if plan.protocol is not None else ""
        if "accuracy_reset_interval" in method:
            distil += f", accuracy reset every {method['accuracy_reset_interval']}"
        model = c["model"]
        net = f"{model['name']}" + (f" depth {model['depth']}" if model.get("depth") else "")
        lines.append(
            f"  {job.row} {job.dataset} IPC {job.ipc}: {protocol}{net}; distil "
            f"{method.get('iterations', 0)} it. ({distil}), init {c['synthetic']['init']}{at}; "
            f"eval {evaluation} epochs {','.join(ev['models'])}; precision {precision}"
        )
    return lines
