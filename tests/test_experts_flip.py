"""FYI's experts: `distillkit-experts dsa.always_flip=true` trains them with FYI's always-flip DSA
(cvlab-yonsei/FYI MTT/buffer.py ~84 with utils.py DiffAugment ~565-569: mode 'S' draws a p=0.5
flip on every call, then one other operation). Their buffer is named apart (`_flip`) and says so
in its meta, so a plain buffer is never read for an always-flip run (FYI's table protocol) nor
the reverse; the FYI table's MTT and FTD rows point at (and prepare) the always-flip buffers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from distillkit.augment import DSA
from distillkit.data import load_dataset
from distillkit.experts import ExpertBuffer, ExpertBufferError, ExpertSettings, buffer_meta
from distillkit.networks import NetworkFactory

FULL = "color_crop_cutout_flip_scale_rotate"
REPO = Path(__file__).resolve().parents[1]
TABLES = REPO / "experiments" / "tables"
#: 16 digits per class, batches of 32: 5 augmentation calls per epoch.
TINY = (
    f"dataset.dsa_strategy={FULL}", "dataset.image_size=8", "dataset.train_limit=16",
    "model.width=8", "num_experts=1", "epochs=2", "batch=32", "device=cpu", "progress=false",
)  # fmt: skip


@pytest.fixture(scope="module")
def factory(digits):
    options = {"name": "ConvNet", "width": 8, "depth": None, "norm": "instancenorm"}
    return NetworkFactory.from_config(options, digits.info, "cpu")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A plain and an always-flip buffer from the command line at their default buffer_dir, with
    every DSA draw the experts made: {always_flip: (directory, [families of each draw])}."""
    from distillkit.cli.experts import main as cli

    root = tmp_path_factory.mktemp("experts")
    draws: list[tuple[bool, tuple[str, ...]]] = []
    sample = DSA.sample

    def spy(self, *args, **kwargs):
        params = sample(self, *args, **kwargs)
        draws.append((self.always_flip, params.families))
        return params

    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setattr(DSA, "sample", spy)
        for flip in (False, True):
            draws.clear()
            cli([*TINY, f"dsa.always_flip={str(flip).lower()}", f"hydra.run.dir={root / 'h'}"])
            assert {f for f, _ in draws} == {flip}
            out[flip] = (root / "buffers" / "digits" / f"ConvNet_zca-False{'_flip' * flip}",
                         [families for _, families in draws])  # fmt: skip
    return out


def test_always_flip_experts_draw_a_flip_on_every_augmentation_call(trained):
    _, flipped = trained[True]
    _, plain = trained[False]
    assert len(flipped) == len(plain) == 2 * 5  # epochs x batches: every call is recorded
    assert all(families[0] == "flip" and len(families) == 2 for families in flipped)
    assert {families[1] for families in flipped} <= {"color", "crop", "cutout", "scale", "rotate"}
    assert all(len(families) == 1 for families in plain)  # one family, flip only sometimes
    assert any(families != ("flip",) for families in plain)


def test_the_buffers_differ_in_name_meta_and_trajectory(trained, digits, factory):
    (plain_dir, _), (flip_dir, _) = trained[False], trained[True]
    assert plain_dir.name == "ConvNet_zca-False" and flip_dir.name == "ConvNet_zca-False_flip"
    plain = ExpertBuffer.open(plain_dir, buffer_meta(digits.info, factory))
    flip = ExpertBuffer.open(flip_dir, buffer_meta(digits.info, factory, always_flip=True))
    assert plain.meta["always_flip"] is False and flip.meta["always_flip"] is True
    a, b = plain.trajectory(0), flip.trajectory(0)
    assert torch.equal(a[0], b[0]) and not torch.equal(a[1], b[1])  # same init, other DSA


def test_opening_a_buffer_of_the_other_dsa_kind_fails_clearly(trained, digits, factory):
    (plain_dir, _), (flip_dir, _) = trained[False], trained[True]
    with pytest.raises(ExpertBufferError, match=r"plain DSA, but the run uses FYI's always-flip"):
        ExpertBuffer.open(plain_dir, buffer_meta(digits.info, factory, always_flip=True))
    with pytest.raises(ExpertBufferError, match=r"dsa.always_flip=false"):
        ExpertBuffer.open(flip_dir, buffer_meta(digits.info, factory))
    for directory in (plain_dir, flip_dir):  # no expectation (a run without matching DSA)
        assert ExpertBuffer.open(directory, buffer_meta(digits.info, factory, always_flip=None))


def test_a_buffer_written_before_always_flip_was_recorded_reads_as_plain(
    trained, digits, factory, tmp_path
):
    from distillkit.experts import write_shard

    meta = buffer_meta(digits.info, factory)
    del meta["always_flip"]
    write_shard(tmp_path, 0, torch.zeros(1, 3, meta["num_params"]), meta, [0])
    assert ExpertBuffer.open(tmp_path, buffer_meta(digits.info, factory)).num_experts == 1
    with pytest.raises(ExpertBufferError, match="plain DSA"):
        ExpertBuffer.open(tmp_path, buffer_meta(digits.info, factory, always_flip=True))


def test_growing_a_plain_buffer_with_always_flip_experts_is_refused(trained, factory):
    from distillkit.experts import train_experts
    from distillkit.seeding import RunGenerators

    few = load_dataset("digits", image_size=8, train_limit=16)
    gens = RunGenerators(0)
    with pytest.raises(ExpertBufferError, match="plain DSA"):
        train_experts(
            trained[False][0], few, factory, DSA(FULL, always_flip=True), 2,
            ExpertSettings(epochs=2, batch_size=32), 1, lambda i: gens[f"experts/{i}"],
        )  # fmt: skip


def _mtt(data, factory, buffer_dir, augment):
    from distillkit.methods.base import MethodContext
    from distillkit.methods.mtt import TrajectoryMatching
    from distillkit.seeding import RunGenerators
    from distillkit.synthetic import SyntheticSet

    gens = RunGenerators(1)
    synthetic = SyntheticSet.initialise(data, 1, "real", gens["init"])
    settings = {
        "iterations": 1, "syn_steps": 1, "expert_epochs": 1, "max_start_epoch": 1,
        "buffer": str(buffer_dir), "dsa": augment is not None,
    }  # fmt: skip
    ctx = MethodContext(settings, data, synthetic, factory, augment, gens, [])
    return TrajectoryMatching(ctx)


def test_an_always_flip_mtt_run_refuses_plain_experts(trained, digits, factory):
    (plain_dir, _), (flip_dir, _) = trained[False], trained[True]
    with pytest.raises(ExpertBufferError, match=r"plain DSA.*dsa.always_flip=true"):
        _mtt(digits, factory, plain_dir, DSA(FULL, always_flip=True))
    with pytest.raises(ExpertBufferError, match=r"always-flip DSA.*dsa.always_flip=false"):
        _mtt(digits, factory, flip_dir, DSA(FULL))
    assert _mtt(digits, factory, flip_dir, DSA(FULL, always_flip=True)).buffer.num_experts == 1
    assert _mtt(digits, factory, plain_dir, None).buffer.num_experts == 1  # no DSA: either


# -- configuration --------------------------------------------------------------------------------
def _compose(name: str, overrides: list[str]):
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="distillkit.conf", version_base="1.3"):
        return compose(name, overrides=overrides)


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("data", [[], ["dataset=cifar10", "dataset.zca=true"]])
def test_default_buffer_paths_of_experts_and_mtt_agree(flip, data):
    switch = [f"dsa.always_flip={str(flip).lower()}"]
    experts = _compose("experts", [*data, *switch])
    run = _compose("config", ["method=mtt", *data, *switch])
    assert experts.buffer_dir == run.method.buffer
    assert run.method.buffer.endswith("_flip") is flip
    assert experts.dsa.always_flip is flip


def test_ftd_buffers_take_the_flip_suffix_before_the_gsam_one():
    plain = _compose("config", ["method=ftd", "dataset=cifar10", "ipc='1'"])
    flip = _compose("config", ["method=ftd", "dataset=cifar10", "ipc='1'", "dsa.always_flip=true"])
    assert plain.method.buffer == "buffers/cifar10/ConvNet_zca-True_gsam-a0.3"
    assert flip.method.buffer == "buffers/cifar10/ConvNet_zca-True_flip_gsam-a0.3"
    assert _compose("config", ["method=ftd", "dsa.always_flip=true"]).method.buffer.endswith(
        "_flip_gsam"
    )


def test_the_experts_dsa_block_replaces_the_old_switches():
    from distillkit.cli.experts import expert_augment
    from distillkit.errors import ConfigError

    assert expert_augment({"dsa": {"enabled": False, "strategy": FULL}}) is None
    dsa = expert_augment({"dsa": {"enabled": True, "strategy": FULL, "always_flip": True}})
    assert dsa.always_flip and dsa.mode == "S" and dsa.strategy == FULL
    with pytest.raises(ConfigError, match="dsa.enabled=false"):
        expert_augment({"dsa": False})
    with pytest.raises(ConfigError, match="needs 'flip'"):  # digits' strategy has no flip
        expert_augment({"dsa": {"strategy": "color_crop", "always_flip": True}})


# -- the FYI table ---------------------------------------------------------------------------------
def test_fyi_smoke_plan_builds_and_reads_always_flip_experts(tmp_path):
    from distillkit.cli.experts import expert_augment
    from distillkit.config import as_dict
    from distillkit.tables.plan import make_plan
    from distillkit.tables.spec import load_table

    spec = load_table("fyi", TABLES)
    fyi = make_plan(spec, "smoke", tmp_path)  # the default protocol: FYI's DSA
    original = make_plan(spec, "smoke", tmp_path, protocol="dsa")
    for plan, flip in ((fyi, True), (original, False)):
        for prerequisite in plan.prerequisites:
            assert prerequisite.directory.name.endswith("_flip") is flip
            assert ("dsa.always_flip=true" in prerequisite.argv) is flip
            args = [a for a in prerequisite.command.split()[1:] if not a.startswith("hydra.")]
            cfg = _compose("experts", args)
            augment = expert_augment(as_dict(cfg))
            assert augment.always_flip is flip
        buffers = {str(p.directory) for p in plan.prerequisites}
        for job in plan.jobs:
            if job.row.startswith(("mtt", "ftd")):
                (buffer,) = [o for o in job.overrides if o.startswith("method.buffer=")]
                assert buffer.partition("=")[2] in buffers


def test_fyi_paper_prerequisites_are_always_flip_buffers(tmp_path):
    from distillkit.tables.plan import make_plan, paper_prerequisites
    from distillkit.tables.spec import load_table

    spec = load_table("fyi", TABLES)
    for protocol, flip in (("fyi", True), ("dsa", False)):
        plan = make_plan(spec, "paper", tmp_path, protocol=protocol)
        plan.jobs = [j for j in plan.jobs if j.row in ("mtt", "ftd") and j.dataset == "cifar10"]
        wanted = paper_prerequisites(plan)
        assert len(wanted) == 2 + 2  # MTT: ZCA and not (IPC 50); FTD: alpha 0.3 and 1.0
        for prerequisite in wanted:
            directory = str(prerequisite.directory)
            assert ("_flip" in directory) is flip
            assert ("dsa.always_flip=true" in prerequisite.command) is flip
            assert f"buffer_dir={directory}" in prerequisite.command


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
