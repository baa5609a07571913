"""The wheel ships every subpackage, the Hydra configs, the paper tables and the ipc plugin."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata

from helpers import REPO
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

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


def test_package_data_globs_ship_every_config_and_table():
    """What a wheel holds of distillkit.conf and distillkit.tables.specs is what the package-data
    globs match (setuptools globs, `**` recursive). An editable install reads the checkout
    itself, so only the globs tell what a wheel would miss: every YAML of conf/ (every config
    group, nested ones too) and of experiments/tables/ must match one."""
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    for package in ("distillkit.conf", "distillkit.tables.specs"):
        root = REPO / tool["package-dir"][package]
        every = {p.relative_to(root).as_posix() for p in root.rglob("*.yaml")}
        matched = {
            p.relative_to(root).as_posix()
            for pattern in tool["package-data"][package]
            for p in root.glob(pattern)
            if p.is_file()
        }
        assert len(every) > 1 and every - matched == set(), package


def test_license_matches_the_declared_one():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for name in project["license-files"]:
        first = (REPO / name).read_text().splitlines()[0]
        assert first == f"{project['license']} License", (name, first)


def floor(requirement: Requirement) -> Version | None:
    floors = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==")]
    return max(floors, default=None)


def test_dependency_ranges_admit_the_tested_set():
    """Every declared range holds the installed version and its constraints.txt pin (the set
    `make install` installs and the tests run on): a floor above it or a cap below it fails."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        name, _, version = line.split("#")[0].strip().partition("==")
        if version:
            pins[canonicalize_name(name)] = Version(version)
    assert project["dependencies"]
    for line in project["dependencies"]:
        requirement = Requirement(line)
        installed = Version(metadata.version(requirement.name))
        assert requirement.specifier.contains(installed, prereleases=True), (line, installed)
        pin = pins.get(canonicalize_name(requirement.name))
        assert pin is not None, f"{requirement.name} has no pin in constraints.txt"
        assert requirement.specifier.contains(pin, prereleases=True), (line, pin)


#: What distillkit's code uses that sets a floor: (package, pattern in distillkit/, the first
#: release that has it).
NEEDS = [("wandb", r"reinit\s*=\s*[\"']finish_previous[\"']", Version("0.19.10"))]


def test_floors_are_as_high_as_the_code_needs():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(d) for d in project["dependencies"]]
    declared = {canonicalize_name(r.name): r for r in requirements}
    sources = [p.read_text() for p in (REPO / "distillkit").rglob("*.py")]
    for package, pattern, since in NEEDS:
        if any(re.search(pattern, source) for source in sources):
            lowest = floor(declared[canonicalize_name(package)])
            assert lowest is not None and lowest >= since, (package, pattern, lowest)


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
