"""Seconds per DM step: distillkit's one-pass step vs the published per-class loop vs bare work.

CIFAR-shaped random data (3x32x32, 10 classes, `--real-per-class` images each; no download),
ConvNet width 128 depth 3, IPC 10, Siamese DSA (mode S), a fresh frozen network per step. Timed
side by side (interleaved rounds, medians):

- `reference`: the shape of the published DM code, kept here and not in the library: a Python
  loop over classes, per class one DSA draw applied to its real and its synthetic images, one
  forward of each, the squared distance of the means; eager float32.
- `dm`: distillkit's `DistributionMatching.step()` with the default runtime for the device
  (CPU: fp32 eager): all classes in one forward pass, row-wise Siamese DSA parameters.
- `dm-compiled`: the same step with `runtime.compile=true` (torch.compile of the network pass;
  compilation happens in the warm-up round and is reported separately).
- `dm-bf16-cl-compiled`: bf16 autocast + channels-last + compile, only where the CPU has native
  bf16 (AVX-512 BF16 / AMX) or on CUDA, or with `--all-precisions`.
- `bare`: the network work alone: forward of the real batch (no grad) + forward/backward of the
  synthetic batch, no DSA, no sampling, no optimiser, same fresh-network construction.

A second table times one ConvNet forward in fp32 / channels-last / bf16 (`--probe-images`) to
show what each precision costs on this machine (why `auto` picks what it picks).

Run: .venv/bin/python benchmarks/bench_dm.py [--repeats 5] [--quick]
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import interleaved, machine, machine_line, medians, save, set_threads

from distillkit.augment import DSA
from distillkit.data.real import DatasetInfo, RealData
from distillkit.methods import MethodContext, build_method
from distillkit.methods.base import class_means
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--real-per-class", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--probe-images", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled variants")
    parser.add_argument("--all-precisions", action="store_true",
                        help="also time bf16 where the CPU has no native bf16")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="3 rounds, smaller probe")
    args = parser.parse_args()
    set_threads(args.threads)
    if args.quick:
        args.repeats, args.probe_images = min(args.repeats, 3), min(args.probe_images, 64)
    device, k, ipc = args.device, args.classes, args.ipc
    info = machine(device)
    print(machine_line(info))
    print(
        f"DM step: ConvNet width {args.width} depth {args.depth}, {k} classes x "
        f"{args.real_per_class} real 3x32x32, IPC {ipc}, Siamese DSA (mode S); "
        f"median of {args.repeats} interleaved rounds"
    )

    gens = RunGenerators(0)
    data = fake_cifar(args.real_per_class, k, gens["data"], device)
    networks = NetworkFactory(
        "ConvNet", 3, k, (32, 32), {"width": args.width, "depth": args.depth}, device
    )
    dsa = DSA("color_crop_cutout_flip_scale_rotate")
    native_bf16 = device.startswith("cuda") or cpu_has_native_bf16()

    def dm(runtime: dict) -> object:
        synthetic = SyntheticSet.initialise(data, ipc, "real", RunGenerators(0)["init"])
        cfg = {"name": "dm", "lr_img": 1.0, "momentum": 0.5,
               "batch_real": args.real_per_class, "dsa": True, "runtime": runtime}  # fmt: skip
        ctx = MethodContext(cfg, data, synthetic, networks, dsa, RunGenerators(1))
        return build_method("dm", ctx)

    methods = {"dm": dm({"precision": "auto", "compile": "auto", "channels_last": "auto"})}
    if not args.no_compile:
        methods["dm-compiled"] = dm({"precision": "fp32", "compile": True,
                                     "channels_last": False})  # fmt: skip
        if native_bf16 or args.all_precisions:
            methods["dm-bf16-cl-compiled"] = dm(
                {"precision": "bf16", "compile": True, "channels_last": True}
            )
    synthetic = SyntheticSet.initialise(data, ipc, "real", RunGenerators(0)["init"])
    reference = ReferenceDM(data, synthetic, networks, dsa, args.real_per_class,
                            RunGenerators(1)["method/dm"])  # fmt: skip

    real, real_labels = data.sample_per_class(args.real_per_class, gens["bench"])
    syn = synthetic.images.detach().clone().requires_grad_(True)
    syn_labels = synthetic.labels
    bare_gen = RunGenerators(2)["bare"]

    def bare() -> None:
        net = networks.frozen(bare_gen)
        net.train()
        with torch.no_grad():
            real_means = class_means(net.embed(real), real_labels, k)
        syn_means = class_means(net.embed(syn), syn_labels, k)
        (real_means - syn_means).pow(2).sum().backward()

    counters = {name: iter(range(10**9)) for name in methods}
    variants = {"reference": reference.step}
    for name, method in methods.items():
        variants[name] = lambda m=method, c=counters[name]: m.step(next(c))
    variants["bare"] = bare

    # Warm-up round, timed separately: it includes torch.compile's compilation.
    warm = {}
    for name, fn in variants.items():
        started = time.perf_counter()
        fn()
        warm[name] = time.perf_counter() - started
    times = interleaved(variants, args.repeats, warmup=0, device=device, verbose=True)
    med = medians(times)
    ref = med["reference"]
    print(f"{'variant':<22} {'s/step':>8} {'reference/x':>12} {'x/bare':>8} {'first call':>11}")
    for name, value in med.items():
        print(f"{name:<22} {value:8.3f} {ref / value:12.2f} {value / med['bare']:8.2f} "
              f"{warm[name]:10.1f}s")  # fmt: skip
    best = min((n for n in med if n.startswith("dm")), key=med.get)
    print(f"speed-up of the default DM step over the per-class loop: {ref / med['dm']:.2f}x")
    print(f"speed-up of the fastest DM variant ({best}) over it:    {ref / med[best]:.2f}x "
          f"(target >= 2.5x)")  # fmt: skip
    for name in methods:
        fallback = getattr(methods[name].embed, "compiled_fallback", None)
        if fallback is not None and fallback.get("eager"):
            print(f"note: {name} fell back to eager (compilation failed)")

    probe_variants = "fp32, fp32-channels-last, bf16, bf16-channels-last"
    print(f"ConvNet-{args.depth} width {args.width} forward of {args.probe_images} images "
          f"({probe_variants}), median of {max(1, args.repeats // 2)}:")  # fmt: skip
    probe = precision_probe(args.width, args.probe_images, device, max(1, args.repeats // 2))
    for name, value in probe.items():
        print(f"  {name:<20} {value:8.3f} s   {value / probe['fp32']:6.2f}x fp32")

    save("dm_step", {
        "machine": info,
        "settings": {k2: v for k2, v in vars(args).items()},
        "seconds_median": med,
        "seconds_all": times,
        "first_call_seconds": warm,
        "ratios": {
            "reference_over_dm_default": ref / med["dm"],
            f"reference_over_{best}": ref / med[best],
            "dm_default_over_bare": med["dm"] / med["bare"],
            **{f"{n}_over_bare": med[n] / med["bare"] for n in methods if n != "dm"},
        },
        "precision_probe_seconds": probe,
        "native_bf16": native_bf16,
    })  # fmt: skip


if __name__ == "__main__":
    main()
