"""The analysis commands: real-data unequalness curve and CAM frequency maps, as typed."""

from __future__ import annotations

import csv
import json

from helpers import run_command as command


def test_unequalness_command_writes_csv_and_plot(tmp_path):
    out = command(
        "unequalness",
        "dataset.image_size=8",
        "model.width=8",
        "sizes=[1,2,50]",
        "distances=[dm,dc]",
        "num_nets=1",
        "repeats=2",
        "progress=false",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader((tmp_path / "unequalness.csv").open()))
    assert {(r["distance"], r["size"]) for r in rows} == {
        (d, s) for d in ("dm", "dc") for s in ("1", "2", "50")
    }
    assert (tmp_path / "unequalness.png").stat().st_size > 1000


def test_cam_command_trains_then_reuses_its_classifier(tmp_path):
    first = tmp_path / "first"
    out = command(
        "cam",
        "dataset.image_size=8",
        "model.width=8",
        "train.epochs=2",
        f"hydra.run.dir={first}",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads((first / "cam.json").read_text())
    assert len(summary["mirror_symmetry"]) == 10
    assert (first / "cam_frequency.png").exists() and (first / "classifier.pt").exists()
    second = tmp_path / "second"
    out = command(
        "cam",
        "dataset.image_size=8",
        "model.width=8",
        f"checkpoint={first / 'classifier.pt'}",
        f"hydra.run.dir={second}",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    again = json.loads((second / "cam.json").read_text())
    assert again["test_accuracy"] == summary["test_accuracy"]
    assert not (second / "classifier.pt").exists()
