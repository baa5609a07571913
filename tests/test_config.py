"""Config composition: every group option composes and validates; numeric groups parse."""

from __future__ import annotations

import subprocess
import sys
from importlib import resources

import pytest
from conftest import compose_config

from distillkit.cli._args import drop_null_group_choices, quote_numeric_group_choices
from distillkit.config import ConfigError, validate_config

GROUPS = [
    "dataset", "method", "regularizer", "ipc", "model", "eval", "logger", "runtime", "experiment"
]  # fmt: skip


def group_options(group: str) -> list[str]:
    folder = resources.files("distillkit.conf") / group
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def test_every_group_has_options():
    for group in GROUPS:
        assert group_options(group), f"config group {group!r} has no options"


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in group_options(g)])
def test_every_option_composes_and_validates(group, option):
    cfg = compose_config([f"{group}={option}"])
    validate_config(cfg)
    if group == "ipc":
        assert cfg.ipc == int(option)
    elif group in {"dataset", "method"}:
        assert cfg[group].name == option


def test_quote_numeric_group_choices():
    assert quote_numeric_group_choices(["ipc=10"]) == ["ipc='10'"]
    assert quote_numeric_group_choices(["ipc=1,10,50"]) == ["ipc='1','10','50'"]
    assert quote_numeric_group_choices(["method=dm", "seed=3"]) == ["method=dm", "seed=3"]
    assert quote_numeric_group_choices(["ipc='10'"]) == ["ipc='10'"]


def test_null_group_choices_mean_the_default_or_fail_in_one_line():
    assert drop_null_group_choices(["experiment=null", "ipc=1"]) == ["ipc=1"]
    assert drop_null_group_choices(["regularizer=null"]) == ["regularizer=none"]
    assert drop_null_group_choices(["regularizer=none"]) == ["regularizer=none"]
    assert drop_null_group_choices(["dataset.root=null"]) == ["dataset.root=null"]
    with pytest.raises(ConfigError, match="method needs a choice"):
        drop_null_group_choices(["method=null"])
    compose_config(drop_null_group_choices(["experiment=null", "regularizer=null"]))


def test_regularizer_is_list_valued():
    cfg = compose_config(["regularizer=[none]"])
    assert dict(cfg.regularizer) == {}


@pytest.mark.parametrize(
    "override,message",
    [
        ("method.iterations=-1", "method.iterations"),
        ("method.lr_img=-0.5", "method.lr_img"),
        ("model.name=NoSuchNet", "unknown model"),
        ("eval.epochs=0", "eval.epochs"),
    ],
)
def test_bad_values_fail_validation(override, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(compose_config([override]))


def run_cli(*args: str, cwd) -> subprocess.CompletedProcess:
    code = "import sys; from distillkit.cli.distill import main; main(sys.argv[1:])"
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_cli_ipc_as_typed(tmp_path):
    out = run_cli("--cfg", "job", "ipc=10", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "ipc: 10" in out.stdout


def test_cli_help_lists_groups(tmp_path):
    out = run_cli("--help", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    for group in GROUPS:
        assert f"{group}:" in out.stdout


def test_tuned_settings_are_picked_up_for_their_setting_only(tmp_path):
    """`optional tuned: ${method}_${dataset}_ipc${ipc}` loads per-setting values automatically."""
    (tmp_path / "tuned").mkdir()
    (tmp_path / "tuned" / "dm_digits_ipc1.yaml").write_text(
        "# @package _global_\nmethod:\n  lr_img: 7.5\n"
    )
    search = f"hydra.searchpath=[file://{tmp_path}]"
    assert compose_config([search, "ipc=1"]).method.lr_img == 7.5
    assert compose_config([search, "ipc=10"]).method.lr_img == 1.0
    assert compose_config([search, "ipc=1", "method.lr_img=2"]).method.lr_img == 2.0
