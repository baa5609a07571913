"""What a finished run reports: its name, results.json's schema and the results table's rows."""

from __future__ import annotations

import platform
from collections.abc import Mapping, Sequence
from typing import Any

import torch

import distillkit

#: Columns of the per-run results table (results.csv, W&B's `results` table).
TABLE_COLUMNS = ["method", "regularizers", "dataset", "ipc", "model", "mean", "std", "n"]
#: Added to a row when the run has fair scores (`eval.scores`): LRS and ARS, fractions.
SCORE_COLUMNS = ["lrs", "ars"]


def versions() -> dict[str, str]:
    import kornia
    import torchvision

    return {
        "distillkit": distillkit.__version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "kornia": kornia.__version__,
        "python": platform.python_version(),
    }


def run_name(cfg: Mapping[str, Any]) -> str:
    regs = "+".join(sorted(cfg.get("regularizer") or {})) or "none"
    return f"{cfg['method']['name']}-{regs}-{cfg['dataset']['name']}-ipc{cfg['ipc']}-s{cfg['seed']}"


def addons_label(cfg: Mapping[str, Any]) -> str:
    """The add-ons as one flat value: none | fyi | iid | fyi+iid (cc and cm together are IID)."""
    names = set(cfg.get("regularizer") or {})
    if {"cc", "cm"} <= names:
        names = (names - {"cc", "cm"}) | {"iid"}
    return "+".join(sorted(names)) or "none"


def setting_label(cfg: Mapping[str, Any]) -> str:
    """What a table cell compares, without the seed: `dm+fyi/cifar10/ipc10`."""
    addons = addons_label(cfg)
    method = cfg["method"]["name"] + ("" if addons == "none" else f"+{addons}")
    return f"{method}/{cfg['dataset']['name']}/ipc{cfg['ipc']}"


def best_evaluation(
    evaluations: Sequence[Mapping[str, Any]], key: str = "accuracy"
) -> dict[str, Any] | None:
    """The best evaluation point of the headline model, labelled as a test-set selection
    (`key`: which accuracies of the evaluations, e.g. FTD's `raw`).

    MTT's papers report it; the headline stays the final point.
    """
    model = next((m for e in evaluations for m in e.get(key) or {}), None)
    if model is None:
        return None
    best = max(
        (e for e in evaluations if model in (e.get(key) or {})),
        key=lambda e: e[key][model]["mean"],
    )
    r = best[key][model]
    return {
        "iteration": best["iteration"],
        "model": model,
        "mean": r["mean"],
        "std": r["std"],
        "n": r["n"],
        "selection": "max over evaluations on the test set (published MTT reporting); "
        "the headline is the final point",
    }


def results(
    cfg: Mapping[str, Any],
    *,
    iterations: int,
    final: dict[str, Any],
    unequal: dict[str, float],
    evaluations: list[dict[str, Any]],
    final_loss: float | None,
    eval_lr: float | None,
    distil_s: float,
    eval_s: float,
    device: str,
    validation: dict[str, Any] | None = None,
    addons: Mapping[str, Any] | None = None,
    evaluated: str = "synthetic",
    also: Mapping[str, dict[str, Any]] | None = None,
    runtimes: list[dict[str, Any]] | None = None,
    scores: dict[str, Any] | None = None,
    cpu_s: float | None = None,
    cpu_from_iteration: int = 0,
    eval_cpu_s: float | None = None,
) -> dict[str, Any]:
    """results.json: the headline (first evaluation model's final accuracy) and everything
    needed to place the run in a table without its config files.

    `evaluated` names the set the headline, `accuracy`, `best` and `evaluations` measure (FTD:
    `ema`). `also`: final accuracies of sets evaluated beside it, by name (FTD: `raw`), each
    reported as `headline_<name>`, `accuracy_<name>` and `best_<name>` (over the evaluations'
    `<name>` entries); the headline and the tables stay the evaluated set's. `runtimes`: the
    runtime switches each stretch of iterations ran under (more than one when a run resumed
    under another runtime). `scores`: DD-Ranking's fair scores with their ingredient
    accuracies (`eval.scores`, distillkit/metrics/fair_scores.py; None when off). `cpu_s`,
    `eval_cpu_s`: this process's CPU seconds (all threads) distilling, from iteration
    `cpu_from_iteration` (0 unless the run resumed a checkpoint written before they were
    counted), and evaluating; wall time (`distil_s`) also counts time the process was stopped or
    waiting for a shared core.
    """
    beside: dict[str, Any] = {}
    for name, accuracy in (also or {}).items():
        beside[f"headline_{name}"] = headline_of(accuracy)
        beside[f"accuracy_{name}"] = accuracy
        beside[f"best_{name}"] = best_evaluation(evaluations, key=name)
    return {
        "method": cfg["method"]["name"],
        "regularizers": sorted(cfg.get("regularizer") or {}),
        # What add-ons report beyond their config (cc: the pool it sampled from).
        "addons": dict(addons or {}),
        "dataset": cfg["dataset"]["name"],
        "ipc": cfg["ipc"],
        "seed": cfg["seed"],
        "model": cfg["model"]["name"],
        "iterations": iterations,
        "evaluated": evaluated,
        "headline": headline_of(final),
        "accuracy": final,
        **beside,
        # Accuracy on `dataset.validation` images per class held out of the training split (the
        # objective of a search; None without a split), reported apart from the test accuracy.
        "validation": None
        if validation is None
        else {"headline": headline_of(validation), "accuracy": validation},
        "unequalness": unequal,
        "best": best_evaluation(evaluations),
        # HLR, IOR, LRS, ARS (fractions; `percent`: DD-Ranking's units) and every ingredient.
        "scores": scores,
        "evaluations": evaluations,
        "final_loss": final_loss,
        "eval_lr": eval_lr,
        "timings": {
            "distil_s": round(distil_s, 3),
            "eval_s": round(eval_s, 3),
            "s_per_iteration": round(distil_s / iterations, 5) if iterations else None,
            "cpu_s": None if cpu_s is None else round(cpu_s, 3),
            "cpu_from_iteration": cpu_from_iteration,
            "eval_cpu_s": None if eval_cpu_s is None else round(eval_cpu_s, 3),
        },
        "device": device,
        "runtimes": list(runtimes or []),
        "versions": versions(),
        "config": cfg,
    }


def headline_of(accuracy: Mapping[str, Any]) -> dict[str, Any] | None:
    """The first evaluation model's mean, std and n (None when nothing was evaluated)."""
    if not accuracy:
        return None
    model = next(iter(accuracy))
    return {"model": model, **{k: accuracy[model][k] for k in ("mean", "std", "n")}}


def table_columns(results: Mapping[str, Any]) -> list[str]:
    """TABLE_COLUMNS, with SCORE_COLUMNS when the run has fair scores."""
    return TABLE_COLUMNS + (SCORE_COLUMNS if results.get("scores") else [])


def table_rows(results: Mapping[str, Any]) -> list[list[Any]]:
    """One row of `table_columns(results)` per evaluation architecture."""
    scores = results.get("scores")
    rows = []
    for arch, r in results["accuracy"].items():
        row = [
            results["method"],
            "+".join(results["regularizers"]) or "none",
            results["dataset"],
            results["ipc"],
            arch,
            r["mean"],
            r["std"],
            r["n"],
        ]
        if scores:
            model = (scores.get("models") or {}).get(arch) or {}
            row += [model.get(k) for k in SCORE_COLUMNS]
        rows.append(row)
    return rows
