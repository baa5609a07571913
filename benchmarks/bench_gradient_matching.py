"""Seconds per DC outer iteration on CIFAR-shaped data, against the bare network work it needs.

Random tensors shaped like CIFAR-10 (3x32x32, 10 classes, `--real-per-class` images each; no
download), a ConvNet (width 128, depth 3 by default), IPC 10. Prints medians of:
- one `step()` (one outer iteration) with `--outer-loop`/`--inner-loop` (reduced from the published
  (10, 50) so it finishes on a CPU), and the bare forward+backward passes of the same work timed
  side by side: per round and class one plain pass (ordinary parameter gradients) over its real
  rows and one over its synthetic rows, plus the inner-loop training passes;
- the parts (a matching round, an inner epoch) and from them the published-loop outer iteration;
- per-class gradients by a Python loop of backward passes vs. one vmap (torch.func) pass, for the
  real side (no graph) and the synthetic side (graph kept, then backward to the images).

Run: .venv/bin/python benchmarks/bench_gradient_matching.py [--width 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
import torch.nn.functional as F
from _common import add_setting_arguments, machine, machine_line, median_time, save

from distillkit.allocator import use_allocator
from distillkit.data.real import DatasetInfo, RealData
from distillkit.methods import MethodContext, build_method
from distillkit.methods.gradient_matching import class_gradients, matched_parameters
from distillkit.networks import NetworkFactory
from distillkit.seeding import RunGenerators
from distillkit.synthetic import SyntheticSet


def fake_cifar(per_class: int, classes: int, generator: torch.Generator) -> RealData:
    info = DatasetInfo(
        "fake-cifar", 3, (32, 32), classes, tuple(map(str, range(classes))), (0.0,) * 3, (1.0,) * 3
    )
    labels = torch.arange(classes).repeat_interleave(per_class)
    images = torch.randn(labels.shape[0], 3, 32, 32, generator=generator)
    return RealData(info, images, labels, images[:classes], labels[:classes].clone())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_setting_arguments(parser)
    parser.add_argument("--outer-loop", type=int, default=2)
    parser.add_argument("--inner-loop", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    use_allocator("auto")  # distillkit's default host allocator (runtime.allocator)

    k, ipc = args.classes, args.ipc
    gens = RunGenerators(0)
    data = fake_cifar(args.real_per_class, k, gens["data"])
    synthetic = SyntheticSet.initialise(data, ipc, "real", gens["init"])
    networks = NetworkFactory("ConvNet", 3, k, (32, 32), {"width": args.width, "depth": args.depth})
    cfg = {
        "_target_": "distillkit.methods.gradient_matching.DatasetCondensation",
        "name": "dc",
        "lr_img": 0.1,
        "momentum": 0.5,
        "lr_net": 0.01,
        "batch_real": args.real_per_class,
        "batch_train": 256,
        "outer_loop": args.outer_loop,
        "inner_loop": args.inner_loop,
        "real_gradients": "loop",
        "syn_gradients": "vmap",
    }
    method = build_method(MethodContext(cfg, data, synthetic, networks, None, gens))
    info = machine("cpu")
    print(machine_line(info))
    print(
        f"ConvNet width {args.width} depth {args.depth}, {k} classes x {args.real_per_class} real "
        f"3x32x32, IPC {ipc}, outer_loop {args.outer_loop}, inner_loop {args.inner_loop}, "
        f"median of {args.repeats}"
    )

    # -- bare network work of one outer iteration --------------------------------------------------
    real, real_labels = data.sample_per_class(args.real_per_class, gens["bench"])
    syn_x, syn_y = synthetic.training_set()
    net = networks(gens["net"])
    net.train()

    def pass_(x: torch.Tensor, y: torch.Tensor) -> None:
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()

    real_rows = real.reshape(k, -1, *real.shape[1:])  # class-contiguous
    syn_rows = syn_x.reshape(k, -1, *syn_x.shape[1:])
    classes = torch.arange(k)

    def bare_round() -> None:
        """The round's network work without matching: per class one plain forward+backward on
        its real rows and one on its synthetic rows (the reference's per-class passes)."""
        for c in range(k):
            pass_(real_rows[c], classes[c].expand(real_rows.shape[1]))
            pass_(syn_rows[c], classes[c].expand(syn_rows.shape[1]))

    def bare_epoch() -> None:
        for start in range(0, syn_x.shape[0], 256):
            pass_(syn_x[start : start + 256], syn_y[start : start + 256])

    def bare_step() -> None:
        for r in range(args.outer_loop):
            bare_round()
            if r < args.outer_loop - 1:
                for _ in range(args.inner_loop):
                    bare_epoch()

    def inner_epoch() -> None:
        method.train_network(net, torch.optim.SGD(net.parameters(), lr=0.01))

    counter = iter(range(10**9))
    step_s, bare_s, epoch_s = [], [], []
    for _ in range(args.repeats):  # interleaved, so load changes hit both alike
        step_s.append(median_time(lambda: method.step(next(counter)), 1))
        bare_s.append(median_time(bare_step, 1))
        epoch_s.append(median_time(inner_epoch, 1) / max(method.inner_loop, 1))
    step, bare, epoch = (statistics.median(t) for t in (step_s, bare_s, epoch_s))
    print(f"outer iteration (step):           {step:8.3f} s")
    print(f"bare forward+backward, same work: {bare:8.3f} s   ratio {step / bare:.2f}")
    inner_total = (args.outer_loop - 1) * args.inner_loop * epoch
    round_s = (step - inner_total) / args.outer_loop
    published = 10 * round_s + 9 * 50 * epoch
    print(f"  of which: matching round {round_s:.3f} s, inner epoch {epoch:.4f} s")
    print(f"published IPC-10 loops (10, 50), estimated: {published:.1f} s per outer iteration")
    results = {
        "machine": info,
        "settings": vars(args),
        "step_s": step,
        "bare_s": bare,
        "step_over_bare": step / bare,
        "round_s": round_s,
        "inner_epoch_s": epoch,
        "published_loops_estimate_s": published,
        "per_class_gradients": {},
    }

    # -- per-class gradients: loop vs vmap -----------------------------------------------------
    net.eval()
    syn = synthetic.images

    def real_side(mode: str) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad():
                return class_gradients(net, real, real_labels, k, mode=mode)

        return run

    def syn_side(mode: str) -> Callable[[], object]:
        def run() -> None:
            grads = class_gradients(net, syn, synthetic.labels, k, create_graph=True, mode=mode)
            sum(g.square().sum() for g in grads).backward(inputs=[syn])

        return run

    a = real_side("loop")()
    b = real_side("vmap")()
    err = max(float((x - y).abs().max() / x.abs().max()) for x, y in zip(a, b, strict=True))
    print(
        f"per-class gradients ({len(matched_parameters(net))} tensors): "
        f"max |loop - vmap| / max |loop| = {err:.1e}"
    )
    for side, make in (("real (no graph)", real_side), ("synthetic (graph + backward)", syn_side)):
        loop_s, vmap_s = [], []
        # The synthetic side is cheap and noisy: more repeats, interleaved.
        for _ in range(args.repeats * (1 if make is real_side else 3)):
            loop_s.append(median_time(make("loop"), 1))
            vmap_s.append(median_time(make("vmap"), 1))
        lo, vm = statistics.median(loop_s), statistics.median(vmap_s)
        print(f"  {side:30s} loop {lo:8.3f} s   vmap {vm:8.3f} s   loop/vmap {lo / vm:.2f}")
        entry = {"loop_s": lo, "vmap_s": vm, "loop_over_vmap": lo / vm}
        results["per_class_gradients"][side] = entry
    results["per_class_gradients"]["max_rel_difference"] = err
    save("gradient_matching", results)


if __name__ == "__main__":
    main()
