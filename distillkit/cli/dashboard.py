"""`distillkit-dashboard --entity E --project P`: a W&B workspace for comparing methods,
add-ons (FYI, IID) and IPC, written as code with the `wandb-workspaces` package.

The panels read what distillkit's runs log (distillkit/logging/wandb_logger.py): the flat config
keys `addons` and `setting`, `final/<arch>/mean`, `unequalness/<distance>`, the media keys
`synthetic/grid` and `synthetic/flips` (one key per kind: the media panel has a step slider) and
the per-run `results` table, merged across runs. Creating the workspace needs W&B online (an API
key); `--print` builds it and lists its panels without a network.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

#: The headline evaluation model of the panels (`eval.models[0]` of a run).
DEFAULT_MODEL = "ConvNet"


def build_workspace(entity: str, project: str, model: str = DEFAULT_MODEL, name: str = "") -> Any:
    """The workspace object (nothing is sent): sections of panels, failed runs filtered out,
    runs grouped by `setting` (the method, add-ons, dataset and IPC without the seed) so each
    line or bar is the mean of the seeds with their spread."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    final = f"final/{model}/mean"
    by_setting = dict(groupby_aggfunc="mean", groupby_rangefunc="stddev")
    accuracy = ws.Section(
        name="Accuracy: method x add-on x IPC",
        is_open=True,
        panels=[
            wr.BarPlot(
                title=f"final {model} accuracy by setting (mean ± std over seeds)",
                metrics=[final],
                groupby="setting",
                **by_setting,
            ),
            wr.ParallelCoordinatesPlot(
                title="method, add-ons, IPC -> accuracy",
                columns=[
                    wr.ParallelCoordinatesPlotColumn(metric=wr.Config("method.name")),
                    wr.ParallelCoordinatesPlotColumn(metric=wr.Config("addons")),
                    wr.ParallelCoordinatesPlotColumn(metric=wr.Config("ipc")),
                    wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(final)),
                ],
            ),
            wr.LinePlot(
                title=f"{model} accuracy during distillation",
                y=[f"eval/{model}/mean"],
                groupby="setting",
                **by_setting,
            ),
        ],
    )
    unequalness = ws.Section(
        name="Unequalness U(S) by add-on",
        is_open=True,
        panels=[
            wr.LinePlot(
                title=f"unequalness/{d} by add-on", y=[f"unequalness/{d}"], groupby="addons"
            )
            for d in ("dm", "dc", "dsa")
        ],
    )
    images = ws.Section(
        name="Synthetic images",
        is_open=True,
        panels=[
            wr.MediaBrowser(title="synthetic set (step slider)", media_keys=["synthetic/grid"]),
            wr.MediaBrowser(title="images and their flips", media_keys=["synthetic/flips"]),
            wr.LinePlot(title="training loss", y=["train/loss"], groupby="setting", **by_setting),
        ],
    )
    table = ws.Section(
        name="Results table (all runs)",
        is_open=True,
        panels=[wr.WeavePanelSummaryTable(table_name="results")],
    )
    return ws.Workspace(
        entity=entity,
        project=project,
        name=name or "distillkit: methods x add-ons x IPC",
        sections=[accuracy, unequalness, images, table],
        runset_settings=ws.RunsetSettings(
            filters="State != 'failed' and State != 'crashed'",
            groupby=[ws.Config("setting")],
        ),
    )


def describe(workspace: Any) -> str:
    """One line per section and panel (what --print shows)."""
    lines = [f"{workspace.name} ({workspace.entity}/{workspace.project})"]
    for section in workspace.sections:
        lines.append(f"  {section.name}")
        lines += [
            f"    {type(p).__name__}: {getattr(p, 'title', None) or ''}" for p in section.panels
        ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="distillkit-dashboard",
        description="Create a W&B workspace (online) with the panels for comparing methods, "
        "add-ons and IPC across distillkit runs.",
    )
    parser.add_argument("--entity", required=True, help="W&B entity (user or team)")
    parser.add_argument("--project", default="distillkit", help="W&B project (distillkit)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="headline evaluation model")
    parser.add_argument("--name", default="", help="the workspace's name")
    parser.add_argument(
        "--print", action="store_true", help="build the workspace and list its panels only"
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        workspace = build_workspace(args.entity, args.project, args.model, args.name)
    except ImportError:
        print(
            "distillkit: error: pip install 'distillkit[dashboard]' (wandb-workspaces)",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    print(describe(workspace))
    if not args.print:
        workspace.save()
        print(f"distillkit-dashboard: saved {workspace.url}")
