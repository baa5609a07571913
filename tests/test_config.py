"""Config composition: every group option composes and validates; numeric groups parse."""

from __future__ import annotations

import pytest
from helpers import compose_config, group_options
from helpers import distillkit as run_cli

from distillkit.cli._args import drop_null_group_choices, quote_numeric_group_choices
from distillkit.config import ConfigError, validate_config
from distillkit.methods import method_name

GROUPS = [
    "dataset", "method", "regularizer", "ipc", "model", "eval", "logger", "runtime", "experiment"
]  # fmt: skip


def test_every_group_has_options():
    for group in GROUPS:
        assert group_options(group), f"config group {group!r} has no options"


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in group_options(g)])
def test_every_option_composes_and_validates(group, option):
    cfg = compose_config([f"{group}={option}"])
    validate_config(cfg)
    if group == "ipc":
        assert cfg.ipc == int(option)
    elif group == "dataset":
        assert cfg.dataset.name == option
    elif group == "method":  # one name: the file's is the class's
        assert method_name(cfg.method) == option and "name" not in cfg.method


def test_quote_numeric_group_choices():
    assert quote_numeric_group_choices(["ipc=10"]) == ["ipc='10'"]
    assert quote_numeric_group_choices(["ipc=1,10,50"]) == ["ipc='1','10','50'"]
    assert quote_numeric_group_choices(["method=dm", "seed=3"]) == ["method=dm", "seed=3"]
    assert quote_numeric_group_choices(["ipc='10'"]) == ["ipc='10'"]
    assert quote_numeric_group_choices(["ipc=range(1,3)"]) == ["ipc='1','2'"]
    assert quote_numeric_group_choices(["ipc=range(1, 7, 3)"]) == ["ipc='1','4'"]
    assert quote_numeric_group_choices(["ipc=choice(1,10)"]) == ["ipc='1','10'"]


@pytest.mark.parametrize("ipc", [7, 25, 1234])
def test_any_positive_ipc_composes(ipc):
    """No preset file per value: the `hydra_plugins/distillkit_ipc` source answers ipc/<N>."""
    assert compose_config([f"ipc={ipc}"]).ipc == ipc


@pytest.mark.parametrize("value", ["0", "-3", "range(3,1)", "choice(0,1)"])
def test_non_positive_ipc_fails_in_one_line(tmp_path, value):
    out = run_cli("--cfg", "job", f"ipc={value}", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.startswith("distillkit: error: ipc"), out.stderr


@pytest.mark.parametrize(
    "setting,key,value",
    [
        (["method=mtt", "dataset=cifar10", "ipc=1"], "method.syn_steps", 50),
        (["method=mtt", "dataset=cifar10", "ipc=10"], "method.syn_steps", 30),
        (["method=mtt", "dataset=cifar10", "ipc=50"], "method.syn_steps", 30),
        (["method=dc", "dataset=cifar10", "ipc=50"], "eval.dsa", False),
    ],
)
def test_published_values_still_compose(tmp_path, setting, key, value):
    """conf/tuned/ still applies for IPC 1/10/50, and `--cfg job` shows the composed result."""
    from omegaconf import OmegaConf

    assert OmegaConf.select(compose_config(setting), key) == value
    out = run_cli("--cfg", "job", *setting, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert OmegaConf.select(OmegaConf.create(out.stdout), key) == value


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


TINY_CLI = [
    "method=random", "dataset.image_size=8", "model.width=8", "eval.num_models=1",
    "eval.epochs=1", "progress=false", "device=cpu", "unequalness.enabled=false",
    "images.flips=false",
]  # fmt: skip


def test_cli_runs_any_ipc_and_range_sweeps(tmp_path):
    """`distillkit ipc=7` and `distillkit -m 'ipc=range(1,3)'` run (no preset files needed)."""
    import json

    out = run_cli(*TINY_CLI, "ipc=7", f"hydra.run.dir={tmp_path / 'seven'}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "seven" / "results.json").read_text())["ipc"] == 7
    sweep = tmp_path / "sweep"
    out = run_cli("-m", *TINY_CLI, "ipc=range(1,3)", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    ipcs = sorted(json.loads(p.read_text())["ipc"] for p in sweep.glob("*/results.json"))
    assert ipcs == [1, 2]
