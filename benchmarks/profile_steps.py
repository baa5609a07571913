"""Where the time goes: torch profiler over one DM step and one evaluation epoch.

CIFAR-shaped random data, ConvNet width 128 depth 3, IPC 10, default runtime for the device.
- DM step: `DistributionMatching.step()` with `--real-per-class` real images per class and
  Siamese DSA (one warm-up step first);
- evaluation epoch: one epoch of `train_network` (1 model) and of stacked training (5 models)
  on the 100 synthetic images, per-sample DSA.
Prints the top operators by self CPU time and a summary by category; writes
benchmarks/results/profile.json.

Run: .venv/bin/python benchmarks/profile_steps.py [--real-per-class 256] [--quick]
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch
from _common import machine, machine_line, save, set_threads
from bench_dm import fake_cifar
from torch.profiler import ProfilerActivity, profile

from distillkit.allocator import use_allocator
from distillkit.augment import DSA
from distillkit.evaluation import EvalSettings
from distillkit.evaluation.protocol import train_network
from distillkit.evaluation.stacked import train_stacked
from distillkit.methods import MethodContext, build_method
from distillkit.networks import NetworkFactory
from distillkit.seeding import RunGenerators
from distillkit.synthetic import SyntheticSet

CATEGORIES = (
    ("convolution", ("convolution", "conv2d", "mkldnn")),
    ("normalisation", ("group_norm", "batch_norm", "native_norm")),
    ("pooling", ("pool",)),
    ("activation", ("relu", "threshold", "clamp_min")),
    ("DSA warps", ("grid_sampler", "grid_sample", "affine_grid", "linalg", "inverse")),
    ("indexing / gather", ("index", "gather", "scatter", "take")),
    ("linear / matmul", ("addmm", "matmul", "mm", "bmm", "linear")),
    ("elementwise", ("mul", "add", "sub", "div", "where", "pow", "neg", "exp", "mean", "sum")),
    ("copies / fills", ("copy_", "fill_", "zero_", "clone", "contiguous", "cat", "stack")),
    ("random draws", ("rand", "random", "normal", "bernoulli")),
)


def category(name: str) -> str:
    key = name.lower()
    for label, needles in CATEGORIES:
        if any(n in key for n in needles):
            return label
    return "other"


def summarise(prof: profile, top: int) -> dict:
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    by_cat: dict[str, float] = defaultdict(float)
    for e in events:
        by_cat[category(e.key)] += e.self_cpu_time_total
    ops = sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]
    return {
        "total_ms": total / 1e3,
        "categories_percent": {
            k: round(100 * v / total, 1) for k, v in sorted(by_cat.items(), key=lambda kv: -kv[1])
        },
        "top_ops": [
            {
                "op": e.key,
                "ms": round(e.self_cpu_time_total / 1e3, 1),
                "calls": e.count,
                "percent": round(100 * e.self_cpu_time_total / total, 1),
            }
            for e in ops
        ],  # fmt: skip
    }


def show(title: str, summary: dict) -> None:
    print(f"\n{title}: {summary['total_ms']:.0f} ms of aten self time")
    cats = ", ".join(f"{k} {v}%" for k, v in summary["categories_percent"].items())
    print(f"  by category: {cats}")
    for op in summary["top_ops"]:
        print(f"  {op['op']:<36} {op['ms']:9.1f} ms {op['percent']:5.1f}%  x{op['calls']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real-per-class", type=int, default=256)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="128 real images per class")
    args = parser.parse_args()
    set_threads(args.threads)
    use_allocator("auto")  # distillkit's default host allocator (runtime.allocator)
    if args.quick:
        args.real_per_class = min(args.real_per_class, 128)
    info = machine("cpu")
    print(machine_line(info))
    gens = RunGenerators(0)
    data = fake_cifar(args.real_per_class, 10, gens["data"], "cpu")
    networks = NetworkFactory("ConvNet", 3, 10, (32, 32), {"width": 128, "depth": 3})
    dsa = DSA("color_crop_cutout_flip_scale_rotate")
    synthetic = SyntheticSet.initialise(data, 10, "real", gens["init"])
    cfg = {"_target_": "distillkit.methods.dm.DistributionMatching", "name": "dm", "lr_img": 1.0,
           "momentum": 0.5, "batch_real": args.real_per_class, "dsa": True}  # fmt: skip
    method = build_method(MethodContext(cfg, data, synthetic, networks, dsa, gens))
    method.step(0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        method.step(1)
    dm = summarise(prof, args.top)
    show(f"one DM step ({args.real_per_class} real images per class, IPC 10)", dm)

    images, labels = synthetic.training_set()
    images = images.detach()
    settings = EvalSettings(epochs=1)
    train_network(networks, images, labels, settings, dsa, torch.Generator().manual_seed(0))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_network(networks, images, labels, settings, dsa, torch.Generator().manual_seed(0))
    epoch = summarise(prof, args.top)
    show("one evaluation epoch, 1 model (100 images, per-sample DSA)", epoch)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_stacked(networks, images, labels, settings, dsa, torch.Generator().manual_seed(0), 5)
    stacked = summarise(prof, args.top)
    show("one evaluation epoch, 5 stacked models", stacked)
    save("profile", {"machine": info, "settings": vars(args), "dm_step": dm,
                     "eval_epoch": epoch, "eval_epoch_stacked_5": stacked})  # fmt: skip


if __name__ == "__main__":
    main()
