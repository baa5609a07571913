"""A typo never runs: every key of a composed run config is one some component reads, whether
it came from the command line, a `++` addition, a tuned file or a preset. Refused with one line
naming the key and the nearest valid one, exit 2, before any data is loaded."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import compose_config

from distillkit.config import check_known_keys, validate_config
from distillkit.errors import ConfigError

DISTILLKIT = str(Path(sys.executable).with_name("distillkit"))


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """distillkit on CIFAR-10 with an empty data root: a run that got as far as loading data
    would fail with a missing-dataset error instead of the unknown key."""
    empty = cwd / "no-data"
    empty.mkdir(exist_ok=True)
    argv = [DISTILLKIT, "dataset=cifar10", f"dataset.root={empty}", "ipc=1", "progress=false"]
    argv += [f"hydra.run.dir={cwd / 'run'}", *args]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "override, line",
    [
        ("++method.batch_reall=64", "method.batch_reall: unknown key (did you mean batch_real?)"),
        ("++eval.epochss=3", "eval.epochss: unknown key (did you mean epochs?)"),
    ],
)
def test_a_misspelt_addition_fails_with_one_line(override, line, tmp_path):
    done = run_cli(override, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [f"distillkit: error: {line}"]
    assert not (tmp_path / "run" / "results.json").exists()


def test_a_misspelt_key_in_a_tuned_file_fails_with_one_line(tmp_path):
    """A tuned file found on Hydra's search path (as conf/tuned/ files are) with a typo."""
    tuned = tmp_path / "search" / "tuned"
    tuned.mkdir(parents=True)
    (tuned / "dm_cifar10_ipc1.yaml").write_text("# @package _global_\nmethod:\n  lr_imgg: 2\n")
    done = run_cli(f"hydra.searchpath=[file://{tmp_path / 'search'}]", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "distillkit: error: method.lr_imgg: unknown key (did you mean lr_img?)"
    ]


@pytest.mark.parametrize(
    "override, path",
    [
        ("++checkpoint.evrey=5", "checkpoint.evrey"),
        ("++images.flip=false", "images.flip"),
        ("++runtime.precison=bf16", "runtime.precison"),
        ("++dsa.strategyy=crop", "dsa.strategyy"),
        ("++model.widht=8", "model.widht"),
        ("++dataset.train_limt=5", "dataset.train_limt"),
        ("++logger.wandb.projet=x", "logger.wandb.projet"),
        ("++unequalness.evry=3", "unequalness.evry"),
        ("++synthetic.int=noise", "synthetic.int"),
        ("++sed=3", "sed"),
    ],
)
def test_every_block_refuses_a_key_it_does_not_read(override, path):
    cfg = compose_config([override])
    with pytest.raises(ConfigError, match="^" + re.escape(f"{path}: unknown key (")):
        check_known_keys(cfg)


def test_a_regularizer_option_is_checked_against_its_settings():
    cfg = compose_config(["regularizer=iid", "++regularizer.cc.wieght=0.1"])
    with pytest.raises(ConfigError, match=r"^regularizer\.cc\.wieght: unknown key \(did you mean"):
        check_known_keys(cfg)


@pytest.mark.parametrize("method", ["dc", "dsa", "dm", "idm", "idc", "mtt", "ftd", "random"])
@pytest.mark.parametrize("dataset", ["digits", "cifar10", "cifar100", "tinyimagenet"])
@pytest.mark.parametrize("ipc", [1, 10, 50])
def test_every_shipped_method_with_its_tuned_files_validates(method, dataset, ipc):
    """Every method YAML, with the tuned file of each setting it has, holds only known keys."""
    cfg = compose_config([f"method={method}", f"dataset={dataset}", f"ipc={ipc}"])
    validate_config(cfg)


@pytest.mark.parametrize("method", ["random", "dm"])
@pytest.mark.parametrize("ipc", [1, 10])
def test_make_demo_jobs_validate_and_keep_the_demo_settings(method, ipc):
    """`make demo` sweeps experiment=demo over method=random,dm: a preset shared by methods may
    set only keys each reads, so DM's demo batch size comes from experiment_method/demo_dm."""
    makefile = (Path(__file__).parents[1] / "Makefile").read_text()
    assert "experiment=demo method=random,dm ipc=1,10" in makefile
    cfg = compose_config(["experiment=demo", f"method={method}", f"ipc={ipc}"])
    validate_config(cfg)
    assert (cfg.dataset.name, cfg.method.iterations, cfg.eval.num_models) == ("digits", 300, 3)
    if method == "dm":
        assert (cfg.method.batch_real, cfg.method.dsa) == (64, False)
    assert compose_config([f"method={method}"]).method.get("batch_real") != 64
