"""The `distillkit` command as a user types it: multirun over numeric groups, clear errors."""

from __future__ import annotations

import json

from helpers import TINY, distillkit


def test_multirun_over_ipc_as_typed(tmp_path):
    out = distillkit(
        "-m",
        *TINY,
        "method=random",
        "ipc=1,5",
        "logger=wandb",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    results = [
        json.loads(p.read_text()) for p in sorted((tmp_path / "sweep").rglob("results.json"))
    ]
    assert sorted(r["ipc"] for r in results) == [1, 5]
    # One W&B run per Hydra job, each inside its own job directory.
    for job in ("0", "1"):
        assert len(list((tmp_path / "sweep" / job / "wandb").glob("offline-run-*"))) == 1
    assert all(r["method"] == "random" for r in results)


def test_missing_dataset_gives_one_clear_error(tmp_path):
    missing = tmp_path / "no-data-here"
    out = distillkit(
        *[o for o in TINY if not o.startswith("dataset")],
        "dataset=cifar10",
        f"dataset.root={missing}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "cifar10" in out.stderr and str(missing) in out.stderr
    assert "dataset.root" in out.stderr


def test_unknown_method_is_reported_before_any_work(tmp_path):
    target = "method._target_=nosuch.Method"
    out = distillkit(*TINY, target, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert out.returncode == 2
    assert "unknown method 'nosuch.Method'" in out.stderr  # the class its _target_ names
    assert "Traceback" not in out.stderr
