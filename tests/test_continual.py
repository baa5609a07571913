"""Continual learning: class restriction, orders and steps, and the command's files."""

from __future__ import annotations

import csv

import pytest
import torch

from distillkit.continual import class_orders, restrict_classes, split_steps
from distillkit.data import load_dataset

DATA = load_dataset("digits", image_size=8)


def test_restricting_classes_relabels_train_and_test_in_the_given_order():
    sub = restrict_classes(DATA, [7, 2])
    assert sub.info.num_classes == 2 and sub.info.class_names == ("7", "2")
    for images, labels, full_images, full_labels in (
        (sub.train_images, sub.train_labels, DATA.train_images, DATA.train_labels),
        (sub.test_images, sub.test_labels, DATA.test_images, DATA.test_labels),
    ):
        assert torch.equal(images[labels == 0], full_images[full_labels == 7])
        assert torch.equal(images[labels == 1], full_images[full_labels == 2])
        assert labels.shape[0] == int(((full_labels == 7) | (full_labels == 2)).sum())
    with pytest.raises(ValueError, match="distinct"):
        restrict_classes(DATA, [1, 1])


def test_orders_are_seeded_permutations_and_steps_cover_them():
    orders = class_orders(10, 3, seed=0)
    assert orders == class_orders(10, 3, seed=0) and orders != class_orders(10, 3, seed=1)
    assert all(sorted(o) == list(range(10)) for o in orders) and orders[0] != orders[1]
    assert split_steps(list(range(10)), 3) == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    with pytest.raises(ValueError, match="steps"):
        split_steps(list(range(10)), 11)


def test_distillkit_continual_writes_a_table_and_a_plot(tmp_path, capsys):
    from distillkit.cli.continual import main as continual

    out = tmp_path / "run"
    continual(
        [
            "dataset.image_size=8", "model.width=8", "method.iterations=2",
            "++method.batch_real=16", "ipc=2", "steps=2", "orders=1", "eval.num_models=1",
            "eval.epochs=2", "device=cpu", "progress=false", f"hydra.run.dir={out}",
        ]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert "ConvNet" in printed and "(1 orders)" in printed
    with (out / "continual.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert [int(r["classes_seen"]) for r in rows] == [5, 10]
    assert [int(r["images"]) for r in rows] == [10, 20]  # every synthetic image so far
    seen = [int(c) for r in rows for c in r["new_classes"].split()]
    assert sorted(seen) == list(range(10))
    assert all(0 <= float(r["mean"]) <= 100 for r in rows)
    assert (out / "continual.png").stat().st_size > 0


def compose(config_name: str, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    from distillkit.cli._args import quote_numeric_group_choices

    with initialize_config_module(config_module="distillkit.conf", version_base="1.3"):
        return hydra_compose(config_name, overrides=quote_numeric_group_choices(overrides))


@pytest.mark.parametrize(
    "setting",
    [
        ["method=idm", "dataset=cifar100", "ipc=10"],
        ["method=dc", "dataset=cifar10", "ipc=1"],
        ["method=mtt", "dataset=cifar10", "ipc=50"],
    ],
)
def test_continual_composes_the_same_published_values_as_distillkit(setting):
    main, continual = compose("config", setting), compose("continual", setting)
    assert continual.method == main.method
    assert continual.eval == main.eval
    assert continual.runtime == main.runtime
    if "method=idm" in setting:
        assert continual.method.ce_weight == 0.1  # conf/tuned/idm_cifar100_ipc10.yaml


def test_continual_checks_its_config_as_distillkit_does(tmp_path, capsys):
    from distillkit.cli.continual import main as continual

    with pytest.raises(SystemExit) as info:
        continual(["method.lr_img=-1", "device=cpu", f"hydra.run.dir={tmp_path}"])
    assert info.value.code == 2
    assert "method.lr_img must be > 0" in capsys.readouterr().err
