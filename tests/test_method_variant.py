"""A new DM variant the way a user adds one: a subclass in their own module plus one config that
names it (`_target_`), found through Hydra's search path; no distillkit file is edited. It takes
IID's loss add-ons (a capability it inherits from DM) and FYI, and runs end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from helpers import REPO, TINY, addon_targets, compose_config

from distillkit.addons import build_addons
from distillkit.addons.base import resolve_weight
from distillkit.errors import ConfigError
from distillkit.methods.base import Method
from distillkit.methods.dm import DistributionMatching, DMSettings
from distillkit.settings import ranged

HERE = Path(__file__).resolve().parent

#: What the user writes in <their configs>/method/dm_scaled.yaml.
VARIANT_YAML = """\
defaults:
  - dm
  - _self_
_target_: test_method_variant.ScaledDM
name: dm_scaled
match_scale: 3.0
"""


@dataclass(frozen=True)
class ScaledSettings(DMSettings):
    """DM's settings and one more, checked the same way."""

    match_scale: float = ranged(1.0, above=0)


class ScaledDM(DistributionMatching):
    """DM with the matching term scaled (a stand-in for any DM variant)."""

    name = "dm_scaled"
    Settings = ScaledSettings

    def matching_terms(self, net):
        terms = super().matching_terms(net)
        terms["match"] = self.settings.match_scale * terms["match"]
        return terms


@pytest.fixture(scope="module")
def user_configs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("user_conf")
    (root / "method").mkdir()
    (root / "method" / "dm_scaled.yaml").write_text(VARIANT_YAML)
    return root


@pytest.fixture(scope="module")
def pool(tiny_pool) -> Path:
    return tiny_pool


def test_the_variant_composes_from_the_users_search_path(user_configs):
    cfg = compose_config([*TINY, f"hydra.searchpath=[file://{user_configs}]", "method=dm_scaled"])
    assert cfg.method._target_ == "test_method_variant.ScaledDM"
    assert cfg.method.match_scale == 3.0
    assert cfg.method.lr_img == 1.0  # inherited from conf/method/dm.yaml


def test_the_variant_inherits_dms_add_on_capability_and_weights():
    """What the trainer asks of a method class: `build_addons` takes IID's loss add-ons for the
    variant (a capability it inherits from DM) as it refuses them for a method without it, and
    the shipped per-method weights resolve through the variant's family to DM's."""
    targets = addon_targets()
    iid = {name: {"_target_": targets[name]} for name in ("cc", "cm")}
    assert [addon.name for addon in build_addons(iid, ScaledDM)] == ["cc", "cm"]

    class Plain(Method):  # a method that never declared the capability
        name = "plain"

    with pytest.raises(ConfigError, match="cannot be combined with method 'plain'"):
        build_addons(iid, Plain)
    assert ScaledDM.family() == ("dm_scaled", "dm")
    for name in iid:
        shipped = yaml.safe_load((REPO / "conf" / "regularizer" / f"{name}.yaml").read_text())
        weights = shipped[name]["weight"]
        assert resolve_weight(name, weights, ScaledDM.family()) == weights["dm"]


def test_a_dm_variant_runs_with_fyi_and_iid_without_editing_distillkit(
    user_configs, pool, tmp_path
):
    run_dir = tmp_path / "run"
    overrides = [
        *TINY,
        f"hydra.searchpath=[file://{user_configs}]",
        "method=dm_scaled",
        "regularizer=[fyi,iid]",
        f"regularizer.cc.pool={pool}",
        "ipc=2",
        "log_every=1",
        "unequalness.enabled=false",
        f"hydra.run.dir={run_dir}",
    ]
    code = "import sys; from distillkit.cli.distill import main; main(sys.argv[1:])"
    path = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    out = subprocess.run(
        [sys.executable, "-c", code, *overrides],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    results = json.loads((run_dir / "results.json").read_text())
    assert results["method"] == "dm_scaled"
    assert results["regularizers"] == ["cc", "cm", "fyi"]
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in logged if "train/cc" in r)
    # DM's published IID weights reach the variant (cc 0.05, cm 0.01 for dm).
    expected = first["train/match"] + 0.05 * first["train/cc"] + 0.01 * first["train/cm"]
    assert first["train/loss"] == pytest.approx(expected, rel=1e-5)
    saved = torch.load(run_dir / "synthetic_set.pt", weights_only=False)
    assert saved["config"]["method"]["_target_"] == "test_method_variant.ScaledDM"


def test_the_variants_own_setting_is_checked_before_any_work(user_configs, tmp_path):
    from distillkit.config import ConfigError
    from distillkit.trainer import Trainer

    cfg = compose_config(
        [*TINY, f"hydra.searchpath=[file://{user_configs}]", "method=dm_scaled",
         "method.match_scale=-1"]
    )  # fmt: skip
    with pytest.raises(ConfigError, match="method.match_scale must be > 0"):
        Trainer(cfg, tmp_path)
