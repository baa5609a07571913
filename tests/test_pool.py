"""The pre-trained pool for IID's class centralisation: format, resume, refusing other settings."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from helpers import tiny_factory as convnet

from distillkit.pool import (
    PoolError,
    PoolNotFoundError,
    PoolSettings,
    PretrainedPool,
    pretrain_command,
    train_pool,
)
from distillkit.seeding import RunGenerators


def make_pool(directory: Path, data, size: int = 3, per_shard: int = 2, epochs: int = 1) -> list:
    gens = RunGenerators(0)
    return train_pool(
        directory, data, convnet(), size, PoolSettings(epochs=epochs), per_shard,
        lambda i: gens[f"pool/{i}"],
    )  # fmt: skip


@pytest.fixture(scope="module")
def pool_dir(tmp_path_factory, digits) -> Path:
    directory = tmp_path_factory.mktemp("pool")
    make_pool(directory, digits)
    return directory


def test_pool_is_sharded_with_metadata_and_trained_members(pool_dir, digits):
    assert sorted(p.name for p in pool_dir.iterdir()) == ["pool_00000.pt", "pool_00001.pt"]
    pool = PretrainedPool.open(pool_dir, digits.info)
    assert len(pool) == 3 and pool.member_ids == [0, 1, 2]
    assert pool.meta["dataset"] == "digits" and pool.meta["image_size"] == [8, 8]
    assert pool.meta["model"]["name"] == "ConvNet" and pool.training["epochs"] == 1
    # Members are trained (not their initialisation) and differ from each other.
    fresh = convnet()(RunGenerators(0)["pool/0"])
    first = pool.network(0)
    w0 = first.features[0][0].weight.detach().clone()
    assert not torch.equal(w0, fresh.features[0][0].weight)
    assert not torch.equal(w0, pool.network(1).features[0][0].weight)
    net = pool.network(1)
    assert net is first and not any(p.requires_grad for p in net.parameters())


def test_sampling_is_driven_by_the_generator(pool_dir, digits):
    pool = PretrainedPool.open(pool_dir, digits.info)
    draws = [[pool.sample(torch.Generator().manual_seed(s))[0] for s in range(8)] for _ in "ab"]
    assert draws[0] == draws[1] and len(set(draws[0])) > 1
    index, net = pool.sample(torch.Generator().manual_seed(5))
    expected = pool.states[index]["classifier.weight"]
    assert torch.equal(net.classifier.weight.detach(), expected)


def test_growing_a_pool_adds_the_same_members_as_one_run(tmp_path, digits, pool_dir):
    make_pool(tmp_path, digits, size=2)
    written = make_pool(tmp_path, digits, size=3)
    assert [p.name for p in written] == ["pool_00001.pt"]
    grown, once = (
        PretrainedPool.open(tmp_path, digits.info),
        PretrainedPool.open(pool_dir, digits.info),
    )
    for a, b in zip(grown.states, once.states, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "change, key",
    [
        ({"name": "mnist"}, "dataset"),
        ({"image_size": (16, 16)}, "image_size"),
        ({"num_classes": 5}, "num_classes"),
        ({"mean": (0.3,)}, "normalisation"),
    ],
)
def test_pool_of_another_dataset_is_refused_naming_file_and_command(pool_dir, digits, change, key):
    info = dataclasses.replace(digits.info, **change)
    with pytest.raises(PoolError, match=f"pool_00000.pt: this pool was trained for {key}=") as exc:
        PretrainedPool.open(pool_dir, info)
    assert f"distillkit-pretrain dataset={info.name}" in str(exc.value)


def test_mismatched_image_size_suggests_a_command_for_the_run_setting(pool_dir, digits):
    info = dataclasses.replace(digits.info, image_size=(16, 16))
    with pytest.raises(PoolError, match="dataset.image_size=16 pool.dir=") as exc:
        PretrainedPool.open(pool_dir, info)
    # ... into another directory, so following the advice cannot hit the same pool again.
    assert f"pool.dir={pool_dir} " not in str(exc.value)


def test_missing_pool_names_the_command_that_builds_it(tmp_path, digits):
    with pytest.raises(FileNotFoundError) as exc:
        PretrainedPool.open(tmp_path / "nothing", digits.info)
    assert isinstance(exc.value, PoolNotFoundError) and isinstance(exc.value, ValueError)
    assert (
        f"distillkit-pretrain dataset=digits dataset.image_size=8 pool.dir={tmp_path / 'nothing'}"
        in str(exc.value)
    )


def test_the_command_sets_image_size_only_for_datasets_that_accept_it(digits):
    assert "dataset.image_size=8 " in pretrain_command(digits.info, "p")
    cifar = dataclasses.replace(digits.info, name="cifar10", image_size=(32, 32), zca=True)
    assert (
        pretrain_command(cifar, "p")
        == "distillkit-pretrain dataset=cifar10 dataset.zca=true pool.dir=p pool.size=1000 "
        "pool.epochs=40"
    )


def test_truncated_and_foreign_files_are_refused(tmp_path, pool_dir, digits):
    broken = tmp_path / "broken"
    broken.mkdir()
    data = (pool_dir / "pool_00000.pt").read_bytes()
    (broken / "pool_00000.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(PoolError, match="not a readable pool shard"):
        PretrainedPool.open(broken, digits.info)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    torch.save({"format": "something/1"}, foreign / "pool_00000.pt")
    with pytest.raises(PoolError, match="not a distillkit pool shard"):
        PretrainedPool.open(foreign, digits.info)


def test_growing_with_another_recipe_is_refused(tmp_path, digits):
    make_pool(tmp_path, digits, size=1)
    with pytest.raises(PoolError, match="trained 1 epochs, asked for 2"):
        make_pool(tmp_path, digits, size=2, epochs=2)


def test_distillkit_pretrain_cli_writes_a_pool_cc_can_open(tmp_path, capsys, digits):
    from distillkit.cli.pretrain import main as pretrain

    out = tmp_path / "pool"
    pretrain(
        [
            "dataset.image_size=8", "model=convnet", "model.width=8", "pool.size=2",
            "pool.epochs=1", "device=cpu", "progress=false", f"pool.dir={out}",
            f"hydra.run.dir={tmp_path / 'hydra'}",
        ]
    )  # fmt: skip
    assert "2 pool members trained" in capsys.readouterr().out
    pool = PretrainedPool.open(out, digits.info)
    assert len(pool) == 2 and len(pool.test_accuracy) == 2


def test_distillkit_pretrain_refuses_a_bad_size_before_any_work(tmp_path, capsys, monkeypatch):
    from distillkit.cli.pretrain import main as pretrain

    def no_data(*args, **kwargs):
        raise AssertionError("data was loaded before pool.size was checked")

    monkeypatch.setattr("distillkit.assembly.load_from_config", no_data)
    with pytest.raises(SystemExit) as exit_info:
        pretrain(["pool.size=0", "device=cpu", f"hydra.run.dir={tmp_path / 'hydra'}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["distillkit: error: pool.size and members_per_shard must be >= 1, got 0, 10"]
