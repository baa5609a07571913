"""`distillkit-tsne set.pt [set.pt ...]`: 2-D t-SNE of real and synthetic features per class,
from a network of IID's pre-trained pool (distillkit.metrics.tsne draws the panels)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distillkit.cli._common import exit_on_user_errors
from distillkit.errors import ConfigError, InputError


def run_tsne(args: argparse.Namespace) -> list[dict[str, Any]]:
    from distillkit.assembly import load_saved_set
    from distillkit.metrics.tsne import plot_panels, tsne_panels
    from distillkit.pool import PretrainedPool
    from distillkit.runtime import resolve_device
    from distillkit.seeding import RunGenerators
    from distillkit.synthetic import SyntheticSet

    device = resolve_device(args.device)
    titles = args.labels or [Path(p).parent.name for p in args.paths]
    if len(titles) != len(args.paths):
        raise ConfigError(f"{len(args.paths)} sets but {len(titles)} labels")
    sets, data, pool_path = [], None, args.pool
    for path, title in zip(args.paths, titles, strict=True):
        if data is None:
            first = load_saved_set(path, device, args.data_root)
            synthetic, cfg, data = first.synthetic, first.cfg, first.data
            cc = (cfg.get("regularizer") or {}).get("cc") or {}
            pool_path = pool_path or cc.get("pool") or f"pools/{data.info.name}/ResNet18"
        else:
            if not Path(path).exists():
                raise FileNotFoundError(f"{path}: no such synthetic-set file")
            synthetic, _ = SyntheticSet.load(path, device)
            if synthetic.num_classes != data.info.num_classes:
                raise InputError(f"{path}: another dataset than {args.paths[0]}")
        images, labels = synthetic.training_set()
        sets.append((title, images, labels))
    assert data is not None
    # No run is built here (a saved set, its dataset and a pool network): only the seed's streams.
    pool = PretrainedPool.open(pool_path, data.info)
    generators = RunGenerators(args.seed)
    if args.member is None:
        member, net = pool.sample(generators["tsne/member"], device)
    else:
        member, net = args.member, pool.network(args.member, device)
    real, real_labels = data.sample_per_class(
        min(args.real_per_class, int(data.class_counts().min())), generators["tsne/real"]
    )
    panels = tsne_panels(sets, real, real_labels, net, data.info.num_classes, args.seed)
    plot_panels(panels, data.info.class_names, Path(args.output))
    for panel in panels:
        panel["member"] = member
    return panels


def main(argv: Sequence[str] | None = None) -> None:
    """`distillkit-tsne set.pt [set.pt ...]`: t-SNE of pool features, real vs synthetic."""
    parser = argparse.ArgumentParser(
        prog="distillkit-tsne",
        description="2-D t-SNE of real and synthetic features per class, from a pool network.",
    )
    parser.add_argument("paths", nargs="+", help="synthetic_set.pt files (one panel each)")
    parser.add_argument("--labels", nargs="+", help="panel titles (default: run directories)")
    parser.add_argument("--pool", help="pool directory (default: the run's regularizer.cc.pool)")
    parser.add_argument("--member", type=int, help="pool member (default: drawn from --seed)")
    parser.add_argument("--real-per-class", type=int, default=100)
    parser.add_argument("--data-root", help="dataset root (default: the run's dataset.root)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("tsne.png"))
    args = parser.parse_args(argv)
    panels = exit_on_user_errors(run_tsne)(args)
    for panel in panels:
        print(
            f"{panel['title']}: synthetic spread {panel['syn_spread']:.4g}, real "
            f"{panel['real_spread']:.4g}, ratio {panel['ratio']:.3f} (pool member "
            f"{panel['member']})"
        )
    print(f"-> {args.output}")
