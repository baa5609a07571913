"""`distillkit-eval path/to/synthetic_set.pt` (or `wandb:<entity>/<project>/<artifact>:<alias>`):
re-evaluate a saved synthetic set. Under a launcher (`torchrun --nproc_per_node=N -m
distillkit.cli.evaluate SET`, srun) the evaluation models are spread over the processes, with
the accuracies a single process gives; rank 0 alone prints and writes."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distillkit.cli._common import exit_on_user_errors
from distillkit.errors import ConfigError

#: A synthetic set given as a W&B artifact (what a `logger=wandb` run logs).
ARTIFACT_PREFIX = "wandb:"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="distillkit-eval",
        description="Evaluate a saved synthetic set with the standard protocol.",
    )
    p.add_argument(
        "path",
        help="synthetic_set.pt written by a distillkit run, or a W&B artifact "
        "wandb:<entity>/<project>/synset-...:<alias> (downloaded in an `eval` run; needs W&B "
        "online)",
    )
    p.add_argument("--models", nargs="+", help="evaluation architectures (default: the run's)")
    p.add_argument("--num-models", type=int, help="models per architecture")
    p.add_argument("--epochs", type=int, help="training epochs per model")
    p.add_argument("--no-dsa", action="store_true", help="train without per-sample DSA")
    p.add_argument(
        "--augment",
        choices=("dsa", "dc", "none"),
        help="evaluation augmentation instead of the run's: per-sample DSA, DC's reference "
        "augmentation per dataset and model, or none",
    )
    p.add_argument(
        "--dsa-strategy",
        help="DSA operations of the evaluation (e.g. `flip`: random horizontal flips only); "
        "implies --augment dsa",
    )
    p.add_argument(
        "--with-flips",
        action="store_true",
        help="train on every stored image and its horizontal flip (twice the images: a "
        "diagnostic of what a flip-matched set holds, not the standard protocol)",
    )
    p.add_argument("--data-root", help="dataset root (default: the run's dataset.root)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, help="write the results as JSON here")
    p.add_argument(
        "--scores",
        action="store_true",
        help="also DD-Ranking's fair scores (HLR, IOR, LRS, ARS, fractions): the random subset "
        "of the same IPC, without augmentation, hard labels, and the cached full-data accuracy "
        "(eval.scores=true)",
    )
    p.add_argument("--scores-cache", help="directory of the full-data cache (eval.scores_cache)")
    p.add_argument(
        "--scores-recompute",
        action="store_true",
        help="train the full-data model again and replace its cache file",
    )
    p.add_argument(
        "--scores-full-epochs", type=int, help="epochs of the full-data model (default 200)"
    )
    p.add_argument(
        "--scores-lr-grid",
        type=float,
        nargs="+",
        help="lrs for the random subset, chosen on the run's dataset.validation split",
    )
    return p


def evaluate_saved(args: argparse.Namespace) -> dict[str, Any]:
    """{architecture: {mean, std, runs, n}} of the saved set (`evaluate_and_score`)."""
    return evaluate_and_score(args)[0]


@exit_on_user_errors
def evaluate_and_score(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The saved set's accuracies and, with `--scores`, its fair scores (else None)."""
    from distillkit.distributed import World
    from distillkit.runtime import resolve_device

    device = resolve_device(args.device)
    world = World.from_environment(device.type)
    try:
        return _evaluate_and_score(args, world, device)
    finally:
        world.close()


def _evaluate_and_score(
    args: argparse.Namespace, world: Any, device: Any
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    from distillkit.addons.fyi import with_flips
    from distillkit.assembly import assemble_run, load_saved_set
    from distillkit.augment import DSA
    from distillkit.config import checked_config
    from distillkit.evaluation import evaluate_set
    from distillkit.io import save_json
    from distillkit.metrics import fair_scores
    from distillkit.metrics.fair_scores import describe_augment

    if args.no_dsa and (args.augment or args.dsa_strategy):
        raise ConfigError("--no-dsa means --augment none; give one of them")
    if args.with_flips and args.scores:
        raise ConfigError("--with-flips is a diagnostic; fair scores need the stored set alone")
    run, path = None, Path(args.path)
    if args.path.startswith(ARTIFACT_PREFIX) and world.is_main:  # one download, shared below
        run, path = use_artifact(args.path.removeprefix(ARTIFACT_PREFIX))
    path = Path(world.broadcast_object(str(path)))
    saved = load_saved_set(path, device, args.data_root)
    cfg = evaluation_config(saved.cfg, args)
    parts = assemble_run(checked_config(cfg, resources=False), saved.data, distil=False)
    images, labels = saved.synthetic.training_set()
    if args.with_flips:
        images, labels = with_flips(images, labels)
    results = evaluate_set(
        images,
        labels,
        saved.data,
        parts.bench.networks,
        parts.eval_settings,
        parts.eval_augment,
        parts.bench.generators["eval/saved"],
        lr=saved.saved.get("lr"),
        progress=world.is_main,
        world=world,
    )
    scores = None
    if parts.eval_settings.scores:
        scores = fair_scores.compute_scores(
            images,
            labels,
            saved.data,
            parts.bench.networks,
            parts.eval_settings,
            parts.eval_augment,
            parts.bench.generators.seed,
            ipc=saved.synthetic.ipc,
            syn_accuracy=results,
            eval_stream="eval/saved",
            lr=saved.saved.get("lr"),
            dataset_cfg=cfg["dataset"],
            fallback_augment=DSA.from_config(cfg["dsa"]),
            world=world,
        )
    if not world.is_main:
        return results, scores
    if run is not None:  # the eval run records the accuracy beside the artifact it used
        run.summary.update(
            {f"eval/{a}/{k}": r[k] for a, r in results.items() for k in ("mean", "std")}
        )
        if scores is not None:
            run.summary.update(fair_scores.scalars(scores))
        run.finish()
    if args.output:
        written: dict[str, Any] = {
            "path": str(args.path),
            "augment": describe_augment(parts.eval_augment),
            "with_flips": bool(args.with_flips),
            "accuracy": results,
        }
        if scores is not None:
            written["scores"] = scores
        save_json(written, args.output)
    else:
        shown: dict[str, Any] = {
            "accuracy": {a: {k: r[k] for k in ("mean", "std", "n")} for a, r in results.items()}
        }
        if scores is not None:
            shown["scores"] = scores["headline"]
        print(json.dumps(shown))
    return results, scores


def evaluation_config(saved_cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The saved run's config with this command's choices: device, seed, and the evaluation
    options (`--no-dsa` trains with no augmentation at all, DC's included; `--augment` and
    `--dsa-strategy` replace the run's evaluation augmentation)."""
    eval_cfg = dict(saved_cfg["eval"])
    for key, value in (
        ("models", args.models),
        ("num_models", args.num_models),
        ("epochs", args.epochs),
    ):
        if value is not None:
            eval_cfg[key] = value
    if args.no_dsa:
        eval_cfg["dsa"], eval_cfg["augment"] = False, "none"
    augment = "dsa" if args.dsa_strategy else args.augment
    if augment:
        eval_cfg["augment"], eval_cfg["dsa"] = augment, augment == "dsa"
    if args.dsa_strategy:  # a strategy without a flip cannot keep FYI's flip-first variant
        eval_cfg["dsa_strategy"] = args.dsa_strategy
        eval_cfg["always_flip"] = bool(eval_cfg.get("always_flip")) and "flip" in args.dsa_strategy
    for key, value in (
        ("scores", args.scores or None),
        ("scores_cache", args.scores_cache),
        ("scores_recompute", args.scores_recompute or None),
        ("scores_full_epochs", args.scores_full_epochs),
        ("scores_lr_grid", args.scores_lr_grid),
    ):
        if value is not None:
            eval_cfg[key] = value
    return {**saved_cfg, "device": args.device, "seed": args.seed, "eval": eval_cfg}


def use_artifact(name: str) -> tuple[Any, Path]:
    """Download a `synthetic-dataset` artifact inside a W&B run of job type `eval` (lineage:
    the artifact's page lists this evaluation); returns the run and its synthetic_set.pt."""
    if os.environ.get("WANDB_MODE", "online") in ("offline", "disabled", "dryrun"):
        raise ConfigError(f"{ARTIFACT_PREFIX}{name}: fetching an artifact needs W&B online")
    import wandb

    entity_project, _, short = name.rpartition("/")
    entity, _, project = entity_project.rpartition("/")
    run = wandb.init(
        project=project or None,
        entity=entity or None,
        job_type="eval",
        reinit="finish_previous",
        settings=wandb.Settings(silent=True),
    )
    try:
        folder = Path(run.use_artifact(name, type="synthetic-dataset").download())
    except Exception as exc:  # wandb's CommError and friends: not found, no access
        run.finish(exit_code=1)
        raise ConfigError(f"{ARTIFACT_PREFIX}{name}: {exc}") from None
    return run, folder / "synthetic_set.pt"


def main(argv: Sequence[str] | None = None) -> None:
    from distillkit.launch import Launch

    results, scores = evaluate_and_score(parser().parse_args(argv))
    if Launch.from_env().rank != 0:
        return  # rank 0 prints
    for arch, r in results.items():
        print(f"{arch}: {r['mean']:.2f} ± {r['std']:.2f}% over {r['n']} models")
    for arch, m in (scores or {}).get("models", {}).items():
        full = m["full_data"]
        ars = "n/a" if m["ars"] is None else f"{m['ars']:.4f} ± {m['ars_std']:.4f}"
        print(
            f"{arch}: LRS {m['lrs']:.4f} ± {m['lrs_std']:.4f}, ARS {ars} (fractions); "
            f"HLR {m['hlr']:.4f}, IOR {m['ior']:.4f}; full data {full['accuracy']:.2f}% "
            f"({full['source']}: {full['path']})"
        )


if __name__ == "__main__":
    main()
