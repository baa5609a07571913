"""Seconds per DM step: distillkit's one-pass step vs the published per-class loop vs bare work.

CIFAR-shaped random data (3x32x32, 10 classes, `--real-per-class` images each; no download),
ConvNet width 128 depth 3, IPC 10, Siamese DSA (mode S), a fresh frozen network per step. Each
variant runs in its own fresh process (so each has its own host-allocator state and compile
cache), one after the other in rounds; after untimed warm-up steps (compilation, the heap
reaching its steady size) its steps are timed; medians over all timed steps:

- `reference`: the shape of the published DM code, kept here and not in the library: a Python
  loop over classes, per class one DSA draw applied to its real and its synthetic images, one
  forward of each, the squared distance of the means; eager float32.
- `dm`: distillkit's `DistributionMatching.step()` with the default runtime for the device
  (CPU: fp32 eager): all classes in one forward pass, row-wise Siamese DSA parameters.
- `dm-cl`: the same step with channels-last (fp32 eager).
- `dm-compiled`: the same step with `runtime.compile=true` (torch.compile of the network pass;
  compilation happens in the warm-up round and is reported separately).
- `dm-cl-compiled`: fp32, channels-last and compile.
- `dm-bf16-cl-compiled`: bf16 autocast + channels-last + compile, only where the CPU has native
  bf16 (AVX-512 BF16 / AMX) or on CUDA, or with `--all-precisions`.
- `reference-retain`: the same loop with distillkit's default host allocator (`runtime.allocator`
  auto = retain freed memory on glibc; distillkit/allocator.py), to separate what the allocator
  gives from what the one-pass step and compilation give. `reference` runs under glibc's own
  settings, as the published code does; every other variant under distillkit's default.
- `dm-system`: (`--variants ... dm-system`) `dm` under glibc's own malloc settings
  (`runtime.allocator=system`), to separate what the retained heap adds to its peak.
- `dm-baseline`: (`--baseline CHECKOUT`) `dm` importing distillkit from another checkout, for
  before/after numbers in one run.
- `bare`: the network work alone: forward of the real batch (no grad) + forward/backward of the
  synthetic batch, no DSA, no sampling, no optimiser, same fresh-network construction.

Peak memory is each process's peak resident size (`ru_maxrss`), printed with its ratio to
`reference`'s, and that peak above the process's resident size before its first step (Python,
torch, the data and the method: about 1 GB).

A second table times one ConvNet forward in fp32 / channels-last / bf16 (`--probe-images`) to
show what each precision costs on this machine (why `auto` picks what it picks).

Run: .venv/bin/python benchmarks/bench_dm.py [--repeats 5] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
from _common import (
    add_setting_arguments,
    interleaved,
    machine,
    machine_line,
    medians,
    save,
    set_threads,
    timed,
)

from distillkit.allocator import use_allocator
from distillkit.augment import DSA
from distillkit.classwise import class_means
from distillkit.data.real import DatasetInfo, RealData
from distillkit.methods import MethodContext, build_method
from distillkit.networks import NetworkFactory
from distillkit.runtime import Runtime, cpu_has_native_bf16
from distillkit.seeding import RunGenerators
from distillkit.synthetic import SyntheticSet


def fake_cifar(per_class: int, classes: int, generator: torch.Generator, device: str) -> RealData:
    info = DatasetInfo(
        "fake-cifar", 3, (32, 32), classes, tuple(map(str, range(classes))), (0.0,) * 3, (1.0,) * 3
    )
    labels = torch.arange(classes).repeat_interleave(per_class)
    images = torch.randn(labels.shape[0], 3, 32, 32, generator=generator)
    return RealData(
        info,
        images.to(device),
        labels.to(device),
        images[:classes].to(device),
        labels[:classes].to(device),
    )


class ReferenceDM:
    """The published per-class loop (eager float32), on the same data and synthetic set."""

    def __init__(self, data: RealData, synthetic: SyntheticSet, networks: NetworkFactory,
                 dsa: DSA, batch_real: int, generator: torch.Generator) -> None:  # fmt: skip
        self.data, self.networks, self.dsa = data, networks, dsa
        self.batch_real, self.generator = batch_real, generator
        self.k, self.ipc = synthetic.num_classes, synthetic.ipc
        self.images = synthetic.images.detach().clone().requires_grad_(True)
        self.optimiser = torch.optim.SGD([self.images], lr=1.0, momentum=0.5)
        self.labels = data.train_labels.cpu()
        self.indices = [torch.where(self.labels == c)[0] for c in range(self.k)]

    def get_images(self, c: int) -> torch.Tensor:
        idx = self.indices[c][torch.randperm(len(self.indices[c]), generator=self.generator)]
        return self.data.train_images[idx[: self.batch_real].to(self.data.device)]

    def step(self) -> torch.Tensor:
        net = self.networks.frozen(self.generator)
        net.train()
        loss = torch.zeros((), device=self.images.device)
        for c in range(self.k):
            img_real = self.get_images(c)
            img_syn = self.images[c * self.ipc : (c + 1) * self.ipc]
            params = self.dsa.sample(1, self.generator, (32, 32), img_real.device)
            groups_real = torch.zeros(img_real.shape[0], dtype=torch.long)
            groups_syn = torch.zeros(img_syn.shape[0], dtype=torch.long)
            img_real = self.dsa.apply(img_real, params, groups_real.to(img_real.device))
            img_syn = self.dsa.apply(img_syn, params, groups_syn.to(img_syn.device))
            output_real = net.embed(img_real).detach()
            output_syn = net.embed(img_syn)
            loss = loss + ((output_real.mean(0) - output_syn.mean(0)) ** 2).sum()
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.optimiser.step()
        return loss.detach()


def precision_probe(width: int, images: int, device: str, repeats: int) -> dict[str, float]:
    """Median seconds of one ConvNet-3 forward (no grad) per precision / memory format."""
    net = NetworkFactory("ConvNet", 3, 10, (32, 32), {"width": width}, device)(
        torch.Generator().manual_seed(0)
    )
    net.eval()
    x = torch.randn(images, 3, 32, 32, device=device)
    variants = {}
    for precision in ("fp32", "bf16"):
        for cl in (False, True):
            rt = Runtime(torch.device(device), precision, False, cl)
            model = rt.module(NetworkFactory("ConvNet", 3, 10, (32, 32), {"width": width},
                                             device)(torch.Generator().manual_seed(0)))  # fmt: skip
            xi = rt.input(x)

            def run(model=model, xi=xi, rt=rt) -> None:
                with torch.no_grad(), rt.autocast():
                    model.embed(xi)

            variants[f"{precision}{'-channels-last' if cl else ''}"] = run
    return medians(interleaved(variants, repeats, warmup=1, device=device))


#: Variant -> (runtime of distillkit's DM, host allocator). `reference` is the published loop as it
#: runs out of the box (glibc's own malloc settings); every other variant runs under distillkit's
#: default allocator (`runtime.allocator: auto`), so `reference-retain` / `dm` isolates the one-pass
#: step and `reference` / `reference-retain` the allocator.
VARIANTS = {
    "reference": (None, "system"),
    "reference-retain": (None, "auto"),
    "dm": ({"precision": "auto", "compile": "auto", "channels_last": "auto"}, "auto"),
    "dm-cl": ({"precision": "fp32", "compile": False, "channels_last": True}, "auto"),
    "dm-compiled": ({"precision": "fp32", "compile": True, "channels_last": False}, "auto"),
    "dm-cl-compiled": ({"precision": "fp32", "compile": True, "channels_last": True}, "auto"),
    "dm-bf16-cl-compiled": ({"precision": "bf16", "compile": True, "channels_last": True}, "auto"),
    "bare": (None, "auto"),
    "dm-system": ({"precision": "auto", "compile": "auto", "channels_last": "auto"}, "system"),
}


#: `--baseline CHECKOUT`: the default step with the library of another checkout (a worktree of an
#: earlier commit), in its own process beside the others, for before/after numbers in one run.
BASELINE = "dm-baseline"
#: Issue 25: the default DM step's peak RSS within this factor of the per-class loop's
#: (tests/test_chunking.py checks it at a small class-heavy shape).
PEAK_RSS_BOUND = 1.5


def build_variant(name: str, args: argparse.Namespace):
    """A zero-argument callable doing one step of variant `name` (data and nets built here)."""
    device, k, ipc = args.device, args.classes, args.ipc
    gens = RunGenerators(0)
    data = fake_cifar(args.real_per_class, k, gens["data"], device)
    networks = NetworkFactory(
        "ConvNet", 3, k, (32, 32), {"width": args.width, "depth": args.depth}, device
    )
    dsa = DSA("color_crop_cutout_flip_scale_rotate")
    synthetic = SyntheticSet.initialise(data, ipc, "real", RunGenerators(0)["init"])
    runtime = VARIANTS[name][0]
    if name.startswith("reference"):
        return ReferenceDM(data, synthetic, networks, dsa, args.real_per_class,
                           RunGenerators(1)["method/dm"]).step  # fmt: skip
    if name == "bare":
        real, real_labels = data.sample_per_class(args.real_per_class, gens["bench"])
        syn = synthetic.images.detach().clone().requires_grad_(True)
        bare_gen = RunGenerators(2)["bare"]

        def bare() -> None:
            net = networks.frozen(bare_gen)
            net.train()
            with torch.no_grad():
                real_means = class_means(net.embed(real), real_labels, k)
            syn_means = class_means(net.embed(syn), synthetic.labels, k)
            (real_means - syn_means).pow(2).sum().backward()

        return bare
    cfg = {"_target_": "distillkit.methods.dm.DistributionMatching", "name": "dm", "lr_img": 1.0,
           "momentum": 0.5, "batch_real": args.real_per_class, "dsa": True}  # fmt: skip
    method = build_method(
        MethodContext(cfg, data, synthetic, networks, dsa, RunGenerators(1), runtime=runtime)
    )
    counter = iter(range(10**9))

    def step() -> None:
        method.step(next(counter))
        fallback = getattr(method.embed, "compiled_fallback", None)
        if fallback is not None and fallback.get("eager"):
            raise SystemExit(f"{name}: torch.compile failed, the step ran eagerly")

    return step


def resident_mb() -> float:
    """The process's resident size now (VmRSS), in MB; its peak so far where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(name: str, args: argparse.Namespace) -> None:
    """Run one variant in this (fresh) process and print its timings as one JSON line."""
    set_threads(args.threads)
    allocator = use_allocator(VARIANTS[name][1])
    step = build_variant(name, args)
    baseline_mb = resident_mb()  # the process, its data and its method before any step
    started = time.perf_counter()
    step()  # includes torch.compile's compilation for the compiled variants
    first = time.perf_counter() - started
    for _ in range(args.warmup - 1):
        step()
    times, faults = [], []
    cpu = []
    for _ in range(args.steps):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        cpu_before = time.process_time()
        times.append(timed(step, args.device))
        cpu.append(time.process_time() - cpu_before)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"name": name, "allocator": allocator, "first_call": first,
                      "times": times, "cpu_times": cpu, "page_faults": faults,
                      "peak_rss_mb": peak_mb, "baseline_rss_mb": baseline_mb,
                      "step_peak_mb": peak_mb - baseline_mb}))  # fmt: skip


def run_child(name: str, args: argparse.Namespace) -> dict:
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
             if k in ("width", "depth", "ipc", "classes", "real_per_class", "device", "steps",
                      "warmup") or (k == "threads" and v is not None)]  # fmt: skip
    env = None
    if name == BASELINE:  # the dm variant with the distillkit package of another checkout
        name, path = "dm", os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [args.baseline, path]))}
    out = subprocess.run([sys.executable, __file__, "--child", name, *flags],
                         capture_output=True, text=True, env=env)  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"variant {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_setting_arguments(parser)
    parser.add_argument("--rounds", type=int, default=3, help="rounds over the variants")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per variant and round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (>= 1)")
    parser.add_argument("--probe-images", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled variants")
    parser.add_argument("--all-precisions", action="store_true",
                        help="also time bf16 where the CPU has no native bf16")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="1 round of 3 steps, smaller probe")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS),
                        help="time only these (reference, dm and bare always run)")  # fmt: skip
    parser.add_argument(
        "--baseline",
        metavar="CHECKOUT",
        help=f"also run `dm` importing distillkit from this checkout ({BASELINE})",
    )
    parser.add_argument("--out", default="dm_step", help="results/<OUT>.json (default dm_step)")
    parser.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.warmup = max(1, args.warmup)
    if args.child:
        child(args.child, args)
        return
    set_threads(args.threads)
    if args.quick:
        args.rounds, args.steps = 1, min(args.steps, 3)
        args.probe_images = min(args.probe_images, 64)
    device = args.device
    info = machine(device)
    print(machine_line(info))
    print(
        f"DM step: ConvNet width {args.width} depth {args.depth}, {args.classes} classes x "
        f"{args.real_per_class} real 3x32x32, IPC {args.ipc}, Siamese DSA (mode S). Each variant "
        f"in its own process ({args.warmup} untimed steps, then {args.steps} timed), "
        f"{args.rounds} round(s) over the variants; medians of all timed steps"
    )
    native_bf16 = device.startswith("cuda") or cpu_has_native_bf16()
    names = ["reference", "reference-retain", "dm", "dm-cl"]
    if not args.no_compile:
        names += ["dm-compiled", "dm-cl-compiled"]
        if native_bf16 or args.all_precisions:
            names.append("dm-bf16-cl-compiled")
    names.append("bare")
    if args.variants and "dm-system" in args.variants:
        names.insert(names.index("dm") + 1, "dm-system")
    if args.variants:
        names = [n for n in names if n in args.variants or n in ("reference", "bare", "dm")]
    if args.baseline:
        names.insert(names.index("dm"), BASELINE)
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(args.rounds):
        for name in names:
            result = run_child(name, args)
            runs[name].append(result)
            print(f"  round {r + 1}/{args.rounds} {name:<20} "
                  f"{' '.join(f'{t:.2f}' for t in result['times'])} s "
                  f"(first call {result['first_call']:.1f} s, page faults/step "
                  f"{statistics.median(result['page_faults']):.0f}, "
                  f"peak RSS {result['peak_rss_mb']:.0f} MB, "
                  f"{result['step_peak_mb']:.0f} MB above its start)", flush=True)  # fmt: skip
    times = {n: [t for run in runs[n] for t in run["times"]] for n in names}
    med = medians(times)
    warm = {n: statistics.median(run["first_call"] for run in runs[n]) for n in names}
    ref = med["reference"]
    print(f"{'variant':<22} {'allocator':>9} {'s/step':>8} {'reference/x':>12} {'x/bare':>8} "
          f"{'first call':>11}")  # fmt: skip
    for name, value in med.items():
        print(f"{name:<22} {runs[name][0]['allocator']:>9} {value:8.3f} {ref / value:12.2f} "
              f"{value / med['bare']:8.2f} {warm[name]:10.1f}s")  # fmt: skip
    best = min((n for n in med if n.startswith("dm") and n != BASELINE), key=med.get)
    print(f"speed-up of the default DM step over the per-class loop: {ref / med['dm']:.2f}x")
    print(f"speed-up of the fastest DM variant ({best}) over it:    {ref / med[best]:.2f}x "
          f"(target >= 2.5x)")  # fmt: skip
    retain = med.get("reference-retain", float("nan"))
    print(f"of which the allocator (the loop under distillkit's): {ref / retain:.2f}x; "
          f"the default step over that loop: {retain / med['dm']:.2f}x, {best}: "
          f"{retain / med[best]:.2f}x")  # fmt: skip

    peaks = {n: max(run["peak_rss_mb"] for run in runs[n]) for n in names}
    grown = {n: max(run["step_peak_mb"] for run in runs[n]) for n in names}
    print("peak RSS (MB; above the process before its first step):")
    for n in names:
        ratio, grown_ratio = peaks[n] / peaks["reference"], grown[n] / max(grown["reference"], 1)
        print(f"  {n:<22} {peaks[n]:8.0f} {ratio:6.2f}x reference "
              f"{grown[n]:8.0f} {grown_ratio:6.2f}x reference")  # fmt: skip
    print(f"peak RSS of the default DM step over the per-class loop: "
          f"{peaks['dm'] / peaks['reference']:.2f}x (target <= {PEAK_RSS_BOUND}x)")  # fmt: skip

    # CPU seconds (process time, all threads): robust to other work sharing the cores; on a
    # loaded machine with --threads 1 these ratios are the ones to read.
    cpu_med = medians({n: [t for run in runs[n] for t in run["cpu_times"]] for n in names})
    print("CPU seconds per step (process time):")
    for n, v in cpu_med.items():
        print(f"  {n:<22} {v:8.3f}  {cpu_med['reference'] / v:6.2f}x reference")

    probe_variants = "fp32, fp32-channels-last, bf16, bf16-channels-last"
    probe_repeats = max(1, args.steps // 2)
    print(f"ConvNet-{args.depth} width {args.width} forward of {args.probe_images} images "
          f"({probe_variants}), median of {probe_repeats}:")  # fmt: skip
    use_allocator("auto")
    probe = precision_probe(args.width, args.probe_images, device, probe_repeats)
    for name, value in probe.items():
        print(f"  {name:<20} {value:8.3f} s   {value / probe['fp32']:6.2f}x fp32")

    save(args.out, {
        "machine": info,
        "settings": {k2: v for k2, v in vars(args).items()},
        "seconds_median": med,
        "seconds_all": times,
        "cpu_seconds_median": cpu_med,
        "cpu_ratios": {f"reference_over_{n}": cpu_med["reference"] / v for n, v in cpu_med.items()},
        "first_call_seconds": warm,
        "allocator": {n: runs[n][0]["allocator"] for n in names},
        "page_faults_per_step_median": {
            n: statistics.median(f for run in runs[n] for f in run["page_faults"]) for n in names
        },
        "peak_rss_mb": peaks,
        "baseline_rss_mb": {n: min(run["baseline_rss_mb"] for run in runs[n]) for n in names},
        "step_peak_mb": grown,
        "peak_rss_ratios": {f"{n}_over_reference": peaks[n] / peaks["reference"] for n in names},
        "ratios": {
            "reference_over_dm_default": ref / med["dm"],
            f"reference_over_{best}": ref / med[best],
            "reference_over_reference_retain": ref / retain,
            "reference_retain_over_dm_default": retain / med["dm"],
            "dm_default_over_bare": med["dm"] / med["bare"],
            **{f"{n}_over_bare": med[n] / med["bare"] for n in names if n.startswith("dm-")},
        },
        "precision_probe_seconds": probe,
        "native_bf16": native_bf16,
    })  # fmt: skip


if __name__ == "__main__":
    main()
