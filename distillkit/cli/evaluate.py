"""`distillkit-eval path/to/synthetic_set.pt`: re-evaluate a saved synthetic set."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distillkit.cli._common import exit_on_user_errors


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="distillkit-eval",
        description="Evaluate a saved synthetic set with the standard protocol.",
    )
    p.add_argument("path", type=Path, help="synthetic_set.pt written by a distillkit run")
    p.add_argument("--models", nargs="+", help="evaluation architectures (default: the run's)")
    p.add_argument("--num-models", type=int, help="models per architecture")
    p.add_argument("--epochs", type=int, help="training epochs per model")
    p.add_argument("--no-dsa", action="store_true", help="train without per-sample DSA")
    p.add_argument("--data-root", help="dataset root (default: the run's dataset.root)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, help="write the results as JSON here")
    return p


@exit_on_user_errors
def evaluate_saved(args: argparse.Namespace) -> dict[str, Any]:
    from distillkit.assembly import evaluation_augment, load_saved_set
    from distillkit.config import resolve_device
    from distillkit.evaluation import EvalSettings, evaluate_set
    from distillkit.io import save_json
    from distillkit.networks import NetworkFactory
    from distillkit.seeding import RunGenerators

    device = resolve_device(args.device)
    saved = load_saved_set(args.path, device, args.data_root)
    cfg = saved.cfg
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
    augment = evaluation_augment(cfg, eval_cfg) if settings.dsa else None
    networks = NetworkFactory.from_config(cfg["model"], saved.data.info, device)
    images, labels = saved.synthetic.training_set()
    results = evaluate_set(
        images,
        labels,
        saved.data,
        networks,
        settings,
        augment,
        RunGenerators(args.seed)["eval/saved"],
        lr=saved.saved.get("lr"),
    )
    if args.output:
        save_json({"path": str(args.path), "accuracy": results}, args.output)
    else:
        shown = {a: {k: r[k] for k in ("mean", "std", "n")} for a, r in results.items()}
        print(json.dumps({"accuracy": shown}))
    return results


def main(argv: Sequence[str] | None = None) -> None:
    results = evaluate_saved(parser().parse_args(argv))
    for arch, r in results.items():
        print(f"{arch}: {r['mean']:.2f} ± {r['std']:.2f}% over {r['n']} models")
