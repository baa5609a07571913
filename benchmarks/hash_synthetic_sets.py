"""Fingerprints of every synthetic_set.pt (and continual.csv) under a directory.

A refactor that must not change behaviour runs the same commands before and after and compares
these lines (`diff`): equal fingerprints mean bit-identical synthetic images and labels.

    python benchmarks/hash_synthetic_sets.py outputs/before > before.txt
    python benchmarks/hash_synthetic_sets.py --run outputs/fp_now > now.txt
    python benchmarks/hash_synthetic_sets.py --run outputs/fp_base --tree /tmp/base > base.txt

`--run DIR` first runs the fingerprint runs below (every method with and without its add-ons,
tiny digits settings, a few seconds each, one thread) into DIR; `--tree` runs them with another
checkout's distillkit first on the path (a `git worktree` of the commit to compare with; its
`distillkit/conf` must be a link to its `conf/`, as an editable install sees it).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import torch

TINY = (
    "dataset=digits", "dataset.image_size=8", "model.width=8", "method.iterations=3", "ipc=1",
    "eval.num_models=0", "unequalness.enabled=false", "images.flips=false", "progress=false",
    "device=cpu", "seed=0",
)  # fmt: skip
#: (name, overrides): every base method, FYI with each, IID with DM and IDM.
RUNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    *((f"{m}_{r}", (f"method={m}", f"regularizer={r}")) for m in ("dc", "dsa", "dm", "idm",
      "idc") for r in ("none", "fyi")),
    ("dm_cm", ("method=dm", "regularizer=cm")),
    ("idm_cm", ("method=idm", "regularizer=cm")),
    ("random", ("method=random",)),
    *((f"{m}_{r}", (f"method={m}", f"regularizer={r}", "method.syn_steps=2",
       "method.expert_epochs=1", "method.max_start_epoch=1", "method.buffer={buffer}_" + m))
      for m in ("mtt", "ftd") for r in ("none", "fyi")),
)  # fmt: skip
DISTIL = "from distillkit.cli.distill import main; main()"
EXPERTS = "from distillkit.cli.experts import main; main()"


def fingerprint(path: Path) -> str:
    saved = torch.load(path, map_location="cpu", weights_only=False)
    data = saved["images"].contiguous().numpy().tobytes() + saved["labels"].numpy().tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


def run_all(root: Path, tree: Path | None) -> None:
    """The fingerprint runs into `root` (experts for MTT/FTD first, shared by both trees when
    `root/buffers` already holds them)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    root = root.absolute()
    cwd = Path.cwd() if tree is None else tree.absolute()
    buffer = root.parent / "fingerprint_buffers"

    def call(code: str, args: list[str]) -> None:
        # -c puts the working directory first on the path: run in the tree compared with.
        done = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=cwd,
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode:
            last = (done.stderr.strip().splitlines() or ["?"])[-1]
            print(f"# failed ({done.returncode}): {' '.join(args)}: {last}", file=sys.stderr)

    for method, optimiser in (("mtt", "sgd"), ("ftd", "gsam")):
        target = buffer / f"b_{method}"
        if not any(target.glob("experts_*.pt")):
            where = [f"buffer_dir={target}", f"hydra.run.dir={buffer}/run_{method}"]
            call(EXPERTS, ["dataset=digits", "dataset.image_size=8", "model.width=8",
                           "num_experts=1", "epochs=2", f"optimizer={optimiser}", "progress=false",
                           *where])  # fmt: skip
    for name, overrides in RUNS:
        args = [o.replace("{buffer}", str(buffer / "b")) for o in overrides]
        call(DISTIL, [*TINY, *args, f"hydra.run.dir={root / name}"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--run", action="store_true", help="run the fingerprint runs into DIR")
    parser.add_argument("--tree", type=Path, help="another checkout's distillkit for --run")
    args = parser.parse_args(argv)
    root = args.dir
    if args.run:
        run_all(root, args.tree)
    for path in sorted(root.rglob("synthetic_set.pt")):
        print(path.relative_to(root).parent, fingerprint(path))
    for path in sorted(root.rglob("continual.csv")):
        print(path.relative_to(root).parent, hashlib.sha256(path.read_bytes()).hexdigest()[:16])


if __name__ == "__main__":
    main()
