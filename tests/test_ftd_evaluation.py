"""What FTD reports: its EMA images (the headline, `evaluated: ema`) and its raw images, both
evaluated at every evaluation point, as FTD's reference does (AngusDujw/FTD-distillation,
distill/distill_FTD.py ~222-244, each through utils/utils_baseline.py evaluate_synset ~352-389).

`method.ema_eval`: `fresh` (default) evaluates the EMA on fresh networks; `reference` keeps the
reference's quirk: distill_FTD.py passes the same `net_eval` (built at ~223, trained on the raw
images at ~231) to the EMA's evaluate_synset at ~242, which trains that network in place with a
new optimiser and the same lr and epochs, so the EMA's network starts from the weights the raw
images left.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch
from helpers import compose_config

from distillkit.augment import DSA
from distillkit.cli.summary import cell
from distillkit.config import validate_config
from distillkit.data import load_dataset
from distillkit.errors import ConfigError
from distillkit.evaluation import EvalSettings, evaluate_in_turn, evaluate_set, protocol
from distillkit.experts import ExpertSettings, train_experts
from distillkit.methods.ftd import FlatTrajectoryDistillation
from distillkit.report import table_rows
from distillkit.seeding import RunGenerators
from distillkit.trainer import Trainer


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", image_size=8, train_limit=16)


@pytest.fixture(scope="module")
def gsam_dir(tmp_path_factory, digits, factory):
    """Two tiny GSAM experts of 3 epochs (width 8, 8x8 digits, 16 training images a class)."""
    directory = tmp_path_factory.mktemp("gsam")
    gens = RunGenerators(0)
    settings = ExpertSettings(epochs=3, optimiser="gsam")
    augment = DSA("color_crop_cutout_scale_rotate")
    train_experts(directory, digits, factory, augment, 2, settings, 2, lambda i: gens[f"e/{i}"])
    return directory


def ftd_run(tiny_config, gsam_dir, *overrides):
    """A tiny FTD run (3 iterations, evaluated at 2 and at the end); the EMA (decay 0.5) differs
    from the raw images from the first step on."""
    return tiny_config(
        "method=ftd", "ipc=1", f"method.buffer={gsam_dir}", "method.syn_steps=2",
        "method.max_start_epoch=1", "method.ema_decay=0.5", "unequalness.enabled=false",
        "images.flips=false", "dataset.train_limit=16", "eval.at=[2]", *overrides,
    )  # fmt: skip


def _weights(net):
    return [p.detach().clone() for p in net.parameters()]


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.fixture
def train_calls(monkeypatch):
    """Every `protocol.train_network` call: the images and lr it trained with, the network it
    was given (None: a fresh one), the weights it started from and the network it returned."""
    calls = []
    real = protocol.train_network

    def spy(factory, images, labels, settings, augment, generator, lr=None, **kw):
        call = {"images": images.detach().clone(), "lr": lr, "settings": settings}
        call["given"] = kw.get("net")
        if call["given"] is not None:
            call["start"] = _weights(call["given"])

        def fresh(g):
            net = factory(g)
            call["start"] = _weights(net)
            return net

        call["net"] = real(fresh, images, labels, settings, augment, generator, lr, **kw)
        call["end"] = _weights(call["net"])
        calls.append(call)
        return call["net"]

    monkeypatch.setattr(protocol, "train_network", spy)
    return calls


# -- results.json ----------------------------------------------------------------------------------
def test_results_record_the_raw_images_beside_the_ema_headline(tiny_config, tmp_path, gsam_dir):
    trainer = Trainer(ftd_run(tiny_config, gsam_dir), tmp_path / "run")
    report = trainer.run()
    assert report == json.loads((tmp_path / "run" / "results.json").read_text())
    assert not torch.equal(trainer.method.ema, trainer.synthetic.images.detach())
    assert report["evaluated"] == "ema" and report["config"]["method"]["ema_eval"] == "fresh"
    # every evaluation point records both; the final one is the headline's and accuracy_raw's
    evaluations = report["evaluations"]
    assert [e["iteration"] for e in evaluations] == [2, 3]
    assert all(set(e) == {"iteration", "accuracy", "raw"} for e in evaluations)
    assert report["accuracy"] == evaluations[-1]["accuracy"]
    assert report["accuracy_raw"] == evaluations[-1]["raw"]
    ema, raw = report["headline"], report["headline_raw"]
    assert ema["model"] == raw["model"] == "ConvNet" and ema["n"] == raw["n"] == 1
    assert ema["mean"] == report["accuracy"]["ConvNet"]["mean"]
    assert raw["mean"] == report["accuracy_raw"]["ConvNet"]["mean"] != ema["mean"]
    for key, best in (("accuracy", "best"), ("raw", "best_raw")):
        assert report[best]["mean"] == max(e[key]["ConvNet"]["mean"] for e in evaluations)
    # the run's table row and the summary cell stay the EMA's
    assert table_rows(report) == [["ftd", "none", "digits", 1, "ConvNet", ema["mean"], 0.0, 1]]
    assert cell(report).startswith(f"{ema['mean']:.1f} ± 0.0")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert {r["step"] for r in records if "eval_raw/ConvNet/mean" in r} == {2, 3}


def test_other_methods_report_only_their_set(tiny_config, tmp_path):
    report = Trainer(tiny_config("method=dm", "unequalness.enabled=false"), tmp_path / "r").run()
    assert report["evaluated"] == "synthetic"
    assert not any(k.endswith("_raw") for k in report)
    assert all(set(e) == {"iteration", "accuracy"} for e in report["evaluations"])


# -- ema_eval --------------------------------------------------------------------------------------
def test_fresh_trains_new_networks_and_keeps_the_ema_accuracies(
    tiny_config, tmp_path, gsam_dir, train_calls, monkeypatch
):
    """fresh: every network is new, the EMA's drawn from stream eval/<iteration> as when only
    the EMA was evaluated (so the same EMA accuracies), the raw images' from eval/<it>/raw."""
    cfg = ftd_run(tiny_config, gsam_dir, "eval.at=[]", "eval.num_models=2")
    trainer = Trainer(cfg, tmp_path / "run")
    report = trainer.run()
    ema, raw = trainer.method.ema, trainer.synthetic.training_set()[0]
    assert len(train_calls) == 4 and all(c["given"] is None for c in train_calls)
    assert [torch.equal(c["images"], ema) for c in train_calls] == [True, True, False, False]
    assert all(torch.equal(c["images"], raw) for c in train_calls[2:])
    arch = trainer.bench.networks
    for call, stream in ((train_calls[0], "eval/3"), (train_calls[2], "eval/3/raw")):
        assert _same(call["start"], _weights(arch(RunGenerators(cfg.seed)[stream])))
    assert not _same(train_calls[2]["start"], train_calls[0]["start"])

    monkeypatch.setattr(FlatTrajectoryDistillation, "also_evaluated", lambda self: {})
    alone = Trainer(cfg, tmp_path / "alone").run()
    assert alone["accuracy"] == report["accuracy"] and "accuracy_raw" not in alone


def test_reference_continues_the_raw_images_network_on_the_ema(
    tiny_config, tmp_path, gsam_dir, train_calls
):
    """reference: per model, a fresh network is trained on the raw images, then the very same
    network, with the weights the raw images left, is trained on the EMA with the same lr and
    schedule (distill_FTD.py ~223, 231, 242)."""
    cfg = ftd_run(
        tiny_config, gsam_dir, "eval.at=[]", "eval.num_models=2", "method.ema_eval=reference"
    )
    trainer = Trainer(cfg, tmp_path / "run")
    report = trainer.run()
    assert trainer.method.evaluates_in_turn
    ema, raw = trainer.method.ema, trainer.synthetic.training_set()[0]
    assert len(train_calls) == 4
    for on_raw, on_ema in (train_calls[0:2], train_calls[2:4]):
        assert torch.equal(on_raw["images"], raw) and torch.equal(on_ema["images"], ema)
        assert on_raw["given"] is None
        assert on_ema["given"] is on_raw["net"]
        assert _same(on_ema["start"], on_raw["end"])
        assert not _same(on_ema["start"], on_raw["start"])
        assert on_ema["lr"] == on_raw["lr"] == report["eval_lr"]
        assert on_ema["settings"] is on_raw["settings"]
    # the first network starts as fresh from eval/<iteration> (both sets share that stream)
    fresh = trainer.bench.networks(RunGenerators(cfg.seed)["eval/3"])
    assert _same(train_calls[0]["start"], _weights(fresh))
    assert report["evaluated"] == "ema" and set(report["evaluations"][-1]) >= {"accuracy", "raw"}


def test_evaluate_in_turn_tests_each_set_on_the_network_it_continues(digits, factory):
    """At the function level: the second set's accuracy is that of the network trained on the
    first set and then on the second; with one set it is evaluate_set's fresh protocol."""
    settings = EvalSettings(models=("ConvNet",), num_models=2, epochs=2, extra_epoch=True)
    x, y = digits.train_images[:20], digits.train_labels[:20]
    flipped = x.flip(-1)
    got = evaluate_in_turn(
        [(x, y), (flipped, y)], digits, factory, settings, None, torch.Generator().manual_seed(5),
        lr=0.05, progress=False,
    )  # fmt: skip
    gen = torch.Generator().manual_seed(5)
    expected = [[], []]
    for _ in range(2):
        net = protocol.train_network(factory, x, y, settings, None, gen, 0.05)
        expected[0].append(
            protocol.test_accuracy(net, digits.test_images, digits.test_labels, 1024)
        )
        net = protocol.train_network(factory, flipped, y, settings, None, gen, 0.05, net=net)
        expected[1].append(
            protocol.test_accuracy(net, digits.test_images, digits.test_labels, 1024)
        )
    assert [r["ConvNet"]["runs"] for r in got] == expected
    alone = evaluate_in_turn(
        [(x, y)], digits, factory, settings, None, torch.Generator().manual_seed(5), 0.05,
        progress=False,
    )  # fmt: skip
    plain = evaluate_set(
        x, y, digits, factory, settings, None, torch.Generator().manual_seed(5), 0.05,
        progress=False,
    )  # fmt: skip
    assert alone == [plain]


def test_train_network_continues_a_given_network_in_place(digits, factory):
    settings = EvalSettings(epochs=1, extra_epoch=False)
    x, y = digits.train_images[:20], digits.train_labels[:20]
    net = factory(torch.Generator().manual_seed(0))
    before = _weights(net)
    gen = torch.Generator().manual_seed(1)
    state = gen.get_state()
    out = protocol.train_network(factory, x, y, settings, None, gen, net=net)
    assert out is net and not _same(_weights(net), before)
    # nothing drawn for an initialisation: only the epoch's permutation
    replay = torch.Generator()
    replay.set_state(state)
    torch.randperm(20, generator=replay)
    assert torch.equal(gen.get_state(), replay.get_state())


def test_ema_eval_is_checked():
    assert compose_config(["method=ftd"]).method.ema_eval == "fresh"
    cfg = compose_config(["method=ftd", "method.ema_eval=refrence"])
    with pytest.raises(ConfigError, match="method.ema_eval must be one of"):
        validate_config(cfg)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
