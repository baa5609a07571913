"""The wheel ships every subpackage, the Hydra configs, the paper tables and the ipc plugin."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from importlib import resources

from conftest import REPO

#: Packages whose files live outside distillkit/ (package-dir in pyproject.toml).
MAPPED = {"distillkit.conf", "distillkit.tables.specs", "hydra_plugins.distillkit_ipc"}


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    on_disk = {
        ".".join(p.parent.relative_to(REPO).parts)
        for p in (REPO / "distillkit").rglob("__init__.py")
    }
    assert on_disk | MAPPED == listed


def test_configs_are_importable_as_package_data():
    assert (resources.files("distillkit.conf") / "config.yaml").is_file()


def test_license_and_honest_floors():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert (REPO / "LICENSE").read_text().startswith("MIT License")
    assert "wandb>=0.19.10" in project["dependencies"]  # reinit="finish_previous"


def test_wheel_ships_tables_and_configs_and_reproduce_table_finds_them(tmp_path):
    """Build the wheel (no network: no build isolation), install it into a bare folder and run
    the tables runner from a directory that is not a checkout."""
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(REPO)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("distillkit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    tables = {p.name for p in (REPO / "experiments" / "tables").glob("*.yaml")}
    assert tables and {f"distillkit/tables/specs/{t}" for t in tables} <= names
    assert {"distillkit/conf/config.yaml", "distillkit/conf/hparams_search/optuna.yaml"} <= names
    assert "hydra_plugins/distillkit_ipc/ipc_source.py" in names
    assert any(n.endswith("licenses/LICENSE") for n in names)
    site = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
         str(wheel)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("DISTILLKIT_TABLES", None)
    code = "import sys; from distillkit.tables.reproduce import main; sys.exit(main(sys.argv[1:]))"
    run = subprocess.run(
        [sys.executable, "-c", code, "--help"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert str(site) in run.stdout and "fyi" in run.stdout  # found inside the installed wheel
    dry = subprocess.run(
        [sys.executable, "-c", code, "table=fyi", "scale=smoke", "dry_run=true"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert "unknown table" not in dry.stderr, dry.stderr
    assert "jobs done" in dry.stdout, dry.stdout + dry.stderr
    ipc = subprocess.run(  # the ipc plugin comes with the wheel: any positive ipc composes
        [sys.executable, "-c", "from distillkit.cli.distill import main; main()",
         "--cfg", "job", "ipc=7"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert ipc.returncode == 0 and "ipc: 7" in ipc.stdout, ipc.stderr
