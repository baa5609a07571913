"""`make reproduce-table`: launch, skip what is done, resume what was killed, render; launchers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distillkit.tables.reproduce import main

#: Three cells on digits (smoke scale: tiny budgets, one thread), one row failing on purpose.
TINY_TABLE = """
title: Tiny smoke table
datasets: [digits]
ipcs: [1, 2]
rows:
  - {name: dm, label: DM, method: dm}
  - {name: rnd, label: random, method: random}
published:
  dm: {digits: {1: 90.0±1.0}}
"""


def write_table(folder: Path, body: str = TINY_TABLE, name: str = "tiny") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(body)
    return folder


def args(tmp_path: Path, *extra: str, table: str = "tiny") -> list[str]:
    return [
        f"table={table}",
        "scale=smoke",
        f"results={tmp_path / 'results'}",
        f"tables={tmp_path / 'tables'}",
        *extra,
    ]


def launches(tmp_path: Path, table: str = "tiny") -> list[list[str]]:
    log = tmp_path / "results" / table / "smoke" / "launched.jsonl"
    if not log.exists():
        return []
    return [json.loads(line)["jobs"] for line in log.read_text().splitlines()]


def test_rerun_does_no_work_and_a_lost_cell_is_the_only_one_rerun(tmp_path):
    write_table(tmp_path / "tables")
    assert main(args(tmp_path)) == 0
    root = tmp_path / "results" / "tiny" / "smoke"
    expected = [f"{row}/digits_ipc{ipc}/seed0" for row in ("dm", "rnd") for ipc in (1, 2)]
    assert sorted(launches(tmp_path)[0]) == expected
    md = (tmp_path / "results" / "tiny.md").read_text()
    cells = md.split("## digits")[1]
    assert "missing" not in cells and "failed" not in cells
    assert "| 90.0 ± 1.0 |" in md  # the paper's number beside ours
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("results.json")}

    assert main(args(tmp_path)) == 0
    assert len(launches(tmp_path)) == 1  # nothing left to do: nothing launched

    lost = root / "dm/digits_ipc2/seed0/results.json"  # as if its job had been killed
    lost.unlink()
    assert main(args(tmp_path)) == 0
    assert launches(tmp_path)[-1] == ["dm/digits_ipc2/seed0"]
    for path, stamp in stamps.items():
        if path != lost:
            assert path.stat().st_mtime_ns == stamp
    assert lost.exists()


def test_failed_jobs_are_marked_and_the_command_fails(tmp_path):
    body = TINY_TABLE.replace("method: random}", "method: random, overrides: [eval.lr=-1]}")
    write_table(tmp_path / "tables", body)
    assert main(args(tmp_path)) == 1
    md = (tmp_path / "results" / "tiny.md").read_text()
    assert "| random | failed (ConfigError) |" in md
    rows = (tmp_path / "results" / "tiny.csv").read_text().splitlines()
    assert sum(",failed," in r for r in rows) == 2


def test_unknown_table_is_one_line(tmp_path, capsys):
    write_table(tmp_path / "tables")
    assert main(args(tmp_path, table="nope")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "available: tiny" in err


def test_table_is_logged_to_wandb_in_the_tables_group(tmp_path):
    write_table(tmp_path / "tables", TINY_TABLE.replace("ipcs: [1, 2]", "ipcs: [1]"))
    assert main(args(tmp_path, "logger=wandb")) == 0
    root = tmp_path / "results" / "tiny" / "smoke"
    runs = list((root / "_table" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and (root / "_table" / "table_tiny.csv").exists()
    job = json.loads((root / "dm/digits_ipc1/seed0/results.json").read_text())
    assert job["config"]["logger"]["wandb"]["group"] == "tiny"
    assert list((root / "dm/digits_ipc1/seed0/wandb").glob("offline-run-*"))


FIGURE_TABLE = """
title: U of real digits
kind: figure
command: unequalness
series:
  - {name: digits, dataset: digits}
  - {name: cifar10, dataset: cifar10}
"""


def test_figure_table_renders_each_series_and_marks_missing_ones(tmp_path):
    write_table(tmp_path / "tables", FIGURE_TABLE, name="fig")
    series = tmp_path / "results" / "fig" / "smoke" / "digits"
    series.mkdir(parents=True)
    (series / "unequalness.csv").write_text(
        "size,distance,mean,std,repeats\n1,dm,63.1,1.5,2\n10,dm,33.8,0.5,2\n"
    )
    assert main(args(tmp_path, "render_only=true", table="fig")) == 1  # one series missing
    md = (tmp_path / "results" / "fig.md").read_text()
    assert "| dm | 63.1 ± 1.5 | 33.8 ± 0.5 |" in md
    assert "missing (not run yet)" in md.split("## cifar10")[1]
    assert "`digits` was substituted for CIFAR-10" in md


@pytest.mark.slow
def test_figure_table_runs_the_unequalness_command(tmp_path):
    body = FIGURE_TABLE.replace("  - {name: cifar10, dataset: cifar10}\n", "")
    write_table(tmp_path / "tables", body, name="fig")
    assert main(args(tmp_path, "sizes=[1,5]", table="fig")) == 0
    results = tmp_path / "results"
    assert (results / "fig_digits.png").exists()
    md = (results / "fig.md").read_text()
    assert "| dm | " in md and "size 5" in md and "missing" not in md


def run_launcher(tmp_path: Path, launcher: str) -> None:
    write_table(tmp_path / "tables", TINY_TABLE.replace("ipcs: [1, 2]", "ipcs: [1]"))
    extra = ["jobs=2"] if launcher == "joblib" else []
    assert main(args(tmp_path, f"launcher={launcher}", *extra)) == 0
    root = tmp_path / "results" / "tiny" / "smoke"
    assert len(list(root.rglob("results.json"))) == 2
    assert (root / "multirun.yaml").exists()


@pytest.mark.slow
def test_joblib_launcher(tmp_path):
    run_launcher(tmp_path, "joblib")


@pytest.mark.slow
def test_submitit_local_launcher(tmp_path):
    run_launcher(tmp_path, "submitit_local")
    assert list((tmp_path / "results" / "tiny" / "smoke" / ".submitit").iterdir())


@pytest.mark.slow
def test_killed_table_resumes_only_the_missing_cells(tmp_path):
    body = TINY_TABLE.replace("ipcs: [1, 2]", "ipcs: [1, 2, 3]")
    write_table(tmp_path / "tables", body)
    command = [sys.executable, "-m", "distillkit.tables.reproduce", *args(tmp_path)]
    root = tmp_path / "results" / "tiny" / "smoke"
    proc = subprocess.Popen(
        command, cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while not list(root.rglob("results.json")) and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {str(p.parent.relative_to(root)) for p in root.rglob("results.json")}
    assert 1 <= len(done) < 6
    out = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert sorted(launches(tmp_path)[-1]) == sorted(set(launches(tmp_path)[0]) - done)
    assert len(list(root.rglob("results.json"))) == 6


def test_each_running_job_holds_its_own_gpu(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from distillkit.tables.launch import GPU_LOCKS_ENV, GPU_SLOTS_ENV, gpu_slot

    monkeypatch.setenv(GPU_SLOTS_ENV, "2")
    monkeypatch.setenv(GPU_LOCKS_ENV, str(tmp_path / "locks"))
    first, second = OmegaConf.create({"device": "auto"}), OmegaConf.create({"device": "auto"})
    with gpu_slot(first) as a, gpu_slot(second) as b:
        assert (a, b) == (0, 1) and (first.device, second.device) == ("cuda:0", "cuda:1")
    third = OmegaConf.create({"device": "auto"})
    with gpu_slot(third) as c:  # both released: the first GPU again
        assert c == 0 and third.device == "cuda:0"
