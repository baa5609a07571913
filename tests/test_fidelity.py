"""Paper-scale fidelity: each published protocol the reference code runs, and no toy settings
slipping into paper-scale runs. Every test names the reference file its values come from (read
from the reference repositories, not from our docs)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from helpers import compose_config
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


# -- 1. IID's pool -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_pool(tmp_path_factory, digits) -> Path:
    """A 2-member, 1-epoch ResNet-18 (width 4) pool: the kind a CPU user builds."""
    from distillkit.networks import NetworkFactory
    from distillkit.pool import PoolSettings, train_pool
    from distillkit.seeding import RunGenerators

    directory = tmp_path_factory.mktemp("small_pool")
    factory = NetworkFactory("ResNet18", 1, 10, (8, 8), {"width": 4}, "cpu")
    gens = RunGenerators(0)
    train_pool(
        directory, digits, factory, 2, PoolSettings(epochs=1), 2, lambda i: gens[f"pool/{i}"]
    )
    return directory


def test_pool_records_its_size_epochs_width_and_is_not_the_published_one(small_pool, digits):
    # VincenDen/IID DM+ours/pre_model.py: --model ResNet18, --num_premodels 1000, --pre_epochs 40.
    from distillkit.pool import PUBLISHED_POOL, PretrainedPool, pool_facts, published_shortfall

    assert PUBLISHED_POOL == {"size": 1000, "epochs": 40, "model": "ResNet18", "width": 64}
    facts = pool_facts(small_pool)
    assert facts == {"size": 2, "epochs": 1, "model": "ResNet18", "width": 4}
    assert PretrainedPool.open(small_pool, digits.info).facts() == facts
    gap = published_shortfall(facts)
    assert "2 members (published 1000)" in gap and "epochs 1 (published 40)" in gap
    assert "width 4 (published 64)" in gap
    assert published_shortfall({**PUBLISHED_POOL, "size": 1200}) is None


def test_pretrain_defaults_are_the_published_pool():
    # IID pre_model.py defaults: 1000 networks x 40 epochs.
    from hydra import compose, initialize_config_module

    from distillkit.pool import PoolSettings, pretrain_command

    with initialize_config_module(config_module="distillkit.conf", version_base="1.3"):
        cfg = compose("pretrain")
    assert (cfg.pool.size, cfg.pool.epochs, cfg.model.name) == (1000, 40, "ResNet18")
    assert PoolSettings().epochs == 40
    info = type("Info", (), {"name": "cifar10", "image_size": (32, 32), "zca": False})()
    assert pretrain_command(info, "p").endswith("pool.dir=p pool.size=1000 pool.epochs=40")


def test_a_run_with_a_small_pool_warns_once_and_records_it(small_pool, tmp_path):
    from distillkit.trainer import Trainer

    cfg = compose_config(
        [
            "dataset=digits", "dataset.image_size=8", "model.width=8", "method=dm", "ipc=2",
            "method.iterations=1", "eval.num_models=1", "eval.epochs=1", "progress=false",
            "checkpoint.every=0", "device=cpu", "regularizer=cc",
            f"regularizer.cc.pool={small_pool}", "unequalness.enabled=false", "images.flips=false",
        ]
    )  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = Trainer(cfg, tmp_path).run()
    lines = [str(w.message) for w in caught if "not the published one" in str(w.message)]
    assert len(lines) == 1 and "\n" not in lines[0] and "2 members (published 1000)" in lines[0]
    saved = json.loads((tmp_path / "results.json").read_text())
    pool = saved["addons"]["cc"]["pool"]
    assert pool == report["addons"]["cc"]["pool"]
    assert (pool["size"], pool["epochs"], pool["width"], pool["published"]) == (2, 1, 4, False)


IID_TABLE = """
title: tiny IID table
datasets: [digits]
ipcs: [2]
rows:
  - {name: dm_iid, label: DM + IID, method: dm, regularizers: [iid]}
"""


def test_paper_table_refuses_a_small_pool_before_any_work_in_one_line(
    small_pool, tmp_path, capsys, monkeypatch
):
    from distillkit.tables import reproduce

    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "tiny_iid.yaml").write_text(IID_TABLE)

    def no_work(*args, **kwargs):
        raise AssertionError("jobs were launched")

    monkeypatch.setattr(reproduce, "launch_jobs", no_work)
    argv = [
        "table=tiny_iid", "scale=paper", f"results={tmp_path / 'results'}",
        f"tables={tmp_path / 'tables'}", "dataset.image_size=8",
        f"regularizer.cc.pool={small_pool}",
    ]  # fmt: skip
    assert reproduce.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not there" not in err[0]
    assert f"{small_pool} holds 2 members (published 1000)" in err[0]
    assert "distillkit-pretrain dataset=digits" in err[0]
    assert "pool.size=1000 pool.epochs=40" in err[0]
    assert not (tmp_path / "results" / "tiny_iid").exists()
    # prepare=true cannot grow a small pool into the published one either.
    assert reproduce.main([*argv, "prepare=true"]) == 2


def test_dry_run_lists_each_cells_protocol_budget_and_precision(tmp_path, capsys):
    from distillkit.tables.reproduce import main

    argv = ["table=fyi", "scale=paper", "dry_run=true", f"results={tmp_path}"]
    main(argv)
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("  mtt_fyi cifar10 IPC 1:"))
    assert "[fyi]" in line and "10000 it." in line and "always-flip" in line
    assert "evaluated at 51 points 5000..10000" in line and "precision" in line
    line = next(x for x in out.splitlines() if x.startswith("  dc cifar10 IPC 1:"))
    assert "init noise" in line and "eval dc, 5 x 300 epochs" in line


# -- 2. FYI's DSA, 3. MTT's budget and best column -----------------------------------------------
def test_fyi_table_runs_fyis_dsa_by_default_and_the_original_as_an_option():
    # cvlab-yonsei/FYI DC_DSA_DM/utils.py DiffAugment mode 'S' (and MTT/utils.py): flip first,
    # then one other operation, in distillation and evaluation; main.py: (10, 10) loops for
    # CIFAR-100 IPC 50.
    from distillkit.tables.spec import load_table

    spec = load_table("fyi", REPO / "experiments" / "tables")
    fyi, original = spec.protocol(), spec.protocol("dsa")
    assert fyi.name == "fyi" and set(fyi.overrides) == {
        "dsa.always_flip=true",
        "eval.always_flip=true",
    }
    assert original.overrides == () and original.cells == ()
    loops = ["method.outer_loop=10", "method.inner_loop=10"]
    assert fyi.cell_overrides("dsa_fyi", "cifar100", 50) == loops
    assert fyi.cell_overrides("dm", "cifar100", 50) == []
    assert fyi.cell_overrides("dsa", "cifar10", 50) == []


def test_always_flip_draws_a_flip_then_one_other_operation():
    from distillkit.augment import DSA

    dsa = DSA(always_flip=True)
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(60):
        params = dsa.sample(4, g, (8, 8))
        assert params.families[0] == "flip" and len(params.families) == 2
        seen.add(params.families[1])
    assert seen == {"color", "crop", "cutout", "scale", "rotate"}


def test_rendered_fyi_table_names_its_protocol_and_the_best_column(tmp_path):
    # mtt-distillation distill.py / FYI MTT/distill.py log Max_Accuracy (the best evaluation).
    from distillkit.tables.plan import make_plan
    from distillkit.tables.render import BEST_LABEL, write_outputs
    from distillkit.tables.spec import load_table

    spec = load_table("fyi", REPO / "experiments" / "tables")
    plan = make_plan(spec, "paper", tmp_path / "results", distillations=1)
    for job in plan.jobs:
        if job.dataset == "cifar10" and job.ipc == 1 and job.row in ("mtt", "dm"):
            d = job.directory(plan.root)
            d.mkdir(parents=True)
            record = {
                "headline": {"model": "ConvNet"},
                "accuracy": {"ConvNet": {"runs": [40.0, 42.0]}},
                "best": {"model": "ConvNet", "mean": 45.5, "std": 0.5},
            }
            (d / "results.json").write_text(json.dumps(record))
    write_outputs(plan, tmp_path / "out")
    md = (tmp_path / "out" / "fyi.md").read_text()
    assert "Protocol: **FYI's DSA" in md and f"IPC 1 {BEST_LABEL}" in md
    mtt = next(line for line in md.splitlines() if line.startswith("| MTT |"))
    dm = next(line for line in md.splitlines() if line.startswith("| DM |"))
    assert "| 41.0 ± 1.0 | 45.5 ± 0.5 | 46.3 ± 0.8 |" in mtt
    assert "| 41.0 ± 1.0 | – | 26.0 ± 0.8 |" in dm  # DM's paper reports the final point
    plan_dsa = make_plan(spec, "paper", tmp_path / "results", distillations=1, protocol="dsa")
    assert plan_dsa.root != plan.root
    write_outputs(plan_dsa, tmp_path / "out")
    assert "Protocol: **the original DSA" in (tmp_path / "out" / "fyi-dsa.md").read_text()


# -- 7. DC: init from noise, evaluation per dataset ----------------------------------------------
@pytest.mark.parametrize(
    ("method", "dataset", "init", "augment", "epochs"),
    [
        # VICO-UoE/DatasetCondensation main.py: --init default 'noise'; get_daparam: MNIST
        # crop_scale_rotate (then 1000 epochs), every other dataset none (300 epochs).
        ("dc", "mnist", "noise", "dc", 1000),
        ("dc", "fashion_mnist", "noise", "dc", 300),
        ("dc", "svhn", "noise", "dc", 300),
        ("dc", "cifar10", "noise", "dc", 300),
        # DSA (readme: --init real): per-sample DSA, 1000 epochs on every dataset.
        ("dsa", "mnist", "real", "dsa", 1000),
        ("dsa", "svhn", "real", "dsa", 1000),
    ],
)
def test_dc_and_dsa_follow_their_references_per_dataset(method, dataset, init, augment, epochs):
    cfg = compose_config([f"method={method}", f"dataset={dataset}", "ipc=1"])
    assert (cfg.synthetic.init, cfg.eval.augment, cfg.eval.epochs) == (init, augment, epochs)
    assert cfg.eval.extra_epoch is True


def test_dc_evaluation_augmentation_per_dataset_and_model():
    # DatasetCondensation utils.py get_daparam: MNIST crop_scale_rotate; model_eval 'ConvNetBN'
    # crop_noise; crop 4, scale 0.2, rotate 45, noise 0.001; `augment` draws one op per image.
    from distillkit.augment.dc import DCAugment, DCEvaluationAugment
    from distillkit.models.catalog import build_model

    plain = build_model("ConvNet", 1, 10, (28, 28), width=8)
    bn = build_model("ConvNet", 3, 10, (32, 32), width=8, norm="batchnorm")
    assert DCEvaluationAugment("mnist").for_network(plain).strategy == "crop_scale_rotate"
    assert DCEvaluationAugment("cifar10").for_network(plain).enabled is False
    assert DCEvaluationAugment("cifar10").for_network(bn).strategy == "crop_noise"
    x = torch.rand(6, 1, 28, 28)
    g = torch.Generator().manual_seed(0)
    out = DCAugment("crop_scale_rotate")(x, g)
    assert out.shape == x.shape and not torch.equal(out, x)
    crop = DCAugment("crop")
    shifted = crop._crop(x[0], [0.5], torch.Generator().manual_seed(1))
    assert shifted.shape == x[0].shape
    noisy = DCAugment("noise")(x, g)
    assert 0 < (noisy - x).abs().max() < 0.01


def test_dc_evaluation_runs_each_model_with_its_own_strategy(monkeypatch, digits):
    from distillkit.augment.dc import DCEvaluationAugment
    from distillkit.evaluation import EvalSettings, evaluate_set, protocol
    from distillkit.networks import NetworkFactory

    used = []
    real = protocol.train_and_test

    def spy(factory, images, labels, ti, tl, settings, augment, generator, *rest, **options):
        used.append(augment.strategy)
        return real(factory, images, labels, ti, tl, settings, augment, generator, *rest, **options)

    monkeypatch.setattr(protocol, "train_and_test", spy)
    factory = NetworkFactory("ConvNet", 1, 10, (8, 8), {"width": 4}, "cpu")
    settings = EvalSettings(models=("ConvNet", "ConvNetBN"), num_models=1, epochs=1)
    monkeypatch.setattr(
        factory, "for_architecture",
        lambda name: NetworkFactory(
            "ConvNet", 1, 10, (8, 8), {"width": 4, "norm": "batchnorm" if "BN" in name else None},
            "cpu",
        ),
    )  # fmt: skip
    images, labels = digits.train_images[:20], digits.train_labels[:20]
    augment = DCEvaluationAugment("cifar10")
    evaluate_set(
        images, labels, digits, factory, settings, augment, torch.Generator(), progress=False
    )
    assert used == ["none", "crop_noise"]


# -- 8. smaller ones -----------------------------------------------------------------------------
def test_reference_evaluation_trains_epochs_plus_one_and_decays_after_epoch_half_plus_one():
    # DatasetCondensation utils.py evaluate_synset (mtt-distillation the same): lr_schedule =
    # [Epoch//2 + 1]; for ep in range(Epoch + 1): train, then decay if ep in lr_schedule.
    from distillkit.evaluation import EvalSettings
    from distillkit.evaluation.protocol import train_network
    from distillkit.networks import NetworkFactory

    assert EvalSettings(epochs=1000, extra_epoch=True).schedule() == (1001, 502)
    assert EvalSettings(epochs=1000).schedule() == (1000, 500)
    assert EvalSettings(epochs=40, lr_decay_at=1.0).schedule() == (40, 40)  # pools, experts
    done = []
    factory = NetworkFactory("ConvNet", 1, 10, (8, 8), {"width": 4}, "cpu")
    x, y = torch.rand(10, 1, 8, 8), torch.arange(10)
    settings = EvalSettings(epochs=4, extra_epoch=True)
    train_network(
        factory, x, y, settings, None, torch.Generator(), on_epoch=lambda d, n: done.append(d)
    )
    assert done == [0, 1, 2, 3, 4, 5]
    assert compose_config(["method=dm"]).eval.extra_epoch is True


def test_cutout_centre_covers_the_references_range():
    # DatasetCondensation utils.py rand_cutout: offset in [0, size + (1 - side % 2)).
    from distillkit.augment import DSA

    g = torch.Generator().manual_seed(0)
    even = DSA(strategy="cutout")._draw("cutout", 4000, g, (32, 32))  # side 16
    assert int(even["centre_y"].max()) == 32 and int(even["centre_x"].min()) == 0
    odd = DSA(strategy="cutout", cutout_ratio=0.5)._draw("cutout", 4000, g, (30, 30))  # side 15
    assert int(odd["centre_y"].max()) == 29


def test_cifar100_uses_cifar10_statistics_for_mtt_only():
    # mtt-distillation utils.py get_dataset, CIFAR100: mean [0.4914, 0.4822, 0.4465], std
    # [0.2023, 0.1994, 0.2010]. IDM's CIFAR-100 command runs IDM_cifar100.py, whose dc_utils.py
    # loader keeps CIFAR-100's own statistics, as DC/DSA/DM do.
    from distillkit.data.torchvision_sets import SPECS, _with_stats

    spec = _with_stats(SPECS["cifar100"], "cifar10")
    assert (spec.mean, spec.std) == ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
    assert _with_stats(SPECS["cifar100"], "own") is SPECS["cifar100"]
    assert compose_config(["method=mtt", "dataset=cifar100", "ipc=10"]).dataset.stats == "cifar10"
    for method in ("dm", "idm", "dsa"):
        cfg = compose_config([f"method={method}", "dataset=cifar100", "ipc=10"])
        assert cfg.dataset.stats == "own"


def test_idm_queue_training_count_has_a_name_that_says_so():
    # uitrbn/IDM IDM_cifar10.py: --fetch_net_num 2 nets trained per iteration; --train_net_num
    # (1 in command.txt) is the number of matching nets.
    from distillkit.errors import ConfigError
    from distillkit.methods.idm import IDMSettings

    assert compose_config(["method=idm"]).method.nets_trained_per_iteration == 2
    with pytest.raises(ConfigError, match="now method.nets_trained_per_iteration"):
        IDMSettings.from_config({"train_net_num": 1}, "method")


# -- 9. ImageNet subsets -------------------------------------------------------------------------
def fake_imagenet(root: Path, classes: int = 1000, wanted: tuple[int, ...] = ()) -> list[str]:
    """train/<wnid>/ for `classes` synsets; images (2 train, 1 val) only in `wanted`."""
    synsets = [f"n{i:08d}" for i in range(classes)]
    for i, wnid in enumerate(synsets):
        (root / "train" / wnid).mkdir(parents=True)
        if i in wanted:
            (root / "val" / wnid).mkdir(parents=True)
            for split, n in (("train", 2), ("val", 1)):
                for k in range(n):
                    colour = (i % 256, k * 40, 7)
                    Image.new("RGB", (12, 9), colour).save(root / split / wnid / f"{wnid}_{k}.JPEG")
    return synsets


def test_imagenet_subsets_are_built_with_the_published_class_lists(tmp_path):
    # mtt-distillation utils.py Config: imagenette = [0, 217, 482, 491, 497, 566, 569, 571, 574,
    # 701], imagewoof = [193, 182, 258, 162, 155, 167, 159, 273, 207, 229], ...
    from distillkit.cli.imagenet_subsets import main
    from distillkit.data import load_dataset
    from distillkit.data.imagenet_subsets import SUBSET_CLASSES

    assert SUBSET_CLASSES["imagewoof"][:3] == (193, 182, 258)
    assert SUBSET_CLASSES["imageyellow"] == (309, 986, 954, 951, 987, 779, 599, 291, 72, 11)
    wanted = SUBSET_CLASSES["imagenette"] + SUBSET_CLASSES["imagewoof"]
    synsets = fake_imagenet(tmp_path / "imagenet", wanted=wanted)
    main(
        [str(tmp_path / "imagenet"), str(tmp_path / "out"), "--subsets", "imagenette", "imagewoof"]
    )
    folders = sorted(p.name for p in (tmp_path / "out" / "imagewoof" / "train").iterdir())
    assert folders == [f"{c:02d}_{synsets[i]}" for c, i in enumerate(SUBSET_CLASSES["imagewoof"])]
    data = load_dataset("imagenette", root=tmp_path / "out")
    assert data.info.image_size == (128, 128) and data.info.num_classes == 10
    assert data.train_images.shape[0] == 20 and data.test_images.shape[0] == 10
    assert data.info.class_names[1] == f"01_{synsets[217]}"


def test_a_partial_imagenet_tree_is_refused_in_one_line(tmp_path, capsys):
    from distillkit.cli.imagenet_subsets import main

    fake_imagenet(tmp_path / "imagenet", classes=999)
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "imagenet"), str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "999 class folders, ImageNet-1k has 1000" in err[0]


# -- 5. IID's covariance on Tiny-ImageNet ---------------------------------------------------------
def test_covariance_uses_iids_local_tiny_layout_on_tiny_imagenet():
    # VincenDen/IID IDM+ours/dc_networks.py embed_channel_avg: "local tiny" is
    # x.view(N, C*H, -1); main_DM_IID.py: cov = mean_k (Z_k - Zbar)(Z_k - Zbar)^T per class.
    from distillkit.addons.base import SetupContext
    from distillkit.addons.covariance import CovarianceMatching, class_covariances

    maps = torch.randn(5, 3, 4, 2, dtype=torch.float64)
    labels = torch.zeros(5, dtype=torch.long)
    cov, _ = class_covariances(maps, labels, 1, "channel_rows")
    z = maps.view(5, 12, -1)
    sub = z - z.mean(0, keepdim=True)
    assert cov.shape == (1, 12, 12)
    assert torch.allclose(cov[0], torch.matmul(sub, sub.transpose(1, 2)).mean(0))
    for dataset, layout in (("tinyimagenet", "channel_rows"), ("cifar10", "channels")):
        cm = CovarianceMatching({"weight": 0.03})
        info = type("Info", (), {"name": dataset})()
        cm.setup("idm", SetupContext(info=info))
        assert cm.layout == layout
    assert compose_config(["regularizer=iid"]).regularizer.cm.layout == "auto"
