"""Evaluation throughput: models per minute, one after another vs stacked (torch.func.vmap).

Trains N fresh evaluation models on a synthetic set with the standard protocol (SGD momentum
0.9, wd 5e-4, batch 256, per-sample DSA, lr decay at half) and tests them, either sequentially
(`train_and_test` N times, one generator) or all at once (`train_and_test_stacked`, the same
generator: the same initial weights, data order and DSA draws). Settings:

- `cifar`: CIFAR-shaped random data (3x32x32, 10 classes), ConvNet width 128 depth 3, IPC 10
  (100 training images), a 500-image test set;
- `digits`: the demo's shape (1x16x16, 10 classes), ConvNet width 64 depth 2, IPC 10.

Both variants are timed interleaved; medians reported, plus the largest difference between the
per-model accuracies of the two variants (they should agree up to float rounding).

Run: .venv/bin/python benchmarks/bench_eval.py [--epochs 20] [--models 5 10] [--quick]
"""

from __future__ import annotations

import argparse

import torch
from _common import interleaved, machine, machine_line, medians, save, set_threads

from distillkit.allocator import use_allocator
from distillkit.augment import DSA
from distillkit.evaluation import EvalSettings, train_and_test
from distillkit.evaluation.stacked import train_and_test_stacked
from distillkit.networks import NetworkFactory

SETTINGS = {
    "cifar": {"channels": 3, "size": 32, "options": {"width": 128, "depth": 3},
              "strategy": "color_crop_cutout_flip_scale_rotate"},
    "digits": {"channels": 1, "size": 16, "options": {"width": 64, "depth": 2},
               "strategy": "color_crop_cutout_scale_rotate"},
}  # fmt: skip


def measure(spec: dict, m: int, args: argparse.Namespace) -> dict:
    """Seconds of m models sequentially and stacked, interleaved, and their accuracies."""
    c, s = spec["channels"], spec["size"]
    g = torch.Generator().manual_seed(0)
    images = torch.randn(10 * args.ipc, c, s, s, generator=g)
    labels = torch.arange(10).repeat_interleave(args.ipc)
    test_x = torch.randn(args.test_images, c, s, s, generator=g)
    test_y = torch.randint(0, 10, (args.test_images,), generator=g)
    factory = NetworkFactory("ConvNet", c, 10, (s, s), spec["options"])
    settings = EvalSettings(epochs=args.epochs)
    augment = DSA(spec["strategy"])
    data = (images, labels, test_x, test_y, settings, augment)
    accs: dict[str, list[float]] = {}

    def sequential() -> None:
        gen = torch.Generator().manual_seed(1)
        accs["sequential"] = [train_and_test(factory, *data, gen) for _ in range(m)]

    def stacked() -> None:
        gen = torch.Generator().manual_seed(1)
        accs["stacked"] = train_and_test_stacked(factory, *data, gen, m)

    times = interleaved(
        {"sequential": sequential, "stacked": stacked}, args.repeats, warmup=0, verbose=True
    )
    med = medians(times)
    pairs = zip(accs["sequential"], accs["stacked"], strict=True)
    return {
        "seconds": med,
        "models_per_minute": {k: 60.0 * m / v for k, v in med.items()},
        "speedup": med["sequential"] / med["stacked"],
        "max_accuracy_difference": max(abs(a - b) for a, b in pairs),
        "accuracies": accs,
        "seconds_all": times,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--models", type=int, nargs="+", default=[5, 10])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--test-images", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--allocator", default="auto", choices=["auto", "retain", "system"],
                        help="runtime.allocator (default: distillkit's auto)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="10 epochs, 5 models, 3 rounds")
    args = parser.parse_args()
    set_threads(args.threads)
    print(f"host allocator: {use_allocator(args.allocator)}")
    if args.quick:
        args.epochs, args.models, args.repeats = min(args.epochs, 10), [5], min(args.repeats, 3)
    info = machine("cpu")
    print(machine_line(info))
    print(
        f"evaluation: IPC {args.ipc} x 10 classes, {args.epochs} epochs per model, per-sample "
        f"DSA, {args.test_images} test images; median of {args.repeats} interleaved rounds"
    )
    rows = {}
    for name in args.settings:
        for m in args.models:
            rows[f"{name}/{m}"] = measure(SETTINGS[name], m, args)
    print(f"{'setting/models':<16} {'seq s':>8} {'stacked s':>10} {'seq models/min':>15} "
          f"{'stacked models/min':>19} {'speed-up':>9} {'max |dacc|':>11}")  # fmt: skip
    for key, r in rows.items():
        s_, k_ = r["seconds"]["sequential"], r["seconds"]["stacked"]
        mpm = r["models_per_minute"]
        diff = r["max_accuracy_difference"]
        print(
            f"{key:<16} {s_:8.2f} {k_:10.2f} {mpm['sequential']:15.2f} "
            f"{mpm['stacked']:19.2f} {r['speedup']:8.2f}x {diff:10.2f}"
        )
    name = "eval" if args.allocator == "auto" else f"eval_allocator_{args.allocator}"
    save(name, {"machine": info, "settings": vars(args), "results": rows})


if __name__ == "__main__":
    main()
