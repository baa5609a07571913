"""Paper tables: definitions, the composition of every cell, the renderer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import FTD_PUBLISHED, MTT_PUBLISHED

from distillkit.methods import method_name
from distillkit.tables.plan import compose_jobs, make_plan
from distillkit.tables.render import (
    CellResult,
    collect,
    format_cell,
    format_delta,
    format_mean_std,
    table_rows,
    to_csv,
    to_markdown,
)
from distillkit.tables.reproduce import Options, hydra_overrides, parse_args
from distillkit.tables.spec import (
    Published,
    TableError,
    available_tables,
    load_table,
    parse_published,
)

TABLES = Path(__file__).resolve().parents[1] / "experiments" / "tables"
GRID_TABLES = [n for n in available_tables(TABLES) if load_table(n, TABLES).kind == "grid"]
#: (table, row): one test each, so no single test composes more than a dozen configs.
TABLE_ROWS = [(n, r.name) for n in GRID_TABLES for r in load_table(n, TABLES).rows]

# ---------------------------------------------------------------------------------------------
# Published per-setting values, restated from ../shared/docs/methods.md (independently of
# conf/), so the test fails if a table cell does not compose to them.
# ---------------------------------------------------------------------------------------------
#: IDM: ce_weight and the extras (batch_real, net_generate_interval, model_train_steps).
IDM = {
    ("cifar10", 1): (0.5, 5000, 5, 10),
    ("cifar10", 10): (0.5, 256, 30, 10),
    ("cifar10", 50): (0.1, 256, 30, 10),
    ("cifar100", 1): (0.5, 5000, 5, 10),
    ("cifar100", 10): (0.1, 256, 30, 50),
    ("cifar100", 50): (0.1, 256, 30, 40),
    ("tinyimagenet", 1): (0.5, 256, 30, 10),
    ("tinyimagenet", 10): (0.5, 256, 30, 10),
    ("tinyimagenet", 50): (0.8, 256, 30, 50),
}
#: IDM's accuracy reset = its --eval_interval per setting (uitrbn/IDM command.txt).
IDM_RESET = {
    ("cifar10", 1): 100, ("cifar10", 10): 100, ("cifar10", 50): 500,
    ("cifar100", 1): 100, ("cifar100", 10): 100, ("cifar100", 50): 500,
    ("tinyimagenet", 1): 100, ("tinyimagenet", 10): 500, ("tinyimagenet", 50): 1000,
}  # fmt: skip
#: DC/DSA (outer_loop, inner_loop) by IPC.
LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}
#: IID weights per base method: (cc, cm).
IID = {"dm": (0.05, 0.01), "idm": (0.01, 0.03)}


def check_published(
    cfg,
    method: str,
    regularizers: tuple[str, ...],
    dataset: str,
    ipc: int,
    fyi_protocol: bool = False,
):
    """Every published value that applies to (method, add-ons, dataset, ipc); `fyi_protocol`:
    the FYI table's default protocol (FYI's always-flip DSA and its CIFAR-100 IPC 50 loops)."""
    m = cfg.method
    assert (method_name(m), cfg.dataset.name, cfg.ipc) == (method, dataset, ipc)
    keys = {k for r in regularizers for k in (("cc", "cm") if r == "iid" else (r,))}
    assert sorted(cfg.regularizer or {}) == sorted(keys)
    # DM and IDM on Tiny-ImageNet: the references' `ConvNet` is depth 3 at any size
    # (DatasetCondensation utils.py and uitrbn/IDM dc_utils.py get_default_convnet_setting).
    depth = 3 if method in ("dm", "idm") and dataset == "tinyimagenet" else None
    assert (cfg.model.name, cfg.model.width, cfg.model.depth) == ("ConvNet", 128, depth)
    # DC's reference initialises from noise (DatasetCondensation main.py --init), the others
    # from real images (their readmes' --init real).
    assert cfg.synthetic.init == ("noise" if method == "dc" else "real")
    assert cfg.model.norm == "instancenorm" and cfg.model.pool == "avgpool"
    digits_like = dataset in ("svhn", "mnist", "fashion_mnist")
    assert ("flip" in cfg.dataset.dsa_strategy) is not digits_like
    ev = cfg.eval
    idc = method == "idc"  # IDC's own protocol (argument.py, train.py): batch 64, CutMix
    batch = 64 if idc else 256
    assert (ev.lr, ev.momentum, ev.weight_decay, ev.batch_size) == (0.01, 0.9, 0.0005, batch)
    # The DC/MTT references train range(epochs + 1); IDC's train.py trains `epochs`.
    assert ev.lr_decay_at == 0.5 and ev.extra_epoch is (not idc)
    assert ev.always_flip is fyi_protocol
    if idc:
        # IDC never reads `dsa`: its own DiffAug composition in matching, network updates and
        # evaluation (misc/augment.py; condense.py ~356-369; train.py ~122).
        assert m.augment_mode == "IDC" and ev.dsa_mode == "IDC"
        assert (m.matching_strategy, m.net_strategy) == ("color_crop_cutout", "color_crop")
        assert ev.dsa_strategy == "color_crop_flip_scale_rotate"
        assert (ev.cutmix_p, ev.cutmix_beta, ev.lr_gamma) == (0.5, 1.0, 0.2)
        assert list(ev.lr_milestones) == [0.6667, 0.8334]
        assert (ev.augment, ev.dsa, ev.epochs) == ("dsa", True, 1000)
    elif method == "dc":  # get_daparam: no augmentation, 300 epochs (MNIST: its own, 1000)
        assert (ev.augment, ev.epochs) == ("dc", 1000 if dataset == "mnist" else 300)
    else:
        assert (ev.augment, ev.dsa, ev.epochs) == ("dsa", True, 1000)
    if not idc:
        assert cfg.dsa.always_flip is fyi_protocol
    if method == "dm":
        assert (m.iterations, m.lr_img, m.momentum, m.batch_real, m.dsa) == (
            20000,
            1.0,
            0.5,
            256,
            True,
        )
    elif method in ("dc", "dsa"):
        assert (m.iterations, m.lr_img, m.momentum, m.lr_net, m.batch_real) == (
            1000,
            0.1,
            0.5,
            0.01,
            256,
        )
        assert m.dsa is (method == "dsa")
        assert tuple(m.loops[ipc]) == LOOPS[ipc]
        if fyi_protocol and (dataset, ipc) == ("cifar100", 50):  # FYI DC_DSA_DM/main.py
            assert (m.outer_loop, m.inner_loop) == (10, 10)
        else:
            assert m.outer_loop is None and m.inner_loop is None
    elif method == "idm":
        assert (m.iterations, m.lr_img, m.momentum, m.factor, m.dsa) == (20000, 0.2, 0.5, 2, True)
        assert (m.initial_nets, m.net_num, m.nets_trained_per_iteration, m.batch_train) == (
            3,
            100,
            2,
            256,
        )
        assert (m.lr_net, m.net_momentum, m.net_weight_decay) == (0.01, 0.9, 0.0005)
        if (dataset, ipc) in IDM:
            assert (m.ce_weight, m.batch_real, m.net_generate_interval, m.model_train_steps) == (
                IDM[(dataset, ipc)]
            )
            assert m.accuracy_reset_interval == IDM_RESET[(dataset, ipc)]
        # IID's IDM + IID code resets only at eval_it_pool = [2000, 5000, 10000, 20000]
        # (VincenDen/IID IDM+ours/IDM_cifar10_IID.py); IDM's own code at every evaluation.
        reset_at = [2000, 5000, 10000, 20000] if "iid" in regularizers else None
        assert (list(m.accuracy_reset_at) if m.accuracy_reset_at else None) == reset_at
    elif method == "mtt":
        # MTT 5000 iterations; FYI's MTT + FYI 10000 (FYI MTT/distill.py --Iteration).
        iterations = 10000 if "fyi" in regularizers else 5000
        assert (m.iterations, m.momentum, m.dsa) == (iterations, 0.5, True)
        # Evaluated every 100 (MTT from the start, FYI from 5000 on): the best is reported.
        assert list(ev.at) == list(
            range(iterations // 2 if iterations > 5000 else 100, iterations + 1, 100)
        )
        syn, ep, start, lr_img, lr_lr, lr_t, zca, batch = MTT_PUBLISHED[(dataset, ipc)]
        assert (m.syn_steps, m.expert_epochs, m.max_start_epoch) == (syn, ep, start)
        assert (m.lr_img, m.lr_lr, m.lr_teacher) == pytest.approx((lr_img, lr_lr, lr_t))
        assert (bool(cfg.dataset.zca), m.batch_syn) == (zca, batch)
    elif method == "idc":
        assert (m.iterations, m.inner_loop, m.metric, m.factor, m.dsa) == (
            2000,
            100,
            "mse",
            2,
            False,
        )
        assert (m.lr_img, m.lr_img_per_ipc, m.momentum, m.batch_real) == (5e-3, True, 0.5, 64)
        assert (m.n_data, m.net_batch, m.lr_net, m.net_cutmix_p) == (2000, 64, 0.01, 0.5)
    elif method == "ftd":
        assert (m.iterations, m.momentum, m.dsa) == (5000, 0.5, True)
        syn, ep, start, batch_syn, *rates = FTD_PUBLISHED[(dataset, ipc)]
        assert (m.syn_steps, m.expert_epochs, m.max_start_epoch, m.batch_syn) == (
            syn,
            ep,
            start,
            batch_syn,
        )
        got = (m.lr_img, m.lr_lr, m.lr_teacher, m.gsam_alpha, m.ema_decay)
        assert got == pytest.approx(tuple(rates))
        assert bool(cfg.dataset.zca) is dataset.startswith("cifar")
    if "iid" in regularizers:  # IID = class centralisation (cc) + covariance matching (cm)
        cc, cm = cfg.regularizer.cc.weight, cfg.regularizer.cm.weight
        assert (cc[method], cm[method]) == IID[method]
        assert cfg.regularizer.cc.form == "linear"
    if "fyi" in regularizers:
        assert cfg.regularizer.fyi.flip_real is False


#: Composed configs by override list: a cell shared by several tables is composed once.
_COMPOSED: dict[tuple[str, ...], object] = {}


def composed(jobs: list[tuple[str, ...]]) -> list:
    todo = [j for j in dict.fromkeys(jobs) if j not in _COMPOSED]
    _COMPOSED.update(zip(todo, compose_jobs(todo), strict=True))
    return [_COMPOSED[j] for j in jobs]


@pytest.mark.parametrize(("name", "row_name"), TABLE_ROWS)
def test_every_cell_composes_to_the_published_settings(name, row_name, tmp_path):
    spec = load_table(name, TABLES)
    plan = make_plan(spec, "paper", tmp_path, distillations=2)
    assert len(plan.jobs) == 2 * len(spec.rows) * len(spec.datasets) * len(spec.ipcs)
    # Seeds differ only in `seed=`: compose seed 0 of every cell of the row.
    jobs = [j for j in plan.jobs if j.row == row_name and j.seed == 0]
    assert len(jobs) == len(spec.datasets) * len(spec.ipcs)
    row = spec.row(row_name)
    for job, cfg in zip(jobs, composed([j.overrides for j in jobs]), strict=True):
        fyi_protocol = plan.protocol is not None and plan.protocol.name == "fyi"
        check_published(cfg, row.method, row.regularizers, job.dataset, job.ipc, fyi_protocol)
        assert cfg.seed == 0
        assert cfg.eval.num_models == spec.num_models
        assert list(cfg.eval.models) == list(spec.models or ["ConvNet"])


def test_required_tables_are_defined():
    fyi = load_table("fyi", TABLES)
    assert {r.method for r in fyi.rows} == {"dc", "dsa", "dm", "idc", "idm", "mtt", "ftd"}
    assert len(fyi.rows) == 14 and fyi.datasets == ("cifar10", "cifar100")
    for row in fyi.rows:  # every base method with and without FYI
        assert row.regularizers in ((), ("fyi",))
    assert fyi.ipcs == (1, 10, 50)
    iid = load_table("iid", TABLES)
    assert set(iid.datasets) == {"svhn", "cifar10", "cifar100", "tinyimagenet"}
    assert {r.regularizers for r in iid.rows} == {(), ("iid",)}
    combined = load_table("combined", TABLES)
    assert ("fyi", "iid") in {r.regularizers for r in combined.rows}
    cross = load_table("crossarch", TABLES)
    assert cross.models == ("ConvNet", "AlexNet", "VGG11", "ResNet18")
    assert load_table("unequalness", TABLES).kind == "figure"


def test_published_numbers_match_the_reference_sheet():
    fyi = load_table("fyi", TABLES)
    assert fyi.paper("dm", "cifar10", 10) == Published(48.9, 0.6)
    assert fyi.paper("dc", "cifar100", 50) is None  # "–" in the sheet: never guessed
    assert fyi.paper("dm_fyi", "cifar10", 1) is None
    assert fyi.paper("idc", "cifar10", 10) == Published(67.5)  # IDC's README, no std
    assert fyi.paper("idc", "cifar100", 1) is None
    assert fyi.paper("ftd", "cifar100", 50) == Published(50.7, 0.3)  # FTD's README
    iid = load_table("iid", TABLES)
    assert iid.paper("idm_iid", "cifar100", 1) == Published(24.6, 0.1)
    assert iid.paper("dm", "svhn", 10) is None


def test_unknown_table_lists_the_available_ones():
    with pytest.raises(TableError, match="unknown table 'nope'.*available: .*fyi"):
        load_table("nope", TABLES)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("28.3±0.5", Published(28.3, 0.5)),
        ("28.3 ± 0.5", Published(28.3, 0.5)),
        ("28.3+-0.5", Published(28.3, 0.5)),
        (67.0, Published(67.0)),
        ("–", None),
        (None, None),
    ],
)
def test_parse_published(text, expected):
    assert parse_published(text) == expected


def test_parse_published_refuses_garbage():
    with pytest.raises(ValueError, match="cannot read"):
        parse_published("about 40")


# --- renderer --------------------------------------------------------------------------------


def test_mean_std_and_delta_formatting():
    assert format_mean_std(48.94, 0.55) == "48.9 ± 0.6"
    assert format_delta(50.0, Published(48.9, 0.6)) == "+1.1"
    assert format_delta(47.84, Published(48.9, 0.6)) == "−1.1"
    assert format_delta(48.9, Published(48.9)) == "0.0"
    assert format_delta(None, Published(48.9)) == "–"
    assert format_delta(48.9, None) == "–"


def test_cell_status_and_text():
    assert format_cell(CellResult(2)) == "missing"
    assert format_cell(CellResult(2, errors=["ConfigError"])) == "failed (ConfigError)"
    partial = CellResult(2, runs=[40.0, 42.0], done=1)
    assert partial.status == "partial" and format_cell(partial) == "41.0 ± 1.0 (1/2)"
    full = CellResult(2, runs=[40.0, 42.0, 41.0, 41.0], done=2)
    assert full.status == "ok" and format_cell(full) == f"41.0 ± {full.std:.1f}"


def _tiny_table(folder: Path, body: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.yaml").write_text(body)


TINY_TABLE = """
title: Tiny
datasets: [cifar10]
ipcs: [1, 10]
distillations: 2
rows:
  - {name: dm, label: DM, method: dm}
  - {name: dm_fyi, label: DM + FYI, method: dm, regularizers: [fyi]}
published:
  dm: {cifar10: {1: 26.0±0.8, 10: 48.9±0.6}}
"""


def _write_result(directory: Path, runs: list[float]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    acc = {"mean": sum(runs) / len(runs), "std": 0.0, "runs": runs, "n": len(runs)}
    record = {"headline": {"model": "ConvNet"}, "accuracy": {"ConvNet": acc}}
    (directory / "results.json").write_text(json.dumps(record))


def test_render_ours_beside_paper_with_missing_and_failed_cells(tmp_path):
    _tiny_table(tmp_path / "tables", TINY_TABLE)
    spec = load_table("tiny", tmp_path / "tables")
    plan = make_plan(spec, "paper", tmp_path / "results")
    root = plan.root
    _write_result(root / "dm/cifar10_ipc1/seed0", [27.0, 29.0])
    _write_result(root / "dm/cifar10_ipc1/seed1", [27.0, 29.0])
    _write_result(root / "dm/cifar10_ipc10/seed0", [50.0])  # 1 of 2 distillations
    failed = root / "dm_fyi/cifar10_ipc1/seed0"
    failed.mkdir(parents=True)
    (failed / "failed.json").write_text(json.dumps({"status": "failed", "error": "ConfigError"}))
    cells = collect(plan)
    assert cells[("dm", "cifar10", 1, None)].runs == [27.0, 29.0, 27.0, 29.0]
    md = to_markdown(spec, cells, "paper")
    lines = {line.split(" | ")[0]: line for line in md.splitlines() if line.startswith("| DM")}
    assert lines["| DM"] == (
        "| DM | 28.0 ± 1.0 | 26.0 ± 0.8 | +2.0 | 50.0 ± 0.0 (1/2) | 48.9 ± 0.6 | +1.1 |"
    )
    assert lines["| DM + FYI"] == "| DM + FYI | failed (ConfigError) | – | – | missing | – | – |"
    rows = table_rows(spec, cells, "paper")
    first = rows[0]
    assert (first["row"], first["ipc"], first["status"], first["n"]) == ("dm", 1, "ok", 4)
    assert (first["paper_mean"], first["delta"]) == (26.0, 2.0)
    csv_text = to_csv(rows)
    assert csv_text.splitlines()[0].startswith("table,scale,row,label,dataset")
    assert len(csv_text.splitlines()) == 1 + 4


def test_render_shows_lrs_and_ars_when_the_runs_computed_scores(tmp_path):
    _tiny_table(tmp_path / "tables", TINY_TABLE)
    spec = load_table("tiny", tmp_path / "tables")
    plan = make_plan(spec, "paper", tmp_path / "results")
    for seed, (lrs, ars) in enumerate([(0.30, 0.40), (0.20, 0.30)]):
        directory = plan.root / f"dm/cifar10_ipc1/seed{seed}"
        _write_result(directory, [27.0, 29.0])
        record = json.loads((directory / "results.json").read_text())
        record["scores"] = {"models": {"ConvNet": {"lrs": lrs, "ars": ars}}}
        (directory / "results.json").write_text(json.dumps(record))
    cells = collect(plan)
    assert cells[("dm", "cifar10", 1, None)].lrs == [0.30, 0.20]
    md = to_markdown(spec, cells, "paper")
    header = next(line for line in md.splitlines() if line.startswith("| method"))
    assert header.count("| LRS | ARS") == 2  # beside each IPC
    dm = next(line for line in md.splitlines() if line.startswith("| DM |"))
    assert dm.endswith("| +2.0 | 0.250 | 0.350 | missing | 48.9 ± 0.6 | – | – | – |")
    first = table_rows(spec, cells, "paper")[0]
    assert (first["lrs"], first["ars"]) == (0.25, 0.35)
    assert "lrs,ars" in to_csv([first]).splitlines()[0]
    # without scores the table is as it was
    plain = to_markdown(spec, collect(make_plan(spec, "paper", tmp_path / "none")), "paper")
    assert "LRS" not in plain


def test_smoke_plan_substitutes_digits_and_says_so(tmp_path):
    spec = load_table("fyi", TABLES)
    plan = make_plan(spec, "smoke", tmp_path)
    assert len(plan.jobs) == 84 and {j.run_dataset for j in plan.jobs} == {"digits"}
    assert plan.substitutions == {"cifar10": "digits", "cifar100": "digits"}
    assert [p.kind for p in plan.prerequisites] == ["experts", "experts"]
    sgd, gsam = plan.prerequisites
    assert "optimizer=gsam" in gsam.argv and "optimizer=gsam" not in sgd.argv
    ftd = next(j for j in plan.jobs if j.row == "ftd_fyi")
    assert f"method.buffer={gsam.directory}" in ftd.overrides
    mtt = next(j for j in plan.jobs if j.row == "mtt_fyi")
    assert "regularizer=[fyi]" in mtt.overrides
    assert any(o.startswith("method.buffer=") for o in mtt.overrides)
    assert mtt.subdir == "mtt_fyi/cifar10_ipc1/seed0"
    idm50 = next(j for j in plan.jobs if j.row == "idm" and j.ipc == 50)
    assert "synthetic.init=noise" in idm50.overrides  # 4 x 50 > the smallest digits class
    md = to_markdown(spec, collect(plan), "smoke", plan.substitutions)
    assert "`digits` was substituted for CIFAR-10, CIFAR-100" in md


def test_paper_prerequisites_train_gsam_experts_of_each_alpha_for_ftd(tmp_path):
    from distillkit.tables.plan import paper_prerequisites

    spec = load_table("fyi", TABLES)
    plan = make_plan(spec, "paper", tmp_path)
    plan.jobs = [j for j in plan.jobs if j.row == "ftd" and j.dataset == "cifar10"]
    wanted = {str(p.directory): p.command for p in paper_prerequisites(plan)}
    assert len(wanted) == 2  # alpha 0.3 (IPC 1, 10) and alpha 1 (IPC 50), both ZCA
    for directory, command in wanted.items():
        alpha = directory.rpartition("_gsam-a")[2]
        assert "optimizer=gsam" in command and f"gsam.alpha={alpha}" in command
        assert "dataset.zca=true" in command and "num_experts=100" in command


def test_wandb_runs_of_a_table_share_a_group(tmp_path):
    plan = make_plan(load_table("fyi", TABLES), "smoke", tmp_path, logger="wandb")
    for job in plan.jobs:
        assert "logger=wandb" in job.overrides and "logger.wandb.group=fyi" in job.overrides


def test_options_and_launcher_overrides(tmp_path):
    opts = parse_args(
        ["table=iid", "scale=smoke", "launcher=joblib", "gpus=4", "dataset.root=/d", "hydra.x=1"]
    )
    assert (opts.table, opts.scale, opts.gpus) == ("iid", "smoke", 4)
    assert opts.extra == ["dataset.root=/d"]
    plan = make_plan(load_table("iid", TABLES), "smoke", tmp_path)
    master = hydra_overrides(plan, opts)
    assert "hydra/launcher=joblib" in master and "hydra.launcher.n_jobs=4" in master
    assert master[-1] == "hydra.x=1"
    assert hydra_overrides(plan, Options())[1:] == []
    with pytest.raises(TableError, match="unknown launcher"):
        parse_args(["launcher=mpi"])


def test_slurm_gpu_launcher_config_composes():
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="distillkit.conf", version_base="1.3"):
        cfg = compose(
            "config",
            overrides=["hydra/launcher=slurm_gpu", "hydra.launcher.partition=gpu"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.partition) == (1, 1, "gpu")


# -- what a method declares, not its name, shapes its jobs -----------------------------------------
def test_smoke_jobs_take_each_methods_own_budget(tmp_path):
    from distillkit.methods.registry import shipped_method
    from distillkit.tables.plan import SMOKE_COMMON

    plan = make_plan(load_table("fyi", TABLES), "smoke", tmp_path)
    for job in plan.jobs:
        own = shipped_method(plan.spec.row(job.row).method).smoke_overrides
        at = job.overrides.index(SMOKE_COMMON[-1]) + 1
        assert job.overrides[at : at + len(own)] == own, job.row


def test_a_method_that_declares_an_expert_buffer_gets_one_without_editing_the_plan(
    tmp_path, monkeypatch
):
    from distillkit.methods import registry
    from distillkit.methods.dm import DistributionMatching

    class ExpertDM(DistributionMatching):
        """A stand-in for a new method that reads experts of its own kind."""

        name = "dm"
        smoke_overrides = ("method.batch_real=4",)
        expert_options = ("optimizer=gsam", "gsam.rho=0.1")
        smoke_buffer_overrides = ("method.something=null",)

    shipped = registry.shipped_method
    monkeypatch.setattr(registry, "shipped_method", lambda n: ExpertDM if n == "dm" else shipped(n))
    _tiny_table(tmp_path / "tables", TINY_TABLE)
    plan = make_plan(load_table("tiny", tmp_path / "tables"), "smoke", tmp_path / "results")
    (experts,) = plan.prerequisites
    assert experts.kind == "experts" and experts.directory.name == "experts_dm"
    assert "optimizer=gsam" in experts.argv and "gsam.rho=0.1" in experts.argv
    for job in plan.jobs:
        assert "method.batch_real=4" in job.overrides
        buffer = job.overrides.index(f"method.buffer={experts.directory}")
        assert job.overrides[buffer + 1] == "method.something=null"
        assert "synthetic.init=noise" not in job.overrides  # one real image per stored image
