"""The W&B dashboard as code, checked offline: the workspace object and its panels (saving it
needs W&B online), plus --help on the commands that had none."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("wandb_workspaces")

from distillkit.cli.dashboard import build_workspace, describe  # noqa: E402


def panels(workspace) -> dict[str, list]:
    return {s.name: list(s.panels) for s in workspace.sections}


def test_workspace_has_the_panels_for_methods_addons_and_ipc():
    import wandb_workspaces.reports.v2 as wr

    workspace = build_workspace("me", "proj", model="ConvNet")
    assert (workspace.entity, workspace.project) == ("me", "proj")
    sections = panels(workspace)
    accuracy = sections["Accuracy: method x add-on x IPC"]
    bar = next(p for p in accuracy if isinstance(p, wr.BarPlot))
    assert bar.metrics == ["final/ConvNet/mean"] and bar.groupby == "setting"  # seeds grouped
    assert bar.groupby_aggfunc == "mean" and bar.groupby_rangefunc == "stddev"
    coords = next(p for p in accuracy if isinstance(p, wr.ParallelCoordinatesPlot))
    names = [getattr(c.metric, "name", c.metric) for c in coords.columns]
    assert names == ["method.name", "addons", "ipc", "final/ConvNet/mean"]
    curves = sections["Unequalness U(S) by add-on"]
    assert {tuple(p.y) for p in curves} == {("unequalness/dm",), ("unequalness/dc",),
                                          ("unequalness/dsa",)}  # fmt: skip
    assert all(p.groupby == "addons" for p in curves)
    media = [p for p in sections["Synthetic images"] if isinstance(p, wr.MediaBrowser)]
    assert [p.media_keys for p in media] == [["synthetic/grid"], ["synthetic/flips"]]
    (table,) = sections["Results table (all runs)"]
    assert isinstance(table, wr.WeavePanelSummaryTable) and table.table_name == "results"
    assert "failed" in str(workspace.runset_settings.filters)
    spec = workspace._to_model().model_dump_json()  # serialises as W&B's view would store it
    assert "synthetic/grid" in spec and "final/ConvNet/mean" in spec


def test_print_lists_panels_without_a_network():
    assert "MediaBrowser: synthetic set (step slider)" in describe(build_workspace("me", "p"))


@pytest.mark.parametrize(
    "module",
    ["distillkit.cli.dashboard", "distillkit.cli.summary", "distillkit.tables.reproduce"],
)
def test_help_on_every_command(module, tmp_path):
    code = f"import sys; from {module} import main; sys.exit(main(['--help']))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "usage" in out.stdout.lower()
