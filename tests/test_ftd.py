"""FTD: GSAM experts (the GSAM step itself against the formula and FTD's gsam.py: in
tests/test_experts_gsam.py), the EMA of the images (what is evaluated and saved), FYI's doubled
student batches, the unequalness score, resume, the published table."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import torch
from helpers import (
    FTD_PUBLISHED,
    build_addons,
    crash_and_resume,
    poison_at,
    resumed_twin,
    student_batches,
)

from distillkit.augment import DSA
from distillkit.data import load_dataset
from distillkit.errors import ConfigError
from distillkit.experts import ExpertBuffer, ExpertSettings, train_experts
from distillkit.methods.base import MethodContext
from distillkit.methods.ftd import FlatTrajectoryDistillation
from distillkit.seeding import RunGenerators
from distillkit.synthetic import SyntheticSet
from distillkit.trainer import Trainer

STRATEGY = "color_crop_cutout_scale_rotate"
GSAM = ExpertSettings(epochs=3, optimiser="gsam")


@pytest.fixture(scope="module")
def few():
    """16 training digits per class: experts train in a fraction of a second on them (the
    buffer's setting facts are those of the full set)."""
    return load_dataset("digits", image_size=8, train_limit=16)


def _train(directory, data, factory, settings, n=2):
    gens = RunGenerators(0)
    train_experts(
        directory, data, factory, DSA(STRATEGY), n, settings, n, lambda i: gens[f"experts/{i}"]
    )
    return directory


@pytest.fixture(scope="module")
def gsam_dir(tmp_path_factory, few, factory) -> Path:
    """Two tiny GSAM experts of 3 epochs (width 8, 8x8 digits)."""
    return _train(tmp_path_factory.mktemp("gsam"), few, factory, GSAM)


def build_ftd(data, factory, buffer_dir, *, ipc=2, seed=1, fyi=False, dsa=True, **cfg):
    """An FTD method wired as the trainer wires it (FYI installed on `synthetic.transforms`)."""
    gens = RunGenerators(seed)
    synthetic = SyntheticSet.initialise(data, ipc, "real", gens["init"])
    regularizers = build_addons({"fyi": {}} if fyi else {}, "ftd")
    synthetic.use_addons(regularizers)
    settings = {
        "name": "ftd", "iterations": 3, "syn_steps": 3, "expert_epochs": 2, "max_start_epoch": 2,
        "lr_img": 100.0, "lr_lr": 1e-5, "lr_teacher": 0.01, "momentum": 0.5, "batch_syn": None,
        "mode": "unrolled", "buffer": str(buffer_dir), "dsa": dsa, "ema_decay": 0.9, **cfg,
    }  # fmt: skip
    ctx = MethodContext(
        settings, data, synthetic, factory, DSA(STRATEGY) if dsa else None, gens, regularizers
    )
    return FlatTrajectoryDistillation(ctx)


# -- GSAM experts --------------------------------------------------------------------------------
def test_gsam_experts_differ_from_sgd_experts_from_the_same_start(tmp_path, few, factory):
    sgd = ExpertBuffer.open(
        _train(tmp_path / "sgd", few, factory, ExpertSettings(epochs=3), n=1), _meta(few, factory)
    )
    gsam = ExpertBuffer.open(
        _train(tmp_path / "gsam", few, factory, GSAM, n=1), _meta(few, factory)
    )
    a, b = sgd.trajectory(0), gsam.trajectory(0)
    assert torch.equal(a[0], b[0])  # same seeded initialisation
    assert not torch.allclose(a[1], b[1])  # different updates
    assert gsam.training["optimiser"] == "gsam" and "optimiser" not in sgd.training


def _meta(data, factory):
    from distillkit.experts import buffer_meta

    return buffer_meta(data.info, factory)


# -- the EMA -------------------------------------------------------------------------------------
def test_ema_equals_a_hand_computation_over_a_few_steps(digits, factory, gsam_dir):
    method = build_ftd(digits, factory, gsam_dir, ema_decay=0.8)
    expected = method.synthetic.images.detach().clone()
    for it in range(3):
        method.step(it)
        expected = 0.8 * expected + 0.2 * method.synthetic.images.detach()
    assert torch.allclose(method.ema, expected, rtol=0, atol=1e-6)
    assert not torch.allclose(method.ema, method.synthetic.images.detach())
    evaluated = method.evaluated_set().training_set()[0]
    assert torch.equal(evaluated, method.ema)


def test_ftd_refuses_sgd_experts_and_a_buffer_of_another_alpha(
    tmp_path, digits, few, factory, gsam_dir
):
    sgd = _train(tmp_path / "sgd", few, factory, ExpertSettings(epochs=3), n=1)
    with pytest.raises(ConfigError, match="needs GSAM experts.*optimizer=gsam"):
        build_ftd(digits, factory, sgd)
    with pytest.raises(ConfigError, match="alpha 0.4.*uses 0.3"):
        build_ftd(digits, factory, gsam_dir, gsam_alpha=0.3)
    build_ftd(digits, factory, gsam_dir, gsam_alpha=0.4)


# -- FYI -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["unrolled", "constant_memory"])
def test_fyi_doubles_the_student_batch_with_mirrored_second_half(mode, digits, factory, gsam_dir):
    method = build_ftd(digits, factory, gsam_dir, fyi=True, dsa=False, mode=mode, batch_syn=10)
    seen = student_batches(method)
    assert seen
    for x in seen:
        assert x.shape[0] == 10 and torch.equal(x[5:], x[:5].flip(-1))


# -- resume ----------------------------------------------------------------------------------------
def test_state_holds_the_ema_and_resumes_exactly(digits, factory, gsam_dir):
    a = build_ftd(digits, factory, gsam_dir, batch_syn=5)
    a.step(0)
    state = copy.deepcopy(a.state_dict())
    assert torch.equal(state["ema"], a.ema)
    _, b = resumed_twin(a, lambda: build_ftd(digits, factory, gsam_dir, batch_syn=5))
    b.step(1)
    assert torch.equal(a.synthetic.images, b.synthetic.images)
    assert torch.equal(a.ema, b.ema)


# -- end to end ------------------------------------------------------------------------------------
def test_saved_set_is_the_ema_and_unequalness_is_logged(tiny_config, tmp_path, gsam_dir):
    cfg = tiny_config(
        "method=ftd", "ipc=1", f"method.buffer={gsam_dir}", "method.syn_steps=2",
        "method.max_start_epoch=1", "method.ema_decay=0.5", "unequalness.num_nets=1",
        "unequalness.every=1", "unequalness.distances=[dm,dc]", "images.flips=false",
        "dataset.train_limit=16",
    )  # fmt: skip
    trainer = Trainer(cfg, tmp_path / "run")
    results = trainer.run()
    synthetic, saved = SyntheticSet.load(tmp_path / "run" / "synthetic_set.pt")
    assert torch.equal(synthetic.images, trainer.method.ema)
    assert not torch.equal(synthetic.images, trainer.synthetic.images.detach())
    assert saved["lr"] == results["eval_lr"]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    steps = [r["step"] for r in records if "unequalness/dm" in r]
    assert steps == [1, 2, 3] and set(results["unequalness"]) == {"dm", "dc"}


def checkpointed_run(tiny_config, gsam_dir, iterations: int):
    """A quiet FTD run that checkpoints every 2 iterations (no evaluation, no unequalness)."""
    return tiny_config(
        "method=ftd", "ipc=1", f"method.buffer={gsam_dir}", "method.syn_steps=2",
        "method.max_start_epoch=1", "method.ema_decay=0.5", f"method.iterations={iterations}",
        "checkpoint.every=2", "unequalness.enabled=false", "images.flips=false",
        "eval.num_models=0", "dataset.train_limit=16",
    )  # fmt: skip


def test_a_nan_stop_saves_the_last_good_checkpoints_ema(tiny_config, tmp_path, gsam_dir):
    trainer = Trainer(checkpointed_run(tiny_config, gsam_dir, 6), tmp_path / "run")
    poison_at(trainer, 3)
    with pytest.raises(FloatingPointError, match="last good state"):
        trainer.run()
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    saved, extra = SyntheticSet.load(tmp_path / "run" / "synthetic_set.pt")
    assert extra["iteration"] == state["iteration"] == 2
    assert torch.equal(saved.images, state["method"]["ema"])
    assert not torch.equal(saved.images, state["synthetic"]["images"])


@pytest.mark.slow
def test_checkpoint_resume_continues_the_ema(tiny_config, tmp_path, gsam_dir):
    """A run that crashes after its checkpoint at iteration 2, re-run in its directory, ends
    with the same images and EMA as an uninterrupted one."""
    whole, resumed = crash_and_resume(checkpointed_run(tiny_config, gsam_dir, 4), tmp_path)
    assert resumed.start_iteration == 2
    resumed.run()
    assert torch.equal(resumed.method.ema, whole.method.ema)
    assert torch.equal(resumed.synthetic.images, whole.synthetic.images)


# -- configuration ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dataset, ipc", sorted(FTD_PUBLISHED))
def test_published_settings_are_picked_up_automatically(dataset, ipc):
    from helpers import compose_config

    cfg = compose_config(["method=ftd", f"dataset={dataset}", f"ipc={ipc}"])
    m = cfg.method
    steps, epochs, start, batch_syn, *rates = FTD_PUBLISHED[(dataset, ipc)]
    assert (m.syn_steps, m.expert_epochs, m.max_start_epoch) == (steps, epochs, start)
    assert m.batch_syn == batch_syn
    got = (m.lr_img, m.lr_lr, m.lr_teacher, m.gsam_alpha, m.ema_decay)
    assert got == pytest.approx(tuple(rates))
    assert cfg.dataset.zca is dataset.startswith("cifar")
    assert m.buffer.endswith(f"_gsam-a{m.gsam_alpha}") and m.iterations == 5000


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
