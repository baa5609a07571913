"""The GPU check: one script for one lent GPU (~10 minutes on an H200), or a tiny CPU run.

Stages, each in its own process, results in `benchmarks/results/gpu_check.json` (or
`gpu_check_tiny.json` with `--tiny`), the machine included:

1. `cuda_tests`: the tests that exercise CUDA paths (runtime, stacked evaluation, DSA, chunking).
2. `dm`: DM on CIFAR-10, IPC 10 (ConvNet-3 width 128, 256 real images per class, Siamese DSA),
   `--iterations` iterations in fp32 (the default, TF32 convolutions), bf16 (autocast only) and
   the fast preset (`runtime=fast`: bf16 + channels-last + torch.compile): s/iteration, peak GPU
   memory, and accuracy with 5 models x 300 epochs.
3. `eval`: evaluation throughput, models per minute, sequential vs stacked (10 ConvNet-3 models).
4. `mtt`: MTT's peak GPU memory, unrolled vs constant-memory (benchmarks/bench_mtt_memory.py).
5. `distributed`: DM and DC over NCCL (benchmarks/bench_distributed.py): one rank that joins a
   process group, so every collective of the class split runs, and N ranks where N GPUs are
   visible; step time and per-rank peak memory.

Data: a CIFAR-10 subset in the official binary layout (uint8, 1,000 training images per class
and 500 test images per class, about 46 MB) written by `--prepare` from ../shared/data into the
git-ignored `.gpu_data/`; carry it (and `.whl/`, the wheels the device image lacks: see
benchmarks/README.md, "GPU check") to the device. Accuracies on this subset are below the
published full-data numbers; they compare the presets with one another.

The fast preset first runs 5 untimed iterations, so its timed run finds torch.compile's cache
warm (the cold compile is reported as `fast_warmup`). `--tiny` runs the fast preset without
compile (a cold compile alone takes minutes on 2 CPU cores).

Run:  python benchmarks/gpu_check.py --prepare        (here, once)
      python benchmarks/gpu_check.py                  (on the GPU machine)
      python benchmarks/gpu_check.py --tiny           (CPU, seconds: checks the script itself)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = ROOT / ".gpu_data"
SOURCE = ROOT.parent / "shared" / "data"
PRESETS = {
    "fp32": [],
    "bf16": ["runtime.precision=bf16"],
    "fast": ["runtime=fast"],
}


# -- data ------------------------------------------------------------------------------------------
def prepare(source: Path, target: Path, train_per_class: int, test_per_class: int) -> None:
    """Write the first `train_per_class` / `test_per_class` images of every class in CIFAR-10's
    binary layout (five training batch files, one test file), uint8 as shipped."""
    import numpy as np

    src = source / "cifar-10-batches-bin"
    out = target / "cifar-10-batches-bin"
    out.mkdir(parents=True, exist_ok=True)
    record = 1 + 3 * 32 * 32

    def pick(files: list[Path], per_class: int) -> np.ndarray:
        rows = np.concatenate([np.fromfile(f, dtype=np.uint8).reshape(-1, record) for f in files])
        keep = np.concatenate([np.flatnonzero(rows[:, 0] == c)[:per_class] for c in range(10)])
        return rows[np.sort(keep)]

    train = pick([src / f"data_batch_{i}.bin" for i in range(1, 6)], train_per_class)
    for i, part in enumerate(np.array_split(train, 5), start=1):
        part.tofile(out / f"data_batch_{i}.bin")
    pick([src / "test_batch.bin"], test_per_class).tofile(out / "test_batch.bin")
    if (src / "batches.meta.txt").exists():
        (out / "batches.meta.txt").write_text((src / "batches.meta.txt").read_text())
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(f"wrote {out} ({size:.1f} MiB)")


# -- stage children --------------------------------------------------------------------------------
def dm_child(args: argparse.Namespace) -> dict:
    """One DM run with the given overrides, in this process; timings and peak GPU memory."""
    import torch
    from hydra import compose, initialize_config_module

    from distillkit.cli._args import quote_numeric_group_choices
    from distillkit.trainer import Trainer

    overrides = quote_numeric_group_choices(json.loads(args.overrides))
    with initialize_config_module(config_module="distillkit.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    run_dir = Path(args.run_dir)
    started = time.perf_counter()
    results = Trainer(cfg, run_dir).run()
    cuda = torch.cuda.is_available() and args.device == "cuda"
    return {
        "wall_s": time.perf_counter() - started,
        "s_per_iteration": results["timings"]["s_per_iteration"],
        "distil_s": results["timings"]["distil_s"],
        "eval_s": results["timings"]["eval_s"],
        "accuracy": results["headline"],
        "peak_gpu_memory_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
    }


def eval_child(args: argparse.Namespace) -> dict:
    """Models per minute, sequential vs stacked, on a CIFAR-shaped random set."""
    import torch

    from distillkit.augment import DSA
    from distillkit.evaluation import EvalSettings, train_and_test
    from distillkit.evaluation.stacked import train_and_test_stacked
    from distillkit.networks import NetworkFactory

    device, m = args.device, args.eval_models
    size, width = (8, 8) if args.tiny else (32, 128)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(100, 3, size, size, generator=g).to(device)
    labels = torch.arange(10).repeat_interleave(10).to(device)
    test_x = torch.randn(1000, 3, size, size, generator=g).to(device)
    test_y = torch.randint(0, 10, (1000,), generator=g).to(device)
    factory = NetworkFactory("ConvNet", 3, 10, (size, size), {"width": width}, device)
    settings = EvalSettings(epochs=args.eval_epochs)
    data = (images, labels, test_x, test_y, settings, DSA("color_crop_cutout_flip_scale_rotate"))
    out = {}
    for name in ("sequential", "stacked"):
        gen = torch.Generator().manual_seed(1)
        _sync(device)
        t0 = time.perf_counter()
        if name == "stacked":
            accs = train_and_test_stacked(factory, *data, gen, m)
        else:
            accs = [train_and_test(factory, *data, gen) for _ in range(m)]
        _sync(device)
        seconds = time.perf_counter() - t0
        out[name] = {"seconds": seconds, "models_per_minute": 60 * m / seconds,
                     "accuracies": list(accs)}  # fmt: skip
    out["speedup"] = out["sequential"]["seconds"] / out["stacked"]["seconds"]
    return out


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


# -- the parent ------------------------------------------------------------------------------------
def run(cmd: list[str], timeout: float) -> tuple[int, str, str]:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired as exc:
        return 124, str(exc.stdout or "")[-2000:], "timed out"
    return out.returncode, out.stdout, out.stderr


def child(args: argparse.Namespace, stage: str, timeout: float, **extra: str) -> dict:
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in extra.items()]
    common = [f"--device={args.device}", f"--eval-models={args.eval_models}",
              f"--eval-epochs={args.eval_epochs}"] + (["--tiny"] if args.tiny else [])  # fmt: skip
    code, out, err = run([sys.executable, __file__, f"--child={stage}", *common, *flags], timeout)
    if code != 0:
        return {"error": f"exit {code}", "stderr": err[-2000:]}
    return json.loads(out.strip().splitlines()[-1])


def dm_overrides(args: argparse.Namespace, preset: str) -> list[str]:
    if args.tiny:
        base = ["dataset=cifar10", f"dataset.root={args.data}", "dataset.train_limit=20",
                "dataset.test_limit=10", "model.width=8", "ipc=1", "method=dm",
                "method.iterations=2", "++method.batch_real=8", "eval.num_models=1",
                "eval.epochs=2"]  # fmt: skip
    else:
        base = ["dataset=cifar10", f"dataset.root={args.data}", "method=dm", "ipc=10",
                f"method.iterations={args.iterations}", "eval.num_models=5",
                "eval.epochs=300"]  # fmt: skip
    common = ["seed=0", f"device={args.device}", "checkpoint.every=0", "unequalness.enabled=false",
              "progress=false"]  # fmt: skip
    extra = ["runtime.compile=false"] if args.tiny and preset == "fast" else []
    return base + common + PRESETS[preset] + extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepare", action="store_true", help="write the CIFAR-10 subset")
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--tiny", action="store_true", help="CPU, tiny sizes: checks the script")
    parser.add_argument("--device", default=None)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--eval-models", type=int, default=10)
    parser.add_argument("--eval-epochs", type=int, default=300)
    parser.add_argument(
        "--stages", nargs="+", default=["cuda_tests", "dm", "eval", "mtt", "distributed"]
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--overrides", help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        prepare(args.source, args.data, 1000, 500)
        return
    if args.tiny:
        args.device = args.device or "cpu"
        args.eval_models, args.eval_epochs = min(args.eval_models, 2), min(args.eval_epochs, 2)
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if not args.child and "dm" in args.stages:
        if not (Path(args.data) / "cifar-10-batches-bin").is_dir():
            raise SystemExit(
                f"gpu_check: no CIFAR-10 subset under {args.data}; write it first with "
                "`python benchmarks/gpu_check.py --prepare` (from ../shared/data)"
            )
    if args.child:
        result = dm_child(args) if args.child == "dm" else eval_child(args)
        print(json.dumps(result))
        return
    sys.path.insert(0, str(HERE))
    from _common import machine, machine_line

    info = machine(args.device)
    print(machine_line(info), flush=True)
    report: dict = {"machine": info, "settings": {k: str(v) for k, v in vars(args).items()}}
    out_path = args.out or HERE / "results" / f"gpu_check{'_tiny' if args.tiny else ''}.json"
    started = time.perf_counter()

    def save() -> None:
        report["seconds_total"] = time.perf_counter() - started
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(report, indent=2) + "\n")

    if "cuda_tests" in args.stages:
        if args.device.startswith("cuda"):
            tests = ["tests/test_runtime.py", "tests/test_stacked_eval.py", "tests/test_dsa.py",
                     "tests/test_chunking.py"]  # fmt: skip
            code, out, err = run([sys.executable, "-m", "pytest", "-q", "-m", "slow or not slow",
                                  *tests], timeout=240)  # fmt: skip
            summary = (out.strip().splitlines() or [err])[-1]
            report["cuda_tests"] = {"exit": code, "summary": summary}
        else:
            report["cuda_tests"] = {"skipped": f"device {args.device}"}
        print(f"cuda_tests: {report['cuda_tests']}", flush=True)
        save()
    if "dm" in args.stages:
        report["dm"] = {}
        for preset in PRESETS:
            if preset == "fast" and not args.tiny:  # fill the inductor cache: compile untimed
                warm = [o for o in dm_overrides(args, preset) if not o.startswith("method.iter")]
                warm += ["method.iterations=5", "eval.num_models=0"]
                warm_dir = ROOT / "outputs" / "gpu_check" / "fast_warmup"
                shutil.rmtree(warm_dir, ignore_errors=True)
                report["dm"]["fast_warmup"] = child(args, "dm", 600, overrides=json.dumps(warm),
                                                    run_dir=str(warm_dir))  # fmt: skip
            run_dir = ROOT / "outputs" / "gpu_check" / preset
            shutil.rmtree(run_dir, ignore_errors=True)
            result = child(args, "dm", 600, overrides=json.dumps(dm_overrides(args, preset)),
                           run_dir=str(run_dir))  # fmt: skip
            report["dm"][preset] = result
            print(f"dm {preset}: {result}", flush=True)
            save()
    if "eval" in args.stages:
        report["eval"] = child(args, "eval", 600)
        print(f"eval: {report['eval']}", flush=True)
        save()
    if "mtt" in args.stages:
        mtt_file = HERE / "results" / "mtt_memory.json"
        kept = mtt_file.read_text() if mtt_file.exists() else None
        sizes = ["--width=8", "--size=8", "--steps-list", "2", "4"] if args.tiny else [
            "--steps-list", "10", "20", "40"]  # fmt: skip
        code, out, err = run([sys.executable, str(HERE / "bench_mtt_memory.py"), "--repeats=1",
                              f"--device={args.device}", *sizes], timeout=600)  # fmt: skip
        report["mtt"] = {"exit": code, "table": out.strip().splitlines()[-12:]}
        if code == 0 and mtt_file.exists():
            report["mtt"]["rows"] = json.loads(mtt_file.read_text())["rows"]
        if kept is not None:  # the committed CPU measurement stays as it was
            mtt_file.write_text(kept)
        if code != 0:
            report["mtt"]["stderr"] = err[-2000:]
        print(f"mtt: exit {code}", flush=True)
        save()
    if "distributed" in args.stages:
        # NCCL with one rank that joins a group (every collective of the split runs), then N
        # ranks wherever more GPUs are visible; DM and DC at 10 and 100 classes.
        import torch

        gpus = torch.cuda.device_count() if args.device.startswith("cuda") else 0
        ranks = ["1"] + ([str(gpus)] if gpus > 1 else []) if gpus else ["1", "2"]
        device = "cuda" if gpus else "cpu"
        sizes = ["--quick", "--classes", "10"] if args.tiny else ["--classes", "10", "100"]
        name = f"distributed_gpu{'_tiny' if args.tiny else ''}"
        code, out, err = run([sys.executable, str(HERE / "bench_distributed.py"), *sizes,
                              f"--device={device}", "--ranks", *ranks, "--join-single",
                              "--name", name], timeout=600)  # fmt: skip
        report["distributed"] = {"exit": code, "table": out.strip().splitlines()[-12:]}
        written = HERE / "results" / f"{name}.json"
        if code == 0 and written.exists():
            cells = json.loads(written.read_text())["cells"]
            report["distributed"]["cells"] = [
                {k: v for k, v in c.items() if k != "records"} for c in cells
            ]
            if args.tiny:  # a check of the script, not a measurement to keep
                written.unlink()
        if code != 0:
            report["distributed"]["stderr"] = err[-2000:]
        print(f"distributed: exit {code}", flush=True)
        save()
    print(f"results: {out_path}")


if __name__ == "__main__":
    main()
