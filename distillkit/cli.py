"""Command-line entry points: `distillkit` (a Hydra app) and `distillkit-eval`."""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from distillkit.allocator import use_allocator
from distillkit.config import (
    ConfigError,
    check_numeric_group_choices,
    drop_null_group_choices,
    quote_numeric_group_choices,
)

#: Errors a user can fix: reported as one line, never as a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, FileNotFoundError, ValueError)
#: Exit status of a run stopped by a non-finite loss (its last good state is kept on disk).
EXIT_NUMERICAL = 3
#: Jobs of this process's multirun that failed: (job directory, error line).
FAILED_JOBS: list[tuple[Path, str]] = []


def _report(exc: BaseException) -> None:
    print(f"distillkit: error: {exc}", file=sys.stderr)


def run_training_job(
    train: Callable[[dict[str, Any]], dict[str, Any]],
    cfg: DictConfig,
    what: str,
    count_key: str,
    dir_key: str,
) -> None:
    """A network-training command's job (distillkit-pretrain, distillkit-experts): run `train` on
    the composed config; a user error is one line and exit 2, success one summary line."""
    from distillkit.trainer import as_dict

    use_allocator()  # reuse freed host memory (distillkit/allocator.py)
    try:
        summary = train(as_dict(cfg))
    except USER_ERRORS as exc:
        _report(exc)
        raise SystemExit(2) from None
    accs = summary["test_accuracy"]
    mean = f", final test accuracy {sum(accs) / len(accs):.2f}% (mean)" if accs else ""
    print(f"{summary[count_key]} {what} trained in {summary['seconds']} s{mean} -> "
          f"{summary[dir_key]}")  # fmt: skip


def _is_multirun() -> bool:
    return HydraConfig.get().mode == RunMode.MULTIRUN


def _record_failure(cfg: DictConfig, run_dir: Path, exc: BaseException) -> None:
    """failed.json in the job's directory (the table renderer marks the cell), one line out."""
    from distillkit.io import save_json

    def pick(path: str) -> object:
        return OmegaConf.select(cfg, path, default=None)

    regularizers = pick("regularizer")
    record = {
        "status": "failed",
        "error": type(exc).__name__,
        "message": str(exc),
        "method": pick("method.name"),
        "regularizers": sorted(regularizers) if isinstance(regularizers, DictConfig) else [],
        "dataset": pick("dataset.name"),
        "ipc": pick("ipc"),
        "seed": pick("seed"),
        "model": pick("model.name"),
    }
    if not isinstance(exc, USER_ERRORS + (FloatingPointError,)):
        record["traceback"] = traceback.format_exception(exc)
    save_json(record, run_dir / "failed.json")
    line = f"job {HydraConfig.get().job.num} failed ({type(exc).__name__}): {exc}"
    FAILED_JOBS.append((run_dir, line))
    print(f"distillkit: {line} -> {run_dir / 'failed.json'}", file=sys.stderr)


@hydra.main(config_path="pkg://distillkit.conf", config_name="config", version_base="1.3")
def _distill_job(cfg: DictConfig) -> float | None:
    from distillkit.trainer import RunInterrupted, Trainer

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        results = Trainer(cfg, run_dir).run()
    except RunInterrupted as exc:  # stops a whole sweep too
        print(f"distillkit: interrupted: {exc}", file=sys.stderr)
        raise SystemExit(128 + exc.signum) from None
    except Exception as exc:
        if _is_multirun():  # one failing job must not stop the others
            _record_failure(cfg, run_dir, exc)
            return None
        if isinstance(exc, FloatingPointError):
            _report(exc)
            raise SystemExit(EXIT_NUMERICAL) from None
        if isinstance(exc, USER_ERRORS):
            _report(exc)
            raise SystemExit(2) from None
        raise
    (run_dir / "failed.json").unlink(missing_ok=True)  # a re-run that now works
    headline = results["headline"]
    if headline is None:
        print(f"{results['method']} {results['dataset']} ipc={results['ipc']}: not evaluated")
        return None
    print(
        f"{results['method']} {results['dataset']} ipc={results['ipc']}: "
        f"{headline['model']} {headline['mean']:.2f} ± {headline['std']:.2f}% "
        f"({headline['n']} models) -> {run_dir}"
    )
    return headline["mean"]


def distill(argv: Sequence[str] | None = None) -> None:
    """`distillkit [overrides]`: compose the config groups and run one (or -m: many) jobs.

    In a multirun, failing jobs are reported (failed.json) while the others complete; the
    command then exits with status 1 and one line per failed job.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        args = drop_null_group_choices(args)
        check_numeric_group_choices(args)
    except ConfigError as exc:
        _report(exc)
        raise SystemExit(2) from None
    sys.argv = [sys.argv[0], *quote_numeric_group_choices(args)]
    FAILED_JOBS.clear()
    _distill_job()
    if FAILED_JOBS:
        print(f"distillkit: {len(FAILED_JOBS)} job(s) of the sweep failed:", file=sys.stderr)
        for _, line in FAILED_JOBS:
            print(f"  {line}", file=sys.stderr)
        raise SystemExit(1)


def evaluate_saved(argv: Sequence[str] | None = None) -> None:
    """`distillkit-eval path/to/synthetic_set.pt`: re-evaluate a saved synthetic set."""
    parser = argparse.ArgumentParser(
        prog="distillkit-eval",
        description="Evaluate a saved synthetic set with the standard protocol.",
    )
    parser.add_argument("path", type=Path, help="synthetic_set.pt written by a distillkit run")
    parser.add_argument("--models", nargs="+", help="evaluation architectures (default: the run's)")
    parser.add_argument("--num-models", type=int, help="models per architecture")
    parser.add_argument("--epochs", type=int, help="training epochs per model")
    parser.add_argument("--no-dsa", action="store_true", help="train without per-sample DSA")
    parser.add_argument("--data-root", help="dataset root (default: the run's dataset.root)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    use_allocator()  # reuse freed host memory (distillkit/allocator.py)
    try:
        results = _evaluate_saved(args)
    except USER_ERRORS as exc:
        _report(exc)
        raise SystemExit(2) from None
    for arch, r in results.items():
        print(f"{arch}: {r['mean']:.2f} ± {r['std']:.2f}% over {r['n']} models")


def _evaluate_saved(args: argparse.Namespace) -> dict:
    from distillkit.config import resolve_device
    from distillkit.evaluation import EvalSettings, evaluate_set
    from distillkit.io import save_json
    from distillkit.networks import NetworkFactory
    from distillkit.seeding import RunGenerators
    from distillkit.synthetic import SyntheticSet
    from distillkit.trainer import build_dsa, load_data

    if not args.path.exists():
        raise FileNotFoundError(f"{args.path}: no such synthetic-set file")
    device = resolve_device(args.device)
    synthetic, saved = SyntheticSet.load(args.path, device)
    cfg = saved.get("config")
    if not cfg:
        raise ValueError(f"{args.path}: the file carries no run configuration to evaluate with")
    dataset_cfg = dict(cfg["dataset"])
    if saved.get("zca") is not None:
        dataset_cfg["zca_state"] = saved["zca"]
    if args.data_root:
        dataset_cfg["root"] = args.data_root
    data = load_data(dataset_cfg, device)
    eval_cfg = dict(cfg["eval"])
    for key, value in (
        ("models", args.models),
        ("num_models", args.num_models),
        ("epochs", args.epochs),
    ):
        if value is not None:
            eval_cfg[key] = value
    if args.no_dsa:
        eval_cfg["dsa"] = False
    settings = EvalSettings.from_config(eval_cfg)
    augment = (
        build_dsa(cfg["dsa"], bool(eval_cfg.get("always_flip", False))) if settings.dsa else None
    )
    networks = NetworkFactory.from_config(cfg["model"], data.info, device)
    images, labels = synthetic.training_set()
    results = evaluate_set(
        images,
        labels,
        data,
        networks,
        settings,
        augment,
        RunGenerators(args.seed)["eval/saved"],
        lr=saved.get("lr"),
    )
    if args.output:
        save_json({"path": str(args.path), "accuracy": results}, args.output)
    else:
        print(
            json.dumps(
                {
                    "accuracy": {
                        a: {k: r[k] for k in ("mean", "std", "n")} for a, r in results.items()
                    }
                }
            )
        )
    return results


@hydra.main(config_path="pkg://distillkit.conf", config_name="unequalness", version_base="1.3")
def _unequalness_job(cfg: DictConfig) -> None:
    from distillkit.config import resolve_device
    from distillkit.metrics.real_curve import plot_curve, unequalness_curve, write_csv
    from distillkit.networks import NetworkFactory
    from distillkit.seeding import RunGenerators
    from distillkit.trainer import as_dict, build_dsa, load_data

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    settings = as_dict(cfg)
    use_allocator()  # reuse freed host memory (distillkit/allocator.py)
    try:
        device = resolve_device(str(settings["device"]))
        data = load_data(settings["dataset"], device)
        networks = NetworkFactory.from_config(settings["model"], data.info, device)
        rows = unequalness_curve(
            data,
            [int(s) for s in settings["sizes"]],
            networks,
            RunGenerators(settings["seed"])["unequalness/real"],
            list(settings["distances"]),
            int(settings["num_nets"]),
            int(settings["repeats"]),
            build_dsa(settings["dsa"]),
            progress=bool(settings["progress"]),
        )
    except USER_ERRORS as exc:
        _report(exc)
        raise SystemExit(2) from None
    write_csv(rows, run_dir / "unequalness.csv")
    plot_curve(rows, run_dir / "unequalness.png", f"real {data.info.name}: U(X) vs set size")
    for row in rows:
        print(f"{row['distance']:>4} size {row['size']:>4}: {row['mean']:.4g} ± {row['std']:.2g}")
    print(f"-> {run_dir / 'unequalness.csv'}, {run_dir / 'unequalness.png'}")


def unequalness_real(argv: Sequence[str] | None = None) -> None:
    """`distillkit-unequalness dataset=... sizes=[...]`: U of real sets against set size."""
    args = sys.argv[1:] if argv is None else list(argv)
    sys.argv = [sys.argv[0], *args]
    _unequalness_job()


@hydra.main(config_path="pkg://distillkit.conf", config_name="cam", version_base="1.3")
def _cam_job(cfg: DictConfig) -> None:
    from distillkit.analysis import run_cam_analysis
    from distillkit.trainer import as_dict

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    use_allocator()  # reuse freed host memory (distillkit/allocator.py)
    try:
        summary = run_cam_analysis(as_dict(cfg), run_dir)
    except USER_ERRORS as exc:
        _report(exc)
        raise SystemExit(2) from None
    print(f"classifier test accuracy {summary['test_accuracy']:.2f}%")
    for name, r in summary["mirror_symmetry"].items():
        print(f"{name:>12}: mirror correlation {r:.3f}")
    print(f"-> {run_dir}")


def cam_analysis(argv: Sequence[str] | None = None) -> None:
    """`distillkit-cam dataset=...`: per-class CAM top-region frequency maps and their symmetry."""
    args = sys.argv[1:] if argv is None else list(argv)
    sys.argv = [sys.argv[0], *args]
    _cam_job()
