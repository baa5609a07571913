"""Impossible or inconsistent configs fail at start-up with one clear line (one test per case)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import TINY, distillkit

from distillkit.addons import AddOn
from distillkit.config import ConfigError, as_dict
from distillkit.experts import ExpertBufferError, buffer_meta, write_shard
from distillkit.networks import NetworkFactory
from distillkit.trainer import Trainer


def refused(cfg, run_dir: Path, match: str, error: type[Exception] = ConfigError) -> str:
    """Trainer construction raises `error` whose message matches and is a single line."""
    with pytest.raises(error, match=match) as info:
        Trainer(cfg, run_dir)
    message = str(info.value)
    assert "\n" not in message.strip()
    return message


def test_cli_ipc_zero_is_one_line_and_exit_2(tmp_path):
    out = distillkit(*TINY, "ipc=0", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.strip() == "distillkit: error: ipc must be a positive integer, got 0"
    assert not (tmp_path / "run").exists()  # refused before Hydra made the run directory


def test_negative_ipc_on_the_command_line_is_refused(tmp_path):
    from distillkit.cli.distill import main as distill

    with pytest.raises(SystemExit) as info:
        distill([*TINY, "ipc=-2", f"hydra.run.dir={tmp_path}"])
    assert info.value.code == 2


def test_ipc_zero_in_the_config(tiny_config, tmp_path):
    cfg = as_dict(tiny_config())
    cfg["ipc"] = 0
    refused(cfg, tmp_path, "ipc must be a positive integer, got 0")


def test_ipc_larger_than_a_class(tiny_config, tmp_path):
    refused(tiny_config("ipc=200"), tmp_path, r"ipc=200 needs 200 real images per class.*smallest")


def test_model_that_cannot_take_the_image_size(tiny_config, tmp_path):
    message = refused(
        tiny_config("model.depth=4"), tmp_path, r"model ConvNet cannot take the 1x8x8 images"
    )
    assert "digits" in message


def test_evaluation_model_that_cannot_take_the_image_size(tiny_config, tmp_path):
    refused(
        tiny_config("eval.models=[ConvNet,ConvNetD4]"),
        tmp_path,
        r"model ConvNetD4 cannot take the 1x8x8 images",
    )


def test_model_options_it_does_not_take(tiny_config, tmp_path):
    # ConvNet's options left in the block (model.width, depth, ...) are keys AlexNet never reads.
    refused(tiny_config("model.name=AlexNet"), tmp_path, r"^model\.\w+: unknown key \(valid: ")


def test_unknown_method(tiny_config, tmp_path):
    cfg = tiny_config("method._target_=nosuch.Method")
    refused(cfg, tmp_path, r"unknown method 'nosuch\.Method'")


def test_a_target_that_is_not_a_method(tiny_config, tmp_path):
    refused(tiny_config("method._target_=distillkit.synthetic.SyntheticSet"), tmp_path, "not a")


def test_unknown_regularizer(tiny_config, tmp_path):
    cfg = as_dict(tiny_config())
    cfg["regularizer"] = {"nosuch": {}}
    refused(cfg, tmp_path, "unknown regularizer 'nosuch'")


class LossOnly(AddOn):
    """A throwaway loss add-on: only methods that take loss add-ons may use it."""

    name = "test_loss_only"
    has_loss = True


def test_loss_addon_with_a_method_that_takes_none(tiny_config, tmp_path):
    cfg = as_dict(tiny_config("method=random"))
    cfg["regularizer"] = {"test_loss_only": {"_target_": f"{__name__}.LossOnly"}}
    refused(cfg, tmp_path, "cannot be combined with method 'random'")


def test_mtt_without_an_expert_buffer(tiny_config, tmp_path):
    missing = tmp_path / "no-buffer"
    message = refused(
        tiny_config("method=mtt", f"method.buffer={missing}"), tmp_path / "run", "no expert buffer"
    )
    assert str(missing) in message


def test_mtt_with_a_buffer_of_another_model(tiny_config, tmp_path, digits):
    trainer_cfg = tiny_config("method=mtt", f"method.buffer={tmp_path / 'buffer'}")
    info = digits.info
    other = NetworkFactory("ConvNet", 1, 10, (8, 8), {"width": 16}, "cpu")
    meta = buffer_meta(info, other)
    write_shard(tmp_path / "buffer", 0, torch.zeros(1, 3, meta["num_params"]), meta, [0])
    message = refused(trainer_cfg, tmp_path / "run", "experts_00000.pt", ExpertBufferError)
    assert "model=" in message


def test_iid_without_a_pool(tiny_config, tmp_path):
    missing = tmp_path / "no-pool"
    cfg = tiny_config("method=dm", "regularizer=[iid]", f"regularizer.cc.pool={missing}")
    message = refused(
        cfg, tmp_path / "run", "distillkit-pretrain dataset=digits", FileNotFoundError
    )
    assert str(missing) in message


@pytest.mark.parametrize(
    "override,message",
    [
        ("method.lr_img=-1", "method.lr_img must be > 0"),
        ("method.lr_img=0", "method.lr_img must be > 0"),
        ("eval.lr=-0.01", "eval.lr must be > 0"),
        ("method.iterations=-5", "method.iterations must be >= 0"),
        ("eval.epochs=-1", "eval.epochs must be >= 1"),
        ("eval.num_models=-1", "eval.num_models must be >= 0"),
        ("checkpoint.every=-1", "checkpoint.every must be >= 0"),
        ("method.momentum=-0.5", "method.momentum must be >= 0"),
        ("log_every=0", "log_every must be >= 1"),
        ("runtime.precision=fp8", "runtime.precision must be auto or one of"),
        ("runtime.compile=sometimes", "runtime.compile must be auto, true or false"),
        ("eval.stacked=maybe", "eval.stacked must be true, false or auto"),
    ],
)
def test_negative_rates_and_counts(tiny_config, tmp_path, override, message):
    refused(tiny_config(override), tmp_path, message)


@pytest.mark.parametrize("method", ["mtt", "idm"])
def test_method_learning_rates_are_checked(tiny_config, tmp_path, method):
    key = "lr_lr" if method == "mtt" else "lr_net"
    refused(tiny_config(f"method={method}", f"method.{key}=-1"), tmp_path, f"method.{key}")


def test_a_number_given_as_text(tiny_config, tmp_path):
    refused(tiny_config("method.lr_img=fast"), tmp_path, "method.lr_img must be a number")


def test_dataset_option_it_does_not_take(tiny_config, tmp_path):
    refused(
        tiny_config("dataset=cifar10", f"dataset.root={tmp_path}", "+dataset.image_size=8"),
        tmp_path / "run",
        r"^dataset\.image_size: unknown key \(valid: download, dsa_strategy, name, root, ",
    )
