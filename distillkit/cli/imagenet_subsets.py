"""`distillkit-imagenet-subsets IMAGENET OUT [--subsets ...]`: build MTT's/FYI's ImageNet subsets.

    distillkit-imagenet-subsets /data/imagenet ./data                # all six
    distillkit-imagenet-subsets /data/imagenet ./data --subsets imagewoof --mode symlink

IMAGENET is an ImageNet-1k tree (train/<wnid>/, val/<wnid>/); OUT becomes the `dataset.root`
of runs on imagenette, imagewoof, ... (see distillkit/data/imagenet_subsets.py).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from distillkit.cli._common import exit_on_user_errors


def parser() -> argparse.ArgumentParser:
    from distillkit.data.imagenet_subsets import MODES, SUBSET_CLASSES

    p = argparse.ArgumentParser(
        prog="distillkit-imagenet-subsets",
        description="Build the published 10-class ImageNet subsets from an ImageNet-1k tree.",
    )
    p.add_argument(
        "imagenet", type=Path, help="ImageNet-1k root with train/<wnid>/ and val/<wnid>/"
    )
    p.add_argument("out", type=Path, help="output root (dataset.root of the runs)")
    p.add_argument(
        "--subsets", nargs="+", default=list(SUBSET_CLASSES), choices=list(SUBSET_CLASSES)
    )
    p.add_argument("--mode", default="copy", choices=list(MODES), help="copy, symlink or hardlink")
    return p


@exit_on_user_errors
def build(args: argparse.Namespace) -> dict[str, dict[str, int]]:
    from distillkit.data.imagenet_subsets import build_subset

    done = {}
    for name in args.subsets:
        done[name] = build_subset(args.imagenet, args.out, name, args.mode)
        print(
            f"{name}: {done[name]['train']} train, {done[name]['val']} val images -> "
            f"{args.out / name}",
            flush=True,
        )
    return done


def main(argv: Sequence[str] | None = None) -> None:
    build(parser().parse_args(argv))
