"""Memory and time against the number of classes: distillkit vs the per-class reference loop.

For DM, IDM, DC and the unequalness score, at 10, 100 and 200 classes, in two geometries
(3x32x32 through ConvNet-3 and 3x64x64 through ConvNet-4 with fewer real images per class),
one step of distillkit's default (runtime auto: fp32 eager, `memory_budget` auto) beside the
shape of the published per-class loop, eager fp32, on the same random data (generated here: no
download). Every (method, geometry, classes, implementation) runs in its own fresh process, so
its peak resident size (ru_maxrss) is its own; both sides run under distillkit's default host
allocator (`runtime.allocator` auto). Time is the step's CPU seconds (process time, one torch
thread by default): unlike wall time it does not count other work sharing the cores, so the
ratios hold on a loaded machine (the wall seconds are recorded too). A step is:

- dm: one DM iteration (a fresh frozen network, Siamese DSA, one optimiser step). Reference: the
  published loop (per class: DSA draw, real forward with graph then detach, synthetic forward,
  squared distance of the means; one backward of the sum).
- idm: one matching pass of IDM (one optimiser step per class, CE term; the queue's own training
  is switched off to time the matching). Reference: the per-class loop with the real forward
  under a graph that is then detached, as published.
- dc: one outer iteration with one round (per-class real gradients, synthetic gradients with a
  graph, the distance, one backward). Reference: the published per-class loop.
- unequalness: the dm and dc distances of the real set against its flip, one network. Reference:
  one class at a time.

Results: benchmarks/results/scale.json (with the machine and its CPU flags) and scale.png.

Run: .venv/bin/python benchmarks/bench_scale.py [--quick] [--classes 10 100 200]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import RESULTS, machine, machine_line, save, set_threads, timed
from omegaconf import OmegaConf

from distillkit.allocator import use_allocator
from distillkit.augment import DSA
from distillkit.data.real import DatasetInfo, RealData
from distillkit.memory import parse_budget
from distillkit.methods import MethodContext, build_method
from distillkit.methods.gradient_matching import gradient_distance, matched_parameters
from distillkit.networks import NetworkFactory
from distillkit.seeding import RunGenerators
from distillkit.synthetic import SyntheticSet

METHODS = ("dm", "idm", "dc", "unequalness")
#: geometry -> (image size, ConvNet depth, real images per class)
GEOMETRIES = {"32": (32, 3, 32), "64": (64, 4, 8)}
TARGETS = {
    "dm": "distillkit.methods.dm.DistributionMatching",
    "idm": "distillkit.methods.idm.ImprovedDistributionMatching",
    "dc": "distillkit.methods.gradient_matching.DatasetCondensation",
}
STRATEGY = "color_crop_cutout_flip_scale_rotate"
CONF = Path(__file__).resolve().parents[1] / "conf"


def fake_data(classes: int, per_class: int, size: int) -> RealData:
    info = DatasetInfo("fake", 3, (size, size), classes, tuple(map(str, range(classes))),
                       (0.0,) * 3, (1.0,) * 3)  # fmt: skip
    labels = torch.arange(classes).repeat_interleave(per_class)
    images = torch.randn(len(labels), 3, size, size, generator=torch.Generator().manual_seed(0))
    return RealData(info, images, labels, images[:classes], labels[:classes])


# -- the per-class reference loops (the published code's shape; kept here, not in the library) --
def reference_dm(data, syn, networks, dsa, gen, ipc, idm: bool = False):
    images = syn.images.detach().clone().requires_grad_(True)
    opt = torch.optim.SGD([images], lr=1.0, momentum=0.5)
    k, size = data.info.num_classes, data.info.image_size

    def step() -> None:
        net = networks.frozen(gen)
        net.train()
        loss = images.new_zeros(())
        for c in range(k):
            real = data.sample_class(c, data.class_counts()[c].item(), gen)
            s = images[c * ipc : (c + 1) * ipc]
            params = dsa.sample(1, gen, size, real.device)
            real = dsa.apply(real, params, torch.zeros(len(real), dtype=torch.long))
            s = dsa.apply(s, params, torch.zeros(len(s), dtype=torch.long))
            out_real = net.embed(real).detach()
            out_syn = net.embed(s)
            term = (out_real.mean(0) - out_syn.mean(0)).pow(2).sum()
            if idm:  # one optimiser step per class, with the CE term
                term = term + 0.5 * F.cross_entropy(net.classifier(out_syn),
                                                    torch.full((ipc,), c))  # fmt: skip
                opt.zero_grad(set_to_none=True)
                term.backward()
                opt.step()
            else:
                loss = loss + term
        if not idm:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return step


def reference_dc(data, syn, networks, dsa, gen, ipc):
    images = syn.images.detach().clone().requires_grad_(True)
    opt = torch.optim.SGD([images], lr=0.1, momentum=0.5)
    k = data.info.num_classes

    def step() -> None:
        net = networks(gen)
        net.train()
        params = list(matched_parameters(net).values())
        loss = images.new_zeros(())
        for c in range(k):
            real = data.sample_class(c, data.class_counts()[c].item(), gen)
            target = torch.full((len(real),), c)
            g_real = torch.autograd.grad(F.cross_entropy(net(real), target), params)
            g_real = [g.detach() for g in g_real]
            s = images[c * ipc : (c + 1) * ipc]
            g_syn = torch.autograd.grad(F.cross_entropy(net(s), target[:ipc]), params,
                                        create_graph=True)  # fmt: skip
            loss = loss + gradient_distance(g_syn, g_real)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def reference_unequalness(data, networks, gen):
    from kornia.geometry.transform import hflip

    k = data.info.num_classes

    def step() -> None:
        net = networks(gen)
        net.train()
        params = [p for p in net.parameters() if p.requires_grad]
        for c in range(k):
            x = data.sample_class(c, data.class_counts()[c].item(), gen)
            with torch.no_grad():
                (net.embed(x).mean(0) - net.embed(hflip(x)).mean(0)).pow(2).sum()
            target = torch.full((len(x),), c)
            g = torch.autograd.grad(F.cross_entropy(net(x), target), params)
            g_flip = torch.autograd.grad(F.cross_entropy(net(hflip(x)), target), params)
            gradient_distance(g, g_flip)

    return step


# -- distillkit ------------------------------------------------------------------------------------
def distillkit_step(method, data, syn, networks, dsa, gens, per_class, budget=None):
    if method == "unequalness":
        from distillkit.metrics.unequalness import unequalness

        images, labels = data.train_images, data.train_labels
        gen = gens["u"]
        limit = None if budget is None else parse_budget(budget)
        return lambda: unequalness(images, labels, data.info.num_classes, networks, gen,
                                   ["dm", "dc"], num_nets=1, memory_budget=limit)  # fmt: skip
    # The method's shipped defaults (conf/method/<name>.yaml), as a user gets them.
    shipped = OmegaConf.to_container(OmegaConf.load(CONF / "method" / f"{method}.yaml"))
    cfg = {**shipped, "_target_": TARGETS[method], "name": method, "batch_real": per_class,
           "dsa": True}  # fmt: skip
    if method == "idm":
        cfg.update(net_num=1, initial_nets=1, nets_trained_per_iteration=0, model_train_steps=0,
                   net_generate_interval=10**6)  # fmt: skip
    if method == "dc":
        cfg.update(outer_loop=1, inner_loop=0)
    augment = None if method == "dc" else dsa  # DC proper (the reference loop has no DSA)
    runtime = {} if budget is None else {"memory_budget": budget}
    m = build_method(MethodContext(cfg, data, syn, networks, augment, gens, runtime=runtime))
    counter = iter(range(1, 10**9))
    return lambda: m.step(next(counter))


def child(args: argparse.Namespace) -> None:
    set_threads(args.threads)
    use_allocator("auto")
    RESULTS.mkdir(exist_ok=True)
    size, depth, per_class = GEOMETRIES[args.geometry]
    k = args.classes
    data = fake_data(k, per_class, size)
    gens = RunGenerators(0)
    factor = 2 if args.method == "idm" else 1
    syn = SyntheticSet.initialise(data, args.ipc, "real", gens["init"], factor=factor)
    networks = NetworkFactory("ConvNet", 3, k, (size, size),
                              {"width": args.width, "depth": depth})  # fmt: skip
    dsa = DSA(STRATEGY)
    gen = RunGenerators(1)["reference"]
    if args.impl == "reference":
        if args.method in ("dm", "idm"):
            ipc = args.ipc * factor * factor
            syn_view = SyntheticSet.initialise(data, ipc, "real", gens["init"])
            step = reference_dm(data, syn_view, networks, dsa, gen, ipc, args.method == "idm")
        elif args.method == "dc":
            step = reference_dc(data, syn, networks, dsa, gen, args.ipc)
        else:
            step = reference_unequalness(data, networks, gen)
    else:
        step = distillkit_step(args.method, data, syn, networks, dsa, gens, per_class, args.budget)
    step()  # warm-up
    times, cpu = [], []
    for _ in range(args.steps):
        started = time.process_time()
        times.append(timed(step))
        cpu.append(time.process_time() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # CPU seconds (all threads of this process): what a step costs when other work shares the
    # cores; equal to the wall time on a quiet machine with one thread.
    print(json.dumps({"seconds": statistics.median(times), "times": times,
                      "cpu_seconds": statistics.median(cpu), "peak_rss_mb": peak}))  # fmt: skip


def run_child(args: argparse.Namespace, method: str, geometry: str, classes: int, impl: str):
    flags = [f"--method={method}", f"--geometry={geometry}", f"--classes={classes}",
             f"--impl={impl}", f"--steps={args.steps}", f"--ipc={args.ipc}",
             f"--width={args.width}"]  # fmt: skip
    flags += [f"--threads={args.threads}"] if args.threads else []
    flags += [f"--budget={args.budget}"] if args.budget else []
    out = subprocess.run([sys.executable, __file__, "--child", *flags], capture_output=True,
                         text=True)  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"{method} {geometry} {classes} {impl} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def cost(run: dict) -> float:
    """A step's CPU seconds (robust to other work sharing the cores); wall seconds for runs
    recorded before CPU time was."""
    return run.get("cpu_seconds", run["seconds"])


def plot(results: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    geometries = sorted({r["geometry"] for r in results["runs"]})
    fig, axes = plt.subplots(2, len(geometries), figsize=(6 * len(geometries), 8), squeeze=False)
    for col, geometry in enumerate(geometries):
        for method in METHODS:
            for impl, style in (("distillkit", "-"), ("reference", "--")):
                rows = sorted((r for r in results["runs"] if r["geometry"] == geometry
                               and r["method"] == method and r["impl"] == impl),
                              key=lambda r: r["classes"])  # fmt: skip
                if not rows:
                    continue
                xs = [r["classes"] for r in rows]
                label = f"{method} {impl}"
                axes[0][col].plot(xs, [r["peak_rss_mb"] for r in rows], style, marker="o",
                                  label=label)  # fmt: skip
                axes[1][col].plot(xs, [cost(r) for r in rows], style, marker="o",
                                  label=label)  # fmt: skip
        size, depth, per_class = GEOMETRIES[geometry]
        name = f"{size}x{size} ConvNet-{depth}, {per_class} real/class"
        axes[0][col].set(title=f"peak RSS, {name}", xlabel="classes", ylabel="MB")
        axes[1][col].set(title=f"CPU time per step, {name}", xlabel="classes", ylabel="CPU s/step")
        for ax in (axes[0][col], axes[1][col]):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def markdown(results: dict) -> str:
    """The results as a Markdown table: both sides and their ratios per row."""
    runs = {(r["method"], r["geometry"], r["classes"], r["impl"]): r for r in results["runs"]}
    lines = ["| method | images | classes | reference CPU s/step | distillkit CPU s/step | "
             "speed-up | reference peak RSS MB | distillkit peak RSS MB | RSS ratio |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for (method, geometry, classes, impl), dk in runs.items():
        ref = runs.get((method, geometry, classes, "reference"))
        if impl != "distillkit" or ref is None:
            continue
        lines.append(f"| {method} | {geometry}×{geometry} | {classes} | {cost(ref):.2f} | "
                     f"{cost(dk):.2f} | {cost(ref) / cost(dk):.2f}× | "
                     f"{ref['peak_rss_mb']:.0f} | {dk['peak_rss_mb']:.0f} | "
                     f"{dk['peak_rss_mb'] / ref['peak_rss_mb']:.2f}× |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--geometries", nargs="+", choices=list(GEOMETRIES),
                        default=list(GEOMETRIES))  # fmt: skip
    parser.add_argument("--classes", nargs="+", type=int, default=[10, 100, 200])
    parser.add_argument("--steps", type=int, default=1, help="timed steps after one warm-up")
    parser.add_argument("--ipc", type=int, default=1)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per process (1: no oversubscription)")  # fmt: skip
    parser.add_argument("--budget", help="distillkit's runtime.memory_budget (default: auto)")
    parser.add_argument("--quick", action="store_true",
                        help="10 and 50 classes, 32x32 only")  # fmt: skip
    parser.add_argument("--name", default="scale", help="results/<name>.json and .png")
    parser.add_argument("--merge", nargs="+", metavar="NAME",
                        help="join results/<NAME>.json into --name (JSON and plot)")  # fmt: skip
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--geometry", help=argparse.SUPPRESS)
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.classes = args.classes[0]
        child(args)
        return
    if args.merge:
        parts = [json.loads((RESULTS / f"{n}.json").read_text()) for n in args.merge]
        merged = {**parts[0], "runs": [r for p in parts for r in p["runs"]],
                  "merged_from": args.merge}  # fmt: skip
        save(args.name, merged)
        plot(merged, RESULTS / f"{args.name}.png")
        print(markdown(merged))
        return
    if args.quick:
        args.classes, args.geometries = [10, 50], ["32"]
    info = machine("cpu")
    print(machine_line(info))
    started = time.perf_counter()
    runs = []
    for geometry in args.geometries:
        for method in args.methods:
            for classes in args.classes:
                pair = {}
                for impl in ("reference", "distillkit"):
                    r = run_child(args, method, geometry, classes, impl)
                    pair[impl] = r
                    runs.append({"method": method, "geometry": geometry, "classes": classes,
                                 "impl": impl, **r})  # fmt: skip
                ref, dk = pair["reference"], pair["distillkit"]
                print(f"{geometry}x{geometry} {method:<12} {classes:>4} classes: reference "
                      f"{cost(ref):7.2f} s {ref['peak_rss_mb']:7.0f} MB | distillkit "
                      f"{cost(dk):7.2f} s {dk['peak_rss_mb']:7.0f} MB | speed "
                      f"{cost(ref) / cost(dk):5.2f}x, RSS "
                      f"{dk['peak_rss_mb'] / ref['peak_rss_mb']:4.2f}x", flush=True)  # fmt: skip
                partial = {"machine": info, "runs": runs, "partial": True}
                (RESULTS / f"{args.name}.partial.json").write_text(json.dumps(partial))
    (RESULTS / f"{args.name}.partial.json").unlink(missing_ok=True)
    results = {
        "machine": info,
        "settings": {
            k: v for k, v in vars(args).items() if k not in ("child", "method", "geometry", "impl")
        },  # fmt: skip
        "geometries": {
            g: dict(zip(("image_size", "depth", "real_per_class"), v, strict=True))
            for g, v in GEOMETRIES.items()
        },  # fmt: skip
        "runs": runs,
        "seconds_total": time.perf_counter() - started,
    }
    save(args.name, results)
    plot(results, RESULTS / f"{args.name}.png")
    print(f"plot: benchmarks/results/{args.name}.png; total {results['seconds_total']:.0f} s")
    print(markdown(results))


if __name__ == "__main__":
    main()
