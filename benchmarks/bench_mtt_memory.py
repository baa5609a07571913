"""Peak memory of one MTT iteration: `unrolled` vs `constant_memory` at syn_steps 10, 20, 40.

Unrolled back-propagation keeps every student step's graph, so its memory grows with syn_steps;
the constant-memory (TESLA-style) mode holds one step's graph at a time and should stay flat.

Each (mode, syn_steps, repeat) runs in a fresh subprocess (so freed-but-retained allocator memory
of one setting cannot hide the next one's growth) on CIFAR-shaped random data (3x32x32, 10
classes, no download), ConvNet width 128 depth 3, IPC 1 (batch_syn = all, per-sample DSA), with a
random-walk expert buffer in a temporary directory. The child builds everything, runs one
warm-up iteration with a single student step, then measures one iteration at the full syn_steps:
- CPU: peak resident-set growth over the RSS just before the iteration, sampled every ~0.5 ms by a
  background thread reading /proc/self/statm;
- CUDA (when available, `--device cuda`): torch.cuda.max_memory_allocated growth.
Prints medians over `--repeats` and the machine.

Run: .venv/bin/python benchmarks/bench_mtt_memory.py [--repeats 3] [--width 128] [--ipc 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from _common import machine, machine_line, save

MODES = ("unrolled", "constant_memory")
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakRSS:
    """Highest RSS seen by a polling thread while the `with` block runs."""

    def __init__(self, interval: float = 5e-4) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self.peak = rss_bytes()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def child(args: argparse.Namespace) -> dict:
    """One measurement: build a tiny MTT problem, warm up with 1 step, measure syn_steps."""
    import torch

    from distillkit.augment import DSA
    from distillkit.data.real import DatasetInfo, RealData
    from distillkit.experts import buffer_meta, flatten_parameters, write_shard
    from distillkit.methods.base import MethodContext
    from distillkit.methods.mtt import TrajectoryMatching
    from distillkit.networks import NetworkFactory
    from distillkit.seeding import RunGenerators

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    k, size = 10, args.size
    info = DatasetInfo("fake-cifar", 3, (size, size), k, tuple(map(str, range(k))), (0.0,) * 3,
                       (1.0,) * 3)  # fmt: skip
    labels = torch.arange(k).repeat_interleave(10)
    images = torch.randn(len(labels), 3, size, size, generator=gen)
    data = RealData(info, images.to(device), labels.to(device), images[:10].to(device),
                    labels[:10].to(device))  # fmt: skip
    factory = NetworkFactory("ConvNet", 3, k, (size, size), {"width": args.width}, device)
    init = flatten_parameters(factory(gen)).cpu()
    walk = init + 0.01 * torch.randn(3, init.numel(), generator=gen).cumsum(0)
    trajectory = torch.cat([init[None], walk])[None]  # 1 expert, 3 epochs
    with tempfile.TemporaryDirectory() as buffer:
        write_shard(buffer, 0, trajectory, buffer_meta(info, factory), [0])
        gens = RunGenerators(0)
        from distillkit.synthetic import SyntheticSet

        synthetic = SyntheticSet.initialise(data, args.ipc, "real", gens["init"])
        cfg = {
            "name": "mtt", "syn_steps": 1, "expert_epochs": 2, "max_start_epoch": 1,
            "lr_img": 100.0, "lr_lr": 1e-5, "lr_teacher": 0.01, "batch_syn": None,
            "mode": args.mode, "buffer": buffer, "dsa": True,
        }  # fmt: skip
        dsa = DSA("color_crop_cutout_flip_scale_rotate")
        method = TrajectoryMatching(MethodContext(cfg, data, synthetic, factory, dsa, gens))
        method.step(0)  # warm-up: kernels, optimiser state, allocator
        method.syn_steps = args.steps
        if device.type == "cuda":
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        with PeakRSS() as rss:
            before = rss_bytes()
            loss = method.step(1)["loss"]
            float(loss)
        seconds = time.perf_counter() - started
        result = {"rss_peak_growth_mb": (rss.peak - before) / 2**20, "seconds": seconds}
        if device.type == "cuda":
            result["cuda_peak_growth_mb"] = (torch.cuda.max_memory_allocated() - base) / 2**20
        return result


def parent(args: argparse.Namespace) -> None:
    rows = []
    started = time.perf_counter()
    for mode in MODES:
        for steps in args.steps_list:
            runs = []
            for _ in range(args.repeats):
                cmd = [sys.executable, __file__, "--child", "--mode", mode]
                for flag in ("steps", "width", "ipc", "size", "device", "threads"):
                    value = steps if flag == "steps" else getattr(args, flag)
                    cmd += [f"--{flag}", str(value)]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                runs.append(json.loads(out.strip().splitlines()[-1]))
            rows.append((mode, steps, runs))
            print(f"  done {mode} syn_steps={steps}", file=sys.stderr, flush=True)
    print(
        f"MTT peak memory per iteration: ConvNet width {args.width}, {args.size}x{args.size}x3, "
        f"IPC {args.ipc} (batch {10 * args.ipc}), per-sample DSA; medians of {args.repeats} "
        "fresh processes"
    )
    info = {**machine(args.device), "threads": args.threads}
    print(machine_line(info))
    cuda = args.device.startswith("cuda")
    header = f"{'mode':<16} {'syn_steps':>9} {'RSS growth MB':>14} {'s/iteration':>12}"
    print(header + (f" {'CUDA peak MB':>13}" if cuda else ""))
    for mode, steps, runs in rows:
        rss = statistics.median(r["rss_peak_growth_mb"] for r in runs)
        secs = statistics.median(r["seconds"] for r in runs)
        line = f"{mode:<16} {steps:>9} {rss:>14.1f} {secs:>12.2f}"
        if cuda:
            line += f" {statistics.median(r['cuda_peak_growth_mb'] for r in runs):>13.1f}"
        print(line)
    print(f"total wall time {time.perf_counter() - started:.0f} s")
    save("mtt_memory", {"machine": info, "settings": vars(args), "rows": [
        {"mode": mode, "syn_steps": steps,
         "rss_peak_growth_mb_median": statistics.median(r["rss_peak_growth_mb"] for r in runs),
         "seconds_median": statistics.median(r["seconds"] for r in runs), "runs": runs}
        for mode, steps, runs in rows
    ]})  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--ipc", type=int, default=1)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps-list", type=int, nargs="+", default=[10, 20, 40])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
    else:
        parent(args)


if __name__ == "__main__":
    main()
