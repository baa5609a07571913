"""The wheel ships every subpackage and the Hydra configs."""

from __future__ import annotations

import tomllib
from importlib import resources

from conftest import REPO


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    on_disk = {
        ".".join(p.parent.relative_to(REPO).parts)
        for p in (REPO / "distillkit").rglob("__init__.py")
    }
    assert on_disk | {"distillkit.conf"} == listed


def test_configs_are_importable_as_package_data():
    assert (resources.files("distillkit.conf") / "config.yaml").is_file()
