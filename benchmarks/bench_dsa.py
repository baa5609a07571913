"""DSA forward+backward on 256x3x32x32: distillkit's ops vs direct hand-written tensor code.

Per op family (per-sample parameters, one group per row) and for whole mode-"S" calls
(`DSA.__call__`: draw a family and its parameters, apply). The direct versions, kept here and not
in the library, compute the same maps with the plainest tensor code (the DSA reference's style:
`F.affine_grid` + `F.grid_sample` for scale and rotate, padding + gather for crop, a mask for
cutout, `torch.where` for flip, the colour formulas inline) from the same drawn parameters.
Each timing is forward + backward to the input (what distillation needs); variants are
interleaved, medians reported, ratio = distillkit / direct (target <= 1.2).

Run: .venv/bin/python benchmarks/bench_dsa.py [--repeats 15] [--quick]
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from _common import interleaved, machine, machine_line, medians, save, set_threads

from distillkit.allocator import use_allocator
from distillkit.augment import DSA, FAMILIES


def direct(family: str, x: torch.Tensor, p: dict[str, torch.Tensor], dsa: DSA) -> torch.Tensor:
    """The same op as distillkit's, hand-written."""
    n, _, h, w = x.shape
    if family == "color":
        x = x + (p["u_brightness"].view(n, 1, 1, 1) - 0.5) * dsa.brightness
        m = x.mean(dim=1, keepdim=True)
        x = (x - m) * (p["u_saturation"].view(n, 1, 1, 1) * dsa.saturation) + m
        m = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - m) * (p["u_contrast"].view(n, 1, 1, 1) + dsa.contrast) + m
    if family == "crop":
        r = int(dsa.crop_ratio * h + 0.5)
        padded = F.pad(x, [r, r, r, r])
        rows = (torch.arange(h) + r).view(1, h) - p["shift_y"].view(n, 1)
        cols = (torch.arange(w) + r).view(1, w) - p["shift_x"].view(n, 1)
        batch = torch.arange(n).view(n, 1, 1)
        return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(
            0, 3, 1, 2
        )
    if family == "cutout":
        sh, sw = int(dsa.cutout_ratio * h + 0.5), int(dsa.cutout_ratio * w + 0.5)
        top = (p["centre_y"] - sh // 2).view(n, 1, 1)
        left = (p["centre_x"] - sw // 2).view(n, 1, 1)
        yy = torch.arange(h).view(1, h, 1)
        xx = torch.arange(w).view(1, 1, w)
        cut = (yy >= top) & (yy < top + sh) & (xx >= left) & (xx < left + sw)
        return x * (~cut).unsqueeze(1).float()
    if family == "flip":
        return torch.where(p["flip"].view(n, 1, 1, 1), x.flip(3), x)
    if family in ("scale", "rotate"):
        theta = torch.zeros(n, 2, 3)
        if family == "scale":
            theta[:, 0, 0], theta[:, 1, 1] = p["sx"], p["sy"]
        else:
            a = p["angle_deg"] * (math.pi / 180.0)
            theta[:, 0, 0], theta[:, 0, 1] = torch.cos(a), torch.sin(-a)
            theta[:, 1, 0], theta[:, 1, 1] = torch.sin(a), torch.cos(a)
        grid = F.affine_grid(theta, list(x.shape), align_corners=True)
        return F.grid_sample(x, grid, align_corners=True)
    raise ValueError(family)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--calls", type=int, default=24, help="S-mode calls per timed round")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    set_threads(args.threads)
    use_allocator("auto")  # distillkit's default host allocator (runtime.allocator)
    if args.quick:
        args.repeats, args.calls = min(args.repeats, 9), min(args.calls, 12)
    info = machine("cpu")
    print(machine_line(info))
    n, s = args.batch, args.size
    print(f"DSA forward+backward on {n}x3x{s}x{s}, per-sample parameters; median of "
          f"{args.repeats} interleaved rounds; ratio = distillkit / direct")  # fmt: skip
    dsa = DSA("color_crop_cutout_flip_scale_rotate", mode="M")
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(n, 3, s, s, generator=g)

    def fwd_bwd(apply) -> None:
        x = x0.clone().requires_grad_(True)
        apply(x).square().mean().backward()

    rows = {}
    all_times = {}
    for family in FAMILIES:
        params = dsa.sample(n, g, (s, s))
        one = type(params)((family,), {family: params.values[family]}, n, (s, s), family)
        lib = dsa.apply(x0, one)
        ref = direct(family, x0, params.values[family], dsa)
        err = float((lib - ref).abs().max())
        times = interleaved(
            {
                "distillkit": lambda one=one: fwd_bwd(lambda x: dsa.apply(x, one)),
                "direct": lambda f=family, p=params.values[family]: fwd_bwd(
                    lambda x: direct(f, x, p, dsa)
                ),
            },
            args.repeats,
            warmup=2,
        )
        med = medians(times)
        rows[family] = {**med, "ratio": med["distillkit"] / med["direct"], "max_abs_diff": err}
        all_times[family] = times

    # Whole mode-S calls: the same family sequence and parameters for both (same seeds).
    s_dsa = DSA("color_crop_cutout_flip_scale_rotate", mode="S")

    def s_calls(lib: bool) -> None:
        gen = torch.Generator().manual_seed(1)
        for _ in range(args.calls):
            if lib:
                fwd_bwd(lambda x: s_dsa(x, gen))
            else:
                params = s_dsa.sample(n, gen, (s, s))
                fam = params.family
                fwd_bwd(lambda x, p=params, f=fam: direct(f, x, p.values[f], s_dsa))

    times = interleaved(
        {"distillkit": lambda: s_calls(True), "direct": lambda: s_calls(False)},
        args.repeats,
        warmup=1,
    )
    med = medians(times)
    rows["S-mode call"] = {
        "distillkit": med["distillkit"] / args.calls,
        "direct": med["direct"] / args.calls,
        "ratio": med["distillkit"] / med["direct"],
        "max_abs_diff": None,
    }
    all_times["S-mode call"] = times

    print(f"{'op':<14} {'distillkit ms':>14} {'direct ms':>10} {'ratio':>7} {'max |diff|':>11}")
    for name, r in rows.items():
        diff = "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.1e}"
        print(f"{name:<14} {1e3 * r['distillkit']:14.2f} {1e3 * r['direct']:10.2f} "
              f"{r['ratio']:7.2f} {diff:>11}")  # fmt: skip
    worst = max(rows, key=lambda k: rows[k]["ratio"])
    print(f"worst ratio: {worst} {rows[worst]['ratio']:.2f} (target <= 1.2)")
    print("(max |diff|: distillkit vs direct output; scale/rotate differ only in the sign "
          "convention of the angle / the 1/s zoom, same cost)")  # fmt: skip
    save("dsa", {"machine": info, "settings": vars(args), "ops": rows, "seconds_all": all_times})


if __name__ == "__main__":
    main()
