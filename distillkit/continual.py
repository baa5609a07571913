"""Continual learning with distilled sets (the DM and IID papers' protocol).

Class-incremental in S steps: the classes are split, in a random order, into S groups; at step s
the method distils IPC images per class of the new group only (from those classes' real data),
then a fresh network is trained on all synthetic images distilled so far and tested on the test
images of every class seen so far. Repeated for several class orders (each from the run seed),
the accuracy per step is reported as mean +- std over orders.
"""

from __future__ import annotations

import csv
import dataclasses
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from distillkit.addons import AddOn, SetupContext, build_addons
from distillkit.assembly import assemble_run
from distillkit.data import RealData
from distillkit.errors import ConfigError
from distillkit.evaluation import evaluate_set
from distillkit.methods import method_class
from distillkit.networks import NetworkFactory
from distillkit.seeding import RunGenerators, derive_seed
from distillkit.synthetic import mosaic_factor
from distillkit.visualize import save_line_plot

#: The top-level keys conf/continual.yaml adds to a run's config (checked with the run's own).
CONTINUAL_KEYS = frozenset({"steps", "orders", "compare"})
FIELDS = ["label", "order", "step", "classes_seen", "new_classes", "images", "model", "mean", "std"]


def restrict_classes(data: RealData, classes: Sequence[int]) -> RealData:
    """The train and test images of `classes` only, relabelled 0..k-1 in the order given."""
    k = data.info.num_classes
    chosen = torch.as_tensor(list(classes), dtype=torch.long)
    if chosen.numel() == 0 or len(set(chosen.tolist())) != chosen.numel():
        raise ValueError(f"classes must be distinct and non-empty, got {list(classes)}")
    if int(chosen.min()) < 0 or int(chosen.max()) >= k:
        raise ValueError(f"classes must lie in [0, {k}), got {list(classes)}")
    lookup = torch.full((k,), -1, dtype=torch.long)
    lookup[chosen] = torch.arange(chosen.numel())

    def split(images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        new = lookup.to(labels.device)[labels]
        keep = new >= 0
        return images[keep], new[keep]

    info = dataclasses.replace(
        data.info,
        num_classes=chosen.numel(),
        class_names=tuple(data.info.class_names[c] for c in chosen.tolist()),
    )
    train = split(data.train_images, data.train_labels)
    test = split(data.test_images, data.test_labels)
    return RealData(info, *train, *test, zca=data.zca)


def class_orders(num_classes: int, orders: int, seed: int) -> list[list[int]]:
    """`orders` random permutations of the classes, each from its own stream of the run seed."""
    return [
        torch.randperm(num_classes, generator=RunGenerators(seed)[f"continual/order/{o}"]).tolist()
        for o in range(orders)
    ]


def split_steps(order: Sequence[int], steps: int) -> list[list[int]]:
    """The order cut into `steps` consecutive groups (sizes differ by at most one)."""
    if not 1 <= steps <= len(order):
        raise ConfigError(f"steps must be in [1, {len(order)}], got {steps}")
    return [part.tolist() for part in torch.tensor_split(torch.as_tensor(order), steps)]


def distil_classes(
    cfg: Mapping[str, Any],
    data: RealData,
    classes: Sequence[int],
    addons: list[AddOn],
    seed: int,
) -> tuple[Tensor, Tensor, float | None]:
    """Distil IPC images per class of `classes`; returns (images, original labels, eval lr)."""
    parts = assemble_run({**cfg, "seed": seed}, restrict_classes(data, classes), addons=addons)
    method = parts.method
    assert method is not None  # built: distil=True
    if method.optimises:
        for iteration in range(int(cfg["method"].get("iterations", 0))):
            method.step(iteration)
    images, labels = method.evaluated_set().training_set()  # FTD: its EMA
    original = torch.as_tensor(list(classes), device=labels.device)[labels]
    return images, original, method.eval_lr


def run_continual(
    cfg: Mapping[str, Any],
    data: RealData,
    device: torch.device,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Every order, every step: distil the new classes, train on all so far, test on seen.

    Returns one row per (order, step, evaluation model) with accuracies in percent. The config
    is the trainer's (checked by `checked_config` first; `assemble_run` checks it against the
    data).
    """
    k = data.info.num_classes
    seed = int(cfg["seed"])
    ipc, steps, orders = int(cfg["ipc"]), int(cfg["steps"]), int(cfg["orders"])
    if orders < 1:
        raise ConfigError(f"orders must be >= 1, got {orders}")
    method = method_class(cfg["method"])
    # Built once: a pool (CC) is loaded and checked against the whole dataset once per run.
    addons = build_addons(
        cfg.get("regularizer"),
        method,
        context=SetupContext(
            data.info,
            device,
            RunGenerators(seed),
            ipc * mosaic_factor(cfg["method"], cfg["synthetic"]) ** 2,
        ),
    )
    whole = assemble_run(cfg, data, distil=False, addons=addons)
    eval_settings, eval_augment = whole.eval_settings, whole.eval_augment
    label = "+".join([cfg["method"]["name"], *sorted(cfg.get("regularizer") or {})])
    rows: list[dict[str, Any]] = []
    for o, order in enumerate(class_orders(k, orders, seed)):
        images: list[Tensor] = []
        labels: list[Tensor] = []
        seen: list[int] = []
        for s, new in enumerate(split_steps(order, steps)):
            step_seed = derive_seed(seed, f"continual/{o}/{s}")
            x, y, lr = distil_classes(cfg, data, new, addons, step_seed)
            images.append(x)
            labels.append(y)
            seen.extend(new)
            seen_data = restrict_classes(data, seen)
            lookup = torch.full((k,), -1, dtype=torch.long, device=y.device)
            lookup[torch.as_tensor(seen, device=y.device)] = torch.arange(
                len(seen), device=y.device
            )
            train_x, train_y = torch.cat(images), lookup[torch.cat(labels)]
            results = evaluate_set(
                train_x,
                train_y,
                seen_data,
                NetworkFactory.from_config(cfg["model"], seen_data.info, device),
                eval_settings,
                eval_augment,
                RunGenerators(step_seed)["eval"],
                lr=lr,
                progress=False,
            )
            for model, r in results.items():
                row = {
                    "label": label,
                    "order": o,
                    "step": s + 1,
                    "classes_seen": len(seen),
                    "new_classes": " ".join(str(c) for c in new),
                    "images": int(train_x.shape[0]),
                    "model": model,
                    "mean": r["mean"],
                    "std": r["std"],
                }
                rows.append(row)
                if on_step is not None:
                    on_step(row)
    return rows


def summarise_steps(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per (model, step): accuracy mean +- std over class orders."""
    keys = sorted({(r["model"], int(r["step"])) for r in rows})
    out = []
    for model, step in keys:
        group = [r for r in rows if r["model"] == model and int(r["step"]) == step]
        values = [float(r["mean"]) for r in group]
        out.append(
            {
                "label": group[0]["label"],
                "model": model,
                "step": step,
                "classes_seen": int(group[0]["classes_seen"]),
                "mean": statistics.fmean(values),
                "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
                "orders": len(values),
            }
        )
    return out


def format_table(summary: Sequence[Mapping[str, Any]]) -> str:
    lines = [f"{'model':<10} {'step':>4} {'classes':>7}  accuracy (mean ± std over orders)"]
    for r in summary:
        lines.append(
            f"{r['model']:<10} {r['step']:>4} {r['classes_seen']:>7}  "
            f"{r['mean']:6.2f} ± {r['std']:.2f}  ({r['orders']} orders)"
        )
    return "\n".join(lines)


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    with Path(path).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    with Path(path).open(newline="") as handle:
        return list(csv.DictReader(handle))


def plot_continual(runs: Sequence[Sequence[Mapping[str, Any]]], path: Path, title: str) -> None:
    """Accuracy against classes seen: one line (mean +- std over orders) per run and model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    for rows in runs:
        summary = summarise_steps(rows)
        for model in sorted({r["model"] for r in summary}):
            line = [r for r in summary if r["model"] == model]
            x = [r["classes_seen"] for r in line]
            mean = [r["mean"] for r in line]
            std = [r["std"] for r in line]
            name = line[0]["label"] + ("" if len(summary) == len(line) else f" ({model})")
            ax.plot(x, mean, marker="o", label=name)
            ax.fill_between(
                x, [m - s for m, s in zip(mean, std, strict=True)],
                [m + s for m, s in zip(mean, std, strict=True)], alpha=0.2,
            )  # fmt: skip
    ax.set_xlabel("classes seen")
    ax.set_ylabel("test accuracy on seen classes (%)")
    save_line_plot(fig, ax, path, title)
