"""Seconds per step and per-rank peak memory of DM and DC over 1 and N processes, side by side.

CIFAR-shaped random data (3x32x32, no download), ConvNet depth 3, IPC 1, one thread per rank.
Each cell (method x classes x processes) is one launch of N worker processes that join one gloo
(CPU) or NCCL (CUDA) group, as torchrun starts them, and step the method as the trainer does:
its classes split over the ranks, the step's losses all-reduced after every step (DC gathers the
whole set before each inner loop). Cells run one after another in rounds (N = 1, N = 2, ... for
each setting, then again), so load on the machine hits them alike; per cell the step time is
the slowest rank's median, the memory each rank's peak resident size (`ru_maxrss`) and that peak
above its resident size before the first step (Python, torch and the real data, which every rank
holds whole). On a 2-core CPU two ranks share the cores with whatever else runs, so the time
ratio says what the split costs or saves there, not what N GPUs give.

Run: .venv/bin/python benchmarks/bench_distributed.py [--quick] [--ranks 1 2] [--classes 10 100]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb() -> float:
    """This process's resident size now (MB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(args: argparse.Namespace) -> None:
    """One rank: build the method on fake data with the world's share of classes, step it."""
    import torch
    from bench_dm import fake_cifar

    from distillkit.allocator import use_allocator
    from distillkit.augment import DSA
    from distillkit.distributed import World
    from distillkit.methods import MethodContext, build_method
    from distillkit.networks import NetworkFactory
    from distillkit.seeding import RunGenerators
    from distillkit.synthetic import SyntheticSet

    torch.set_num_threads(1)
    use_allocator("auto")
    world = World.from_environment(args.device, timeout_s=600, join_single=args.join_single)
    device = world.device if args.device == "cuda" else torch.device("cpu")
    k = args.classes
    gens = RunGenerators(0)
    data = fake_cifar(args.real_per_class, k, gens["data"], str(device))
    synthetic = SyntheticSet.initialise(data, args.ipc, "real", gens["init"])
    networks = NetworkFactory(
        "ConvNet", 3, k, (32, 32), {"width": args.width, "depth": 3}, str(device)
    )
    if args.method == "dm":
        cfg = {"_target_": "distillkit.methods.dm.DistributionMatching", "name": "dm",
               "lr_img": 1.0, "momentum": 0.5, "batch_real": args.real_per_class,
               "dsa": True}  # fmt: skip
        augment = DSA("color_crop_cutout_flip_scale_rotate")
    else:
        cfg = {"_target_": "distillkit.methods.gradient_matching.DatasetCondensation",
               "name": "dc", "lr_img": 0.1, "momentum": 0.5, "lr_net": 0.01,
               "batch_real": args.real_per_class, "batch_train": 256, "outer_loop": 2,
               "inner_loop": 1}  # fmt: skip
        augment = None
    ctx = MethodContext(cfg, data, synthetic, networks, augment, RunGenerators(1), world=world)
    method = build_method(ctx)
    before = rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(args.warmup + args.steps):
        world.barrier()
        started = time.perf_counter()
        losses = method.step(i)
        world.all_reduce_sum(torch.stack([v.detach().float() for v in losses.values()]))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - started)
    method.sync_shards()
    record = {
        "rank": world.rank,
        "step_s": statistics.median(times),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_mb": before,
        "backend": world.backend,
    }
    if device.type == "cuda":
        record["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    records = world.gather_objects(record)
    if world.is_main:
        Path(args.out).write_text(json.dumps(records))
    world.close()


def launch(args: argparse.Namespace, method: str, classes: int, ranks: int) -> list[dict]:
    """One cell: `ranks` worker processes with torchrun's variables; their records."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "records.json"
        command = [
            sys.executable, str(HERE), "--worker", "--method", method, "--classes", str(classes),
            "--real-per-class", str(args.real_per_class), "--ipc", str(args.ipc),
            "--width", str(args.width), "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--device", args.device, "--out", str(out),
        ]  # fmt: skip
        if args.join_single:
            command.append("--join-single")
        procs = []
        for rank in range(ranks):
            env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK"))}
            env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
            if ranks > 1 or args.join_single:
                env.update(RANK=str(rank), WORLD_SIZE=str(ranks), LOCAL_RANK=str(rank),
                           MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
            procs.append(subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True))
        errors = [p.communicate()[1] for p in procs]
        if any(p.returncode for p in procs):
            raise SystemExit(f"{method} {classes} classes x {ranks}: " + "\n".join(errors)[-3000:])
        return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--method", default="dm", help=argparse.SUPPRESS)
    parser.add_argument("--methods", nargs="+", default=["dm", "dc"])
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--real-per-class", type=int, default=64)
    parser.add_argument("--ipc", type=int, default=1)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2, help="rounds over every cell")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument(
        "--join-single", action="store_true",
        help="a world of one joins a process group too (NCCL on one GPU: gpu_check)",
    )  # fmt: skip
    parser.add_argument("--name", default="distributed")
    parser.add_argument("--quick", action="store_true", help="width 32, 32 real/class, 3 steps")
    args = parser.parse_args()
    if args.worker:
        args.classes = args.classes[0] if isinstance(args.classes, list) else args.classes
        return worker(args)
    if args.quick:
        args.width, args.real_per_class, args.steps, args.repeats = 32, 32, 3, 1
    from _common import machine, machine_line, save

    info = machine(args.device)
    info["threads"] = 1  # per rank
    print(machine_line(info))
    print(
        f"ConvNet width {args.width} depth 3, IPC {args.ipc}, {args.real_per_class} real per "
        f"class, {args.steps} timed steps after {args.warmup}, {args.repeats} round(s), one "
        "thread per rank"
    )
    cells = [(m, k, n) for m in args.methods for k in args.classes for n in args.ranks]
    runs: dict[tuple[str, int, int], list[list[dict]]] = {c: [] for c in cells}
    for _ in range(args.repeats):
        for cell in cells:
            runs[cell].append(launch(args, *cell))
    results = []
    print(f"{'method':6} {'classes':>7} {'ranks':>5} {'step s':>8} {'vs N=1':>7} "
          f"{'peak MB/rank':>12} {'above start':>11} {'vs N=1':>7}")  # fmt: skip
    for method in args.methods:
        for k in args.classes:
            base: dict | None = None
            for n in args.ranks:
                rounds = runs[(method, k, n)]
                step = statistics.median(max(r["step_s"] for r in rnd) for rnd in rounds)
                peak = max(r["peak_rss_mb"] for rnd in rounds for r in rnd)
                above = max(r["peak_rss_mb"] - r["rss_before_mb"] for rnd in rounds for r in rnd)
                row = {"method": method, "classes": k, "ranks": n, "step_s": step,
                       "peak_rss_mb_per_rank": peak, "peak_above_start_mb": above,
                       "records": rounds}  # fmt: skip
                if base is None:
                    base = row
                row["step_vs_one"] = step / base["step_s"]
                row["above_start_vs_one"] = above / base["peak_above_start_mb"]
                results.append(row)
                print(f"{method:6} {k:7d} {n:5d} {step:8.3f} {row['step_vs_one']:7.2f} "
                      f"{peak:12.0f} {above:11.0f} {row['above_start_vs_one']:7.2f}")  # fmt: skip
    save(args.name, {"machine": info, "settings": vars(args), "cells": results})


if __name__ == "__main__":
    main()
