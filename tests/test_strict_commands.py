"""A typo never runs, in the other Hydra commands either: distillkit-experts, distillkit-pretrain,
distillkit-unequalness and distillkit-cam read every key of their composed config with one typed
settings class, so a misspelt key at any level (a command-line override, a `++` addition, a YAML
file) is one line naming it and the nearest valid key, exit 2, before any data is loaded."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from helpers import REPO, run_command

from distillkit.errors import ConfigError

#: Each command's settings class, by its module in distillkit.cli (and conf/<name>.yaml).
COMMANDS = {
    "experts": "ExpertsConfig",
    "pretrain": "PretrainConfig",
    "unequalness": "UnequalnessConfig",
    "cam": "CamConfig",
}
#: Per command: a misspelt top-level key and a misspelt key of one of its own blocks.
TYPOS = {
    "experts": [
        ("++epochss=3", "epochss: unknown key (did you mean epochs?)"),
        ("++gsam.rhoo=0.1", "gsam.rhoo: unknown key (did you mean rho?)"),
        ("++dsa.strategyy=crop", "dsa.strategyy: unknown key (did you mean strategy?)"),
    ],
    "pretrain": [
        ("++progres=false", "progres: unknown key (did you mean progress?)"),
        ("++pool.epochss=3", "pool.epochss: unknown key (did you mean epochs?)"),
    ],
    "unequalness": [
        ("++num_net=1", "num_net: unknown key (did you mean num_nets?)"),
        ("++dsa.strategyy=crop", "dsa.strategyy: unknown key (did you mean strategy?)"),
    ],
    "cam": [
        ("++fractoin=0.2", "fractoin: unknown key (did you mean fraction?)"),
        ("++train.epochss=3", "train.epochss: unknown key (did you mean epochs?)"),
    ],
}
#: Misspelt keys of the blocks every command composes or may add (`+runtime=`, `+logger=`).
SHARED_TYPOS = [
    ("++model.widht=8", "model.widht: unknown key (did you mean width?)"),
    ("++dataset.image_sise=8", "dataset.image_sise: unknown key (did you mean image_size?)"),
    ("++sed=1", "sed: unknown key (did you mean seed?)"),
    ("++runtime.precison=bf16", "runtime.precison: unknown key (did you mean precision?)"),
]
STORE_TYPOS = [
    ("++logger.wandb.projet=x", "logger.wandb.projet: unknown key (did you mean project?)")
]


def settings_class(command: str) -> type:
    module = __import__(f"distillkit.cli.{command}", fromlist=[COMMANDS[command]])
    return getattr(module, COMMANDS[command])


def compose_command(command: str, overrides: list[str]):
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="distillkit.conf", version_base="1.3"):
        return compose(command, overrides=overrides)


def validate(command: str, overrides: list[str]):
    """The command's settings of its composed config (what its job reads before any data)."""
    from distillkit.config import as_dict

    return settings_class(command).from_config(as_dict(compose_command(command, overrides)))


def no_data(*args, **kwargs):
    raise AssertionError("data was loaded before the config was checked")


def run_in_process(command: str, args: list[str], tmp_path: Path, monkeypatch) -> None:
    """`main(args)` of distillkit.cli.<command> in this process, in `tmp_path`."""
    module = __import__(f"distillkit.cli.{command}", fromlist=["main"])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # run_hydra_app rewrites it
    module.main([*args, f"hydra.run.dir={tmp_path / 'run'}"])


# -- the commands as a user runs them --------------------------------------------------------------
@pytest.mark.parametrize(
    "command, override, line",
    [(c, *TYPOS[c][0]) for c in COMMANDS] + [(c, *SHARED_TYPOS[0]) for c in COMMANDS],
)
def test_a_misspelt_key_fails_with_one_line_and_exit_2(command, override, line, tmp_path):
    """On CIFAR-10 with an empty data root: a run that got as far as loading data would fail
    with a missing-dataset error instead of the unknown key."""
    empty = tmp_path / "no-data"
    empty.mkdir()
    args = ["dataset=cifar10", f"dataset.root={empty}", "device=cpu", override]
    done = run_command(command, *args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [f"distillkit: error: {line}"]
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.parametrize(
    "command, override, line",
    [(c, o, line) for c in COMMANDS for o, line in TYPOS[c][1:] + SHARED_TYPOS[1:]]
    + [(c, o, line) for c in ("experts", "pretrain") for o, line in STORE_TYPOS],
)
def test_every_block_refuses_a_key_it_does_not_read(
    command, override, line, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr("distillkit.assembly.load_from_config", no_data)
    extra = ["+runtime=default"] if override.startswith("++runtime.") else []
    extra += ["+logger=wandb"] if override.startswith("++logger.") else []
    with pytest.raises(SystemExit) as exit_info:
        run_in_process(command, ["device=cpu", *extra, override], tmp_path, monkeypatch)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"distillkit: error: {line}"]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_misspelt_key_in_a_yaml_file_fails_with_one_line(command, tmp_path, monkeypatch, capsys):
    """A dataset file found on Hydra's search path with a typo, and a preset that adds a
    top-level key nothing reads: both refused as a command-line typo is."""
    search = tmp_path / "search"
    (search / "dataset").mkdir(parents=True)
    (search / "extra").mkdir()
    (search / "dataset" / "tiny.yaml").write_text(
        "name: digits\ndsa_strategy: color_crop\nimage_sise: 8\n"
    )
    (search / "extra" / "typo.yaml").write_text("# @package _global_\ndevise: cpu\n")
    monkeypatch.setattr("distillkit.assembly.load_from_config", no_data)
    path = f"hydra.searchpath=[file://{search}]"
    cases = [
        (["dataset=tiny"], "dataset.image_sise: unknown key (did you mean image_size?)"),
        (["+extra=typo"], "devise: unknown key (did you mean device?)"),
    ]
    for args, line in cases:
        with pytest.raises(SystemExit) as exit_info:
            run_in_process(command, [path, *args], tmp_path, monkeypatch)
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.strip().splitlines() == [f"distillkit: error: {line}"]


TINY_RUNS = {
    "experts": ["num_experts=1", "epochs=1", "+logger=local", "buffer_dir=buffer"],
    "pretrain": ["model=convnet", "pool.size=1", "pool.epochs=1", "+logger=local", "pool.dir=pool"],
    "unequalness": ["sizes=[1,2]", "distances=[dm]", "num_nets=1", "repeats=1"],
    "cam": ["train.epochs=1"],
}
OUTPUTS = {
    "experts": "buffer/experts_00000.pt",
    "pretrain": "pool/pool_00000.pt",
    "unequalness": "run/unequalness.csv",
    "cam": "run/cam.json",
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_correct_tiny_run_still_works(command, tmp_path, monkeypatch):
    """Digits at 8x8, width 8, one epoch (and `+logger=local` for the stores: a logger block
    they read)."""
    tiny = ["dataset.image_size=8", "model.width=8", "device=cpu"]
    tiny += [] if command == "cam" else ["progress=false"]
    run_in_process(command, [*tiny, *TINY_RUNS[command]], tmp_path, monkeypatch)
    assert (tmp_path / OUTPUTS[command]).is_file()


# -- the shipped configs ---------------------------------------------------------------------------
def group_choices(group: str) -> list[str]:
    return sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_shipped_dataset_and_model_validates_with_every_command(command):
    for dataset in group_choices("dataset"):
        validate(command, [f"dataset={dataset}"])
    for model in group_choices("model"):
        validate(command, [f"model={model}"])
    for runtime in group_choices("runtime"):
        validate(command, [f"+runtime={runtime}"])


@pytest.mark.parametrize("command", ["experts", "pretrain"])
def test_the_stores_read_every_shipped_logger(command):
    for logger in group_choices("logger"):
        assert validate(command, [f"+logger={logger}"]).logger["wandb"]


def test_the_table_runner_prerequisites_and_figures_validate(tmp_path):
    """The distillkit-experts / distillkit-pretrain commands the tables runner builds (smoke and
    paper scale) and the unequalness figure's series hold only keys the commands read."""
    from distillkit.tables.figure import series_argv
    from distillkit.tables.plan import make_plan, paper_prerequisites
    from distillkit.tables.spec import load_table

    tables = REPO / "experiments" / "tables"
    checked = 0
    for path in sorted(tables.glob("*.yaml")):
        spec = load_table(path.stem, tables)
        if spec.kind == "figure":
            for scale in ("smoke", "paper"):
                for series in spec.series:
                    argv = series_argv(spec, series, scale, tmp_path / series.name)
                    validate("unequalness", [a for a in argv if not a.startswith("hydra.")])
                    checked += 1
            continue
        prerequisites = list(make_plan(spec, "smoke", tmp_path).prerequisites)
        if path.stem == "crossarch":
            prerequisites += paper_prerequisites(make_plan(spec, "paper", tmp_path))
        for prerequisite in prerequisites:
            name, *args = prerequisite.command.split()
            command = name.removeprefix("distillkit-")
            validate(command, [a for a in args if not a.startswith("hydra.")])
            checked += 1
    assert checked >= 10


# -- the settings classes --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "command, override, message",
    [
        ("experts", "optimizer=adam", "optimizer must be one of sgd, gsam, got 'adam'"),
        ("experts", "gsam.alpha=-1", "gsam.alpha must be >= 0, got -1.0"),
        ("experts", "epochs=1.5", "epochs must be an integer, got 1.5"),
        ("experts", "dsa.always_flip=1", "dsa.always_flip must be true or false, got 1"),
        ("pretrain", "pool.size=0", "pool.size and members_per_shard must be >= 1, got 0, 10"),
        ("pretrain", "pool.lr=0", "pool.lr must be > 0, got 0.0"),
        ("unequalness", "distances=[dm,dd]", "unknown unequalness distance(s) ['dd']"),
        ("unequalness", "sizes=5", "sizes must be a list, got sizes=5"),
        ("unequalness", "sizes=[1,0]", "sizes must hold positive integers, got 0"),
        ("unequalness", "num_nets=0", "num_nets must be >= 1, got 0"),
        ("cam", "split=val", "split must be test or train, got 'val'"),
        ("cam", "fraction=2", "fraction must be <= 1, got 2.0"),
        ("cam", "dsa.strategy=crop_blur", "unknown DSA families ['blur']"),
    ],
)
def test_bad_values_are_one_line_before_any_data(command, override, message):
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        validate(command, [override])


def test_a_block_given_as_a_value_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"^gsam must be a mapping \(gsam\.adaptive, gsam\.alpha"):
        settings_class("experts").from_config({"gsam": 0.1})
    with pytest.raises(ConfigError, match="write dsa.enabled=false instead of dsa=false"):
        settings_class("experts").from_config({"dsa": False})
    with pytest.raises(ConfigError, match=r"^model must be a mapping of options, got model=3"):
        settings_class("cam").from_config({"model": 3})


def test_the_shipped_yamls_set_exactly_the_declared_keys():
    """The shipped YAMLs set exactly the keys the settings classes declare (no key a class
    declares is missing from its YAML, so its defaults never silently differ)."""
    cases = {
        "experts": {"gsam": "GsamOptions", "dsa": "ExpertsDSA"},
        "pretrain": {"pool": "PoolOptions"},
        "cam": {"train": "CamTraining"},
    }
    for command in COMMANDS:
        cfg = compose_command(command, [])
        cls = settings_class(command)
        optional = {"runtime", "logger"}  # added by +runtime=..., +logger=...
        assert set(cfg) == set(cls.keys()) - optional, command
        module = sys.modules[cls.__module__]
        for block, block_cls in cases.get(command, {}).items():
            assert set(cfg[block]) == getattr(module, block_cls).keys(), f"{command}.{block}"
