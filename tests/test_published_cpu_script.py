"""experiments/published_cpu.sh: the command line of a published-budget cell, and a finished
cell's files published beside the others (its checkpoint copy removed), also when the same line
is re-run after the run finished."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "published_cpu.sh"

#: Stands in for distillkit: records its arguments and writes a finished run's files.
FAKE = """#!/usr/bin/env bash
set -e
for arg in "$@"; do case $arg in hydra.run.dir=*) dir=${arg#hydra.run.dir=};; esac; done
mkdir -p "$dir"
printf '%s\\n' "$@" > "$dir/argv"
echo '{"headline": {"mean": 30.0}}' > "$dir/results.json"
echo grid > "$dir/grid_final.png"
echo flips > "$dir/flips_final.png"
echo images > "$dir/synthetic_set.pt"
"""


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    fake = tmp_path / "fake_distillkit"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    env = {**os.environ, "DISTILLKIT": str(fake), "PUBLISHED_CPU_RUNS": str(tmp_path / "runs"),
           "PUBLISHED_CPU_RESULTS": str(tmp_path / "results")}  # fmt: skip
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True)


def test_a_finished_cell_is_published_and_its_checkpoint_copy_removed(tmp_path):
    (tmp_path / "results" / "in_progress").mkdir(parents=True)
    copy = tmp_path / "results" / "in_progress" / "cifar10_dsa_fyi_ipc1.pt"
    copy.write_bytes(b"checkpoint")
    done = run(tmp_path, "dsa", "fyi")
    assert done.returncode == 0, done.stderr
    argv = (tmp_path / "runs" / "cifar10_dsa_fyi_ipc1" / "argv").read_text().splitlines()
    assert {"method=dsa", "regularizer=fyi", "ipc=1", "eval.num_models=20",
            "dsa.always_flip=true", f"checkpoint.copy_to={copy}"} <= set(argv)  # fmt: skip
    results = tmp_path / "results"
    assert json.loads((results / "cifar10_dsa_fyi_ipc1.json").read_text())["headline"]["mean"] == 30
    assert (results / "cifar10_dsa_fyi_ipc1_grid.png").read_text() == "grid\n"
    assert (results / "cifar10_dsa_fyi_ipc1_flips.png").read_text() == "flips\n"
    assert (results / "cifar10_dsa_fyi_ipc1_synthetic_set.pt").read_text() == "images\n"
    assert not copy.exists()

    (results / "cifar10_dsa_fyi_ipc1.json").unlink()  # the same line again: publish only
    (tmp_path / "fake_distillkit").unlink()
    again = run(tmp_path, "dsa", "fyi")
    assert again.returncode == 0 and (results / "cifar10_dsa_fyi_ipc1.json").is_file()


def test_dm_gets_a_runtime_and_bad_arguments_are_refused(tmp_path):
    assert run(tmp_path, "dm", "none").returncode == 0
    argv = (tmp_path / "runs" / "cifar10_dm_ipc1" / "argv").read_text().splitlines()
    assert "runtime=fast" in argv or "runtime.compile=true" in argv
    refused = run(tmp_path, "mtt", "none")
    assert refused.returncode == 2 and "method must be dc, dsa or dm" in refused.stderr
