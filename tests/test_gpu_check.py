"""The GPU check script runs end to end on the CPU at a tiny size, from a CIFAR-10 subset it
writes itself in the official binary layout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_prepare_writes_a_loadable_subset(shared_data, tmp_path):
    sys.path.insert(0, str(SCRIPT.parent))
    from gpu_check import prepare

    from distillkit.data import load_dataset

    prepare(shared_data, tmp_path, 12, 3)
    data = load_dataset("cifar10", root=tmp_path)
    assert data.train_images.shape == (120, 3, 32, 32)
    assert data.test_images.shape[0] == 30
    assert data.class_counts().tolist() == [12] * 10


@pytest.mark.slow
def test_tiny_gpu_check_runs_on_the_cpu(shared_data, tmp_path):
    sys.path.insert(0, str(SCRIPT.parent))
    from gpu_check import prepare

    prepare(shared_data, tmp_path / "data", 30, 10)
    out = tmp_path / "check.json"
    cmd = [sys.executable, str(SCRIPT), "--tiny", f"--data={tmp_path / 'data'}", f"--out={out}"]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=900)
    report = json.loads(out.read_text())
    assert report["cuda_tests"] == {"skipped": "device cpu"}
    for preset in ("fp32", "bf16", "fast"):
        run = report["dm"][preset]
        assert "error" not in run, run
        assert 0 <= run["accuracy"]["mean"] <= 100 and run["s_per_iteration"] > 0
    assert report["eval"]["stacked"]["models_per_minute"] > 0
    assert report["mtt"]["exit"] == 0 and report["mtt"]["rows"]
    assert report["distributed"]["exit"] == 0, report["distributed"]
    cells = report["distributed"]["cells"]
    assert {(c["method"], c["ranks"]) for c in cells} == {
        (m, n) for m in ("dm", "dc") for n in (1, 2)
    }


def test_an_unprepared_subset_stops_in_one_line_naming_the_prepare_command(tmp_path):
    cmd = [sys.executable, str(SCRIPT), "--tiny", f"--data={tmp_path / 'none'}", "--stages", "dm"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "gpu_check.py --prepare" in lines[0]
    assert not (tmp_path / "none").exists()
