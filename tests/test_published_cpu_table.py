"""experiments/published_cpu_table.py: the README's published-budget table from the cells' files
(finished results.json copies and the checkpoint copies of cells under way)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "published_cpu_table.py"


def load_script():
    spec = importlib.util.spec_from_file_location("published_cpu_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def finished(runs: list[float], cpu_s: float | None) -> dict:
    mean = sum(runs) / len(runs)
    std = (sum((r - mean) ** 2 for r in runs) / (len(runs) - 1)) ** 0.5
    return {
        "iterations": 1000,
        "headline": {"model": "ConvNet", "mean": mean, "std": std, "n": len(runs)},
        "accuracy": {"ConvNet": {"mean": mean, "std": std, "runs": runs, "n": len(runs)}},
        "unequalness": {"dm": 40.0, "dc": 110.0, "dsa": 100.0},
        "timings": {"distil_s": 7200.0, "eval_s": 360.0, "cpu_s": cpu_s, "cpu_from_iteration": 0,
                    "eval_cpu_s": None if cpu_s is None else 360.0},
    }  # fmt: skip


def test_rows_of_finished_running_and_missing_cells(tmp_path):
    (tmp_path / "in_progress").mkdir()
    (tmp_path / "cifar10_dc_ipc1.json").write_text(json.dumps(finished([28.0, 29.0, 30.0], None)))
    (tmp_path / "cifar10_dc_fyi_ipc1.json").write_text(
        json.dumps(finished([31.0, 30.0, 32.0], 3240.0))
    )
    torch.save(
        {"iteration": 250, "distil_s": 1800.0}, tmp_path / "in_progress" / "cifar10_dsa_ipc1.pt"
    )
    rows = {line.split(" | ")[0]: line for line in load_script().table(tmp_path).splitlines()}

    dc = rows["| DC"]
    assert "| 28.3 ± 0.5 |" in dc  # the published number, from experiments/tables/fyi.yaml
    assert "**29.00 ± 1.00** (28.00–30.00)" in dc and "**31.00 ± 1.00** (30.00–32.00)" in dc
    # Quadrature of the stds; s.e. sqrt(1/3 + 1/3); model by model the differences are 3, 1, 2.
    assert "+2.00 ± 1.41 (s.e. 0.82; paired +2.00 ± 1.00, FYI ahead in 3 / 3)" in dc
    assert "40.0 / 110.0 / 100.0; 40.0 / 110.0 / 100.0" in dc
    assert "2.10 wall; 1.00 CPU" in dc  # wall without CPU time; (3240 + 360) s of CPU
    dsa = rows["| DSA"]
    assert "running (250 / 1,000)" in dsa and "not started" in dsa
    assert "250 / 1,000 (running); 0 / 1,000" in dsa and "0.50 wall so far" in dsa
    assert "0 / 20,000; 0 / 20,000" in rows["| DM"]


def evaluation(runs: list[float]) -> dict:
    """A distillkit-eval output file's shape (its ConvNet accuracy)."""
    mean = sum(runs) / len(runs)
    std = (sum((r - mean) ** 2 for r in runs) / (len(runs) - 1)) ** 0.5
    return {"accuracy": {"ConvNet": {"mean": mean, "std": std, "runs": runs, "n": len(runs)}}}


def test_diagnostics_prefers_the_redistilled_dc_set_and_pairs_each_protocol(tmp_path):
    (tmp_path / "diagnostics").mkdir()
    (tmp_path / "rerun").mkdir()
    (tmp_path / "cifar10_dc_ipc1.json").write_text(json.dumps(finished([20.0, 21.0, 22.0], None)))
    (tmp_path / "rerun" / "cifar10_dc_ipc1.json").write_text(
        json.dumps(finished([27.0, 28.0, 29.0], None))
    )
    (tmp_path / "cifar10_dc_fyi_ipc1.json").write_text(
        json.dumps(finished([24.0, 25.0, 26.0], None))
    )
    for cell, runs in (
        ("cifar10_dc_ipc1", [28.0, 29.0, 30.0]),
        ("cifar10_dc_fyi_ipc1", [33.0, 31.0, 32.0]),
    ):
        (tmp_path / "diagnostics" / f"{cell}_flip_aug.json").write_text(
            json.dumps(evaluation(runs))
        )
    (tmp_path / "diagnostics" / "cifar10_dc_fyi_ipc1_with_flips.json").write_text(
        json.dumps(evaluation([30.0, 30.0, 30.0]))
    )
    lines = load_script().diagnostics(tmp_path).splitlines()[2:]

    published, flip_aug, with_flips, both = lines
    # The re-distilled DC set (rerun/) is the one the diagnostics evaluate, not the first run's.
    assert (
        "| 28.00 ± 1.00 | 25.00 ± 1.00 "
        "| -3.00 ± 1.41 (s.e. 0.82; paired -3.00 ± 0.00, FYI ahead in 0 / 3) |" in published
    )
    # Model by model 5, 2, 2: mean 3, std sqrt(3).
    assert (
        "| 29.00 ± 1.00 | 32.00 ± 1.00 "
        "| +3.00 ± 1.41 (s.e. 0.82; paired +3.00 ± 1.73, FYI ahead in 3 / 3) |" in flip_aug
    )
    assert with_flips.endswith("| – | 30.00 ± 0.00 | – |")  # DC's evaluation not run yet
    assert both.endswith("| – | – | – |")
