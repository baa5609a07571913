"""Expert trajectories: training, the sharded buffer format, refusing buffers of other settings."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_factory as convnet

from distillkit.augment import DSA
from distillkit.data import load_dataset
from distillkit.experts import (
    ExpertBuffer,
    ExpertBufferError,
    ExpertSettings,
    buffer_meta,
    flatten_parameters,
    train_expert,
    train_experts,
)
from distillkit.networks import NetworkFactory
from distillkit.seeding import RunGenerators

STRATEGY = "color_crop_cutout_scale_rotate"


def make_buffer(directory: Path, data, factory, num_experts=3, epochs=2, per_shard=2) -> list:
    gens = RunGenerators(0)
    return train_experts(
        directory, data, factory, DSA(STRATEGY), num_experts, ExpertSettings(epochs=epochs),
        per_shard, lambda i: gens[f"experts/{i}"],
    )  # fmt: skip


@pytest.fixture(scope="module")
def buffer_dir(tmp_path_factory, digits) -> Path:
    directory = tmp_path_factory.mktemp("buffer")
    make_buffer(directory, digits, convnet())
    return directory


# -- training and the format --------------------------------------------------------------------
def test_expert_trajectory_starts_at_init_and_follows_plain_sgd(digits):
    factory = convnet()
    trajectory, net = train_expert(
        factory, digits.train_images, digits.train_labels, ExpertSettings(epochs=2), None,
        torch.Generator().manual_seed(0),
    )  # fmt: skip
    init = flatten_parameters(factory(torch.Generator().manual_seed(0)))
    assert trajectory.shape == (3, init.numel())
    assert torch.equal(trajectory[0], init)  # the same generator gives the same init
    assert torch.equal(trajectory[-1], flatten_parameters(net))
    assert not torch.equal(trajectory[1], trajectory[0])


def test_expert_training_is_the_published_plain_sgd_loop_to_the_bit(digits):
    """The evaluation protocol's loop trains experts: same draws, same steps as plain SGD."""
    factory, settings = convnet(), ExpertSettings(epochs=2, lr=0.05, batch_size=600)
    images, labels = digits.train_images, digits.train_labels
    generator = torch.Generator().manual_seed(3)
    trajectory, _ = train_expert(factory, images, labels, settings, DSA(STRATEGY), generator)
    reference = torch.Generator().manual_seed(3)
    net, augment = factory(reference), DSA(STRATEGY)
    optimiser = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.0, weight_decay=0.0)
    expected = [flatten_parameters(net)]
    for _ in range(2):
        order = torch.randperm(images.shape[0], generator=reference)
        for start in range(0, images.shape[0], 600):
            rows = order[start : start + 600]
            loss = F.cross_entropy(net(augment(images[rows], reference)), labels[rows])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        expected.append(flatten_parameters(net))
    assert torch.equal(trajectory, torch.stack(expected))
    assert torch.equal(generator.get_state(), reference.get_state())


def test_buffer_is_sharded_with_metadata_and_samples_two_epochs(buffer_dir, digits):
    shards = sorted(p.name for p in buffer_dir.iterdir())
    assert shards == ["experts_00000.pt", "experts_00001.pt"]  # 3 experts, 2 per shard
    factory = convnet()
    buffer = ExpertBuffer.open(buffer_dir, buffer_meta(digits.info, factory))
    assert buffer.num_experts == 3 and buffer.epochs == 2
    assert sorted(buffer.expert_ids) == [0, 1, 2]
    assert buffer.training["lr"] == 0.01 and buffer.training["dsa"] == STRATEGY
    start, target, expert, t = buffer.sample(torch.Generator().manual_seed(0), 1, 2)
    assert t == 0
    assert torch.equal(start, buffer.trajectory(expert)[0])
    assert torch.equal(target, buffer.trajectory(expert)[2])


def test_training_more_experts_extends_the_buffer_reproducibly(tmp_path, digits, buffer_dir):
    factory = convnet()
    make_buffer(tmp_path, digits, factory, num_experts=1, per_shard=2)
    make_buffer(tmp_path, digits, factory, num_experts=3, per_shard=2)
    grown = ExpertBuffer.open(tmp_path, buffer_meta(digits.info, factory))
    at_once = ExpertBuffer.open(buffer_dir, buffer_meta(digits.info, factory))
    assert sorted(grown.expert_ids) == [0, 1, 2]
    for expert_id in range(3):
        a = grown.trajectory(grown.expert_ids.index(expert_id))
        b = at_once.trajectory(at_once.expert_ids.index(expert_id))
        assert torch.equal(a, b)


# -- refusing the wrong buffer ------------------------------------------------------------------
def test_buffer_of_another_dataset_is_refused_naming_the_file(buffer_dir, digits):
    expected = buffer_meta(dataclasses.replace(digits.info, name="mnist"), convnet())
    with pytest.raises(ExpertBufferError, match=r"experts_00000\.pt.*dataset='digits'.*'mnist'"):
        ExpertBuffer.open(buffer_dir, expected)


def test_buffer_of_another_image_size_is_refused(buffer_dir):
    other = load_dataset("digits", image_size=16)
    factory = NetworkFactory("ConvNet", 1, 10, (16, 16), {"width": 8}, "cpu")
    with pytest.raises(ExpertBufferError, match=r"experts_00000\.pt.*image_size"):
        ExpertBuffer.open(buffer_dir, buffer_meta(other.info, factory))


@pytest.mark.parametrize(
    "options", [{"width": 16}, {"width": 8, "norm": "batchnorm"}, {"width": 8, "act": "sigmoid"}]
)
def test_buffer_of_another_model_is_refused(buffer_dir, digits, options):
    with pytest.raises(ExpertBufferError, match=r"experts_00000\.pt.*trained for model="):
        ExpertBuffer.open(buffer_dir, buffer_meta(digits.info, convnet(**options)))


def test_an_alias_of_the_same_network_is_accepted(buffer_dir, digits):
    same = NetworkFactory("ConvNet", 1, 10, (8, 8), {"width": 8, "norm": "instancenorm"}, "cpu")
    assert ExpertBuffer.open(buffer_dir, buffer_meta(digits.info, same)).num_experts == 3


def test_buffer_of_another_zca_setting_is_refused(buffer_dir):
    whitened = load_dataset("digits", image_size=8, zca=True)
    with pytest.raises(ExpertBufferError, match=r"experts_00000\.pt.*zca=False.*zca=True"):
        ExpertBuffer.open(buffer_dir, buffer_meta(whitened.info, convnet()))


def test_buffer_of_another_normalisation_is_refused(buffer_dir, digits):
    info = dataclasses.replace(digits.info, mean=(0.5,))
    with pytest.raises(ExpertBufferError, match=r"experts_00000\.pt.*normalisation"):
        ExpertBuffer.open(buffer_dir, buffer_meta(info, convnet()))


def test_truncated_and_foreign_files_are_refused(tmp_path, buffer_dir, digits):
    meta = buffer_meta(digits.info, convnet())
    shard = (buffer_dir / "experts_00000.pt").read_bytes()
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / "experts_00000.pt").write_bytes(shard[: len(shard) // 2])
    with pytest.raises(
        ExpertBufferError, match=r"truncated.*experts_00000\.pt|experts_00000\.pt.*truncated"
    ):
        ExpertBuffer.open(truncated, meta)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    torch.save({"weights": torch.zeros(3)}, foreign / "experts_00000.pt")
    with pytest.raises(
        ExpertBufferError, match=r"experts_00000\.pt: not a distillkit expert shard"
    ):
        ExpertBuffer.open(foreign, meta)
    with pytest.raises(ExpertBufferError, match="no expert shards"):
        ExpertBuffer.open(tmp_path / "empty", meta)


def test_too_short_experts_are_refused(buffer_dir, digits):
    buffer = ExpertBuffer.open(buffer_dir, buffer_meta(digits.info, convnet()))
    with pytest.raises(ExpertBufferError, match="experts have 2 epochs"):
        buffer.sample(torch.Generator(), max_start_epoch=2, expert_epochs=2)


# -- the command line ---------------------------------------------------------------------------
def test_distillkit_experts_cli_writes_a_buffer_mtt_can_open(tmp_path, capsys, digits):
    from distillkit.cli.experts import main as cli

    out = tmp_path / "buf"
    cli(
        [
            "dataset.image_size=8", "model.width=8", "num_experts=2", "epochs=1",
            "experts_per_shard=1", "device=cpu", "progress=false", f"buffer_dir={out}",
            f"hydra.run.dir={tmp_path / 'hydra'}",
        ]
    )  # fmt: skip
    assert "2 experts trained" in capsys.readouterr().out
    factory = NetworkFactory.from_config(
        {"name": "ConvNet", "width": 8, "depth": None, "norm": "instancenorm"}, digits.info, "cpu"
    )
    assert ExpertBuffer.open(out, buffer_meta(digits.info, factory)).num_experts == 2


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
