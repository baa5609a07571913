"""Run every benchmark (`make bench`), each in a fresh process, then print the headline ratios.

Default: settings sized to finish in under 10 minutes on a 2-core CPU (the DM step at the
published setting, IPC 10 with 256 real images per class, is always measured). `--full` uses each
benchmark's own defaults (more rounds, 10-model evaluation; tens of minutes on a CPU).
`--only dm dsa` runs a subset. Results: benchmarks/results/*.json; see benchmarks/README.md.

Run: .venv/bin/python benchmarks/run_all.py [--full] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: name -> (script, quick arguments)
BENCHMARKS: dict[str, tuple[str, list[str]]] = {
    "dsa": ("bench_dsa.py", ["--quick"]),
    "dm": ("bench_dm.py", ["--quick"]),
    "eval": ("bench_eval.py", ["--quick", "--epochs", "2"]),
    "profile": ("profile_steps.py", ["--quick"]),
    "gradient_matching": (
        "bench_gradient_matching.py",
        ["--repeats", "1", "--real-per-class", "64"],
    ),
    "mtt_memory": ("bench_mtt_memory.py", ["--repeats", "1", "--steps-list", "10", "20"]),
    "scale": ("bench_scale.py", ["--quick", "--name", "scale_quick"]),
    "distributed": ("bench_distributed.py", ["--quick"]),
}


def headline() -> list[str]:
    """The ratios the issue asks for, read back from the result files."""
    lines = []
    results = HERE / "results"

    def load(name: str) -> dict | None:
        path = results / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else None

    if dm := load("dm_step"):
        med = dm["seconds_median"]
        best = min((n for n in med if n.startswith("dm")), key=med.get)
        lines.append(
            f"DM step: per-class eager fp32 loop {med['reference']:.2f} s, "
            f"default {med['dm']:.2f} s"
            f" ({med['reference'] / med['dm']:.2f}x faster), fastest {best} {med[best]:.2f} s "
            f"({med['reference'] / med[best]:.2f}x; target 2.5x); vs bare network work "
            f"{med['bare']:.2f} s: default {med['dm'] / med['bare']:.2f}x, "
            f"{best} {med[best] / med['bare']:.2f}x"
        )
        if "reference-retain" in med:
            lines.append(
                f"  the same loop under distillkit's allocator {med['reference-retain']:.2f} s "
                f"({med['reference'] / med['reference-retain']:.2f}x from the allocator alone)"
            )
    if dsa := load("dsa"):
        ops = dsa["ops"]
        ratios = ", ".join(f"{k} {v['ratio']:.2f}" for k, v in ops.items())
        lines.append(f"DSA distillkit/direct (target <= 1.2): {ratios}")
    if ev := load("eval"):
        parts = [
            f"{k}: {r['models_per_minute']['sequential']:.1f} -> "
            f"{r['models_per_minute']['stacked']:.1f} models/min ({r['speedup']:.2f}x, "
            f"max |d acc| {r['max_accuracy_difference']:.2f})"
            for k, r in ev["results"].items()
        ]
        lines.append("evaluation sequential -> stacked: " + "; ".join(parts))
    if gm := load("gradient_matching"):
        lines.append(f"DC outer iteration / bare work: {gm['step_over_bare']:.2f}")
    for name in ("scale", "scale_quick"):
        if scale := load(name):
            lines.append(f"{name}: " + "; ".join(scale_lines(scale)))
    if dist := load("distributed"):
        parts = [
            f"{c['method']} {c['classes']} classes x{c['ranks']}: step {c['step_vs_one']:.2f}x, "
            f"memory above start {c['above_start_vs_one']:.2f}x"
            for c in dist["cells"]
            if c["ranks"] > 1
        ]
        lines.append("distributed vs one process: " + "; ".join(parts))
    if prof := load("profile"):
        cats = list(prof["dm_step"]["categories_percent"].items())[:3]
        lines.append("DM step time: " + ", ".join(f"{k} {v}%" for k, v in cats))
    return lines


def cost(run: dict) -> float:
    """CPU seconds per step where recorded (bench_scale), else wall seconds."""
    return run.get("cpu_seconds", run["seconds"])


def scale_lines(scale: dict) -> list[str]:
    """distillkit vs the per-class loop at each class count: speed and peak-RSS ratios."""
    runs = {(r["method"], r["geometry"], r["classes"], r["impl"]): r for r in scale["runs"]}
    out = []
    for (method, geometry, classes, impl), dk in runs.items():
        ref = runs.get((method, geometry, classes, "reference"))
        if impl == "distillkit" and ref:
            out.append(f"{method} {geometry}px {classes} cl {cost(ref) / cost(dk):.2f}x "
                       f"speed, {dk['peak_rss_mb'] / ref['peak_rss_mb']:.2f}x RSS")  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="each benchmark's full defaults")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    args = parser.parse_args()
    started = time.perf_counter()
    failed = []
    for name in args.only:
        script, quick = BENCHMARKS[name]
        cmd = [sys.executable, str(HERE / script), *([] if args.full else quick)]
        print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        code = subprocess.call(cmd, cwd=HERE.parent)
        print(f"=== {name}: {time.perf_counter() - t0:.0f} s (exit {code})", flush=True)
        if code:
            failed.append(name)
    print("\n=== summary")
    for line in headline():
        print(f"- {line}")
    print(f"total {time.perf_counter() - started:.0f} s")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
