"""Fair scores (`eval.scores`): DD-Ranking's HLR, IOR, LRS and ARS measured after a run's
evaluation, with the random subset, the protocol without augmentation, hard labels and a cached
full-data accuracy; the lr grid is chosen on the validation split, never on test."""

from __future__ import annotations

import csv
import dataclasses
import json
import math

import pytest
import torch
from helpers import TINY, compose_config

from distillkit.errors import ConfigError, InputError
from distillkit.evaluation import EvalSettings, evaluate_set, protocol
from distillkit.metrics import fair_scores
from distillkit.metrics.scores import ACCURACY_KEYS, scores_from_accuracies
from distillkit.seeding import derive_seed
from distillkit.trainer import Trainer

SCORES = ["eval.scores=true", "eval.scores_full_epochs=2", "unequalness.enabled=false"]


def scored_config(cache, *overrides: str):
    return compose_config([*TINY, *SCORES, f"eval.scores_cache={cache}", *overrides])


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory):
    """One tiny DM run with eval.scores=true, its run directory and its full-data cache."""
    root = tmp_path_factory.mktemp("scores")
    cache = root / "cache"
    report = Trainer(scored_config(cache), root / "run").run()
    return report, root / "run", cache


def stream(seed: int, name: str) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, name))


# -- a run's scores block -----------------------------------------------------------------------
def test_a_run_writes_every_ingredient_and_the_formulas_agree(scored_run):
    report, run_dir, cache = scored_run
    written = json.loads((run_dir / "results.json").read_text())["scores"]
    assert written["units"] == "fraction" and written["headline"]["model"] == "ConvNet"
    model = written["models"]["ConvNet"]
    assert set(model["accuracies"]) == set(ACCURACY_KEYS)
    assert all(0.0 <= model["accuracies"][k] <= 1.0 for k in ACCURACY_KEYS)
    # syn is the run's own evaluation, reused (percent -> fraction), not retrained.
    assert model["runs"]["syn"] == [a / 100 for a in report["accuracy"]["ConvNet"]["runs"]]
    assert written["ingredients"]["syn"]["source"] == "the run's evaluation"
    # Hard labels with DSA: syn_hard and syn_aug are that same evaluation, rdm_aug is random's.
    assert written["ingredients"]["syn_hard"]["reuses"] == "syn"
    assert written["ingredients"]["rdm_aug"]["reuses"] == "random"
    assert written["ingredients"]["syn_noaug"]["augmentation"] == "none"
    n = len(model["runs"]["syn"])
    for i in range(n):
        values = {k: model["runs"][k][i] for k in ACCURACY_KEYS}
        expected = scores_from_accuracies(**values)
        assert model["lrs_runs"][i] == pytest.approx(expected["lrs"])
        assert model["ars_runs"][i] == pytest.approx(expected["ars"])
    values = {k: model["runs"][k][0] for k in ACCURACY_KEYS}
    one = scores_from_accuracies(**values)
    percent = scores_from_accuracies(**{k: 100 * v for k, v in values.items()}, percent=True)
    for key in ("hlr", "ior", "alpha", "lrs", "beta", "ars"):
        assert model[key] == pytest.approx(one[key])
        assert model["percent"][key] == pytest.approx(percent[key])
    assert 0.0 <= model["lrs"] <= 1.0 and 0.0 <= model["ars"] <= 1.0
    assert model["hlr"] == pytest.approx(
        model["accuracies"]["full_hard"] - model["accuracies"]["syn_hard"]
    )
    full = model["full_data"]
    assert full["source"] == "trained" and full["path"].startswith(str(cache))
    assert model["accuracies"]["full_hard"] == pytest.approx(full["accuracy"] / 100)
    assert written["headline"]["lrs"] == model["lrs"]
    assert written["lr_selection"] is None
    assert written["random_subset"] == {
        "stream": "scores/random",
        "seed": 0,
        "images_per_class": 10,
        "images": 100,
    }


def test_the_table_metrics_and_summary_carry_the_scores(scored_run):
    report, run_dir, _ = scored_run
    rows = list(csv.reader((run_dir / "results.csv").open()))
    assert rows[0][-2:] == ["lrs", "ars"]
    assert float(rows[1][-2]) == pytest.approx(report["scores"]["models"]["ConvNet"]["lrs"])
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = {k: v for r in records for k, v in r.items()}
    for key in ("scores/lrs", "scores/ars", "scores/ConvNet/lrs", "scores/ConvNet/acc/full_hard"):
        assert key in logged
    assert logged["scores/lrs"] == pytest.approx(report["scores"]["headline"]["lrs"])


def test_the_cache_file_names_its_recipe(scored_run):
    _, _, cache = scored_run
    (path,) = cache.glob("*.json")
    assert path.name.startswith("digits_ConvNet_e2_")
    stored = json.loads(path.read_text())
    assert stored["format"] == fair_scores.CACHE_FORMAT
    assert stored["recipe"]["model"]["options"]["width"] == 8
    assert stored["recipe"]["protocol"]["epochs"] == 2
    assert stored["recipe"]["dataset"]["image_size"] == [8, 8]
    assert 0 <= stored["accuracy"] <= 100 and stored["made"]["seconds"] >= 0


# -- the full-data cache ------------------------------------------------------------------------
def test_a_second_run_reads_the_cache_and_says_so(scored_run, tmp_path, monkeypatch):
    report, _, cache = scored_run

    def no_training(*args, **kwargs):
        raise AssertionError("the full-data model was trained again")

    monkeypatch.setattr(fair_scores, "train_full_data", no_training)
    again = Trainer(scored_config(cache, "seed=1"), tmp_path / "again").run()
    full = again["scores"]["models"]["ConvNet"]["full_data"]
    first = report["scores"]["models"]["ConvNet"]["full_data"]
    assert full["source"] == "cache" and full["path"] == first["path"]
    assert full["accuracy"] == first["accuracy"]


def test_recompute_trains_again_and_replaces_the_file(scored_run, tmp_path, monkeypatch):
    _, _, cache = scored_run
    calls = []
    monkeypatch.setattr(fair_scores, "train_full_data", lambda *a, **k: calls.append(a[1]) or 42.0)
    report = Trainer(
        scored_config(tmp_path / "copy", "eval.num_models=1"), tmp_path / "fresh"
    ).run()
    assert report["scores"]["models"]["ConvNet"]["full_data"]["source"] == "trained"
    again = Trainer(
        scored_config(tmp_path / "copy", "eval.scores_recompute=true"), tmp_path / "recompute"
    ).run()
    full = again["scores"]["models"]["ConvNet"]["full_data"]
    assert calls == ["ConvNet", "ConvNet"] and "replaced" in full["source"]
    assert json.loads(open(full["path"]).read())["accuracy"] == 42.0


def test_a_cache_file_of_another_recipe_is_refused(digits, factory, tmp_path):
    settings = EvalSettings(num_models=1, epochs=1, scores=True, scores_cache=str(tmp_path))
    key = fair_scores.full_data_key(factory, "ConvNet", digits, settings, None, {"name": "x"})
    path = fair_scores.cache_path(tmp_path, key)
    path.write_text(json.dumps({"accuracy": 50.0, "recipe": {**key, "format": "other"}}))
    with pytest.raises(InputError, match="another recipe"):
        fair_scores.full_data_accuracy(factory, "ConvNet", digits, settings, None, {"name": "x"})
    path.write_text("{not json")
    with pytest.raises(InputError, match="unreadable"):
        fair_scores.full_data_accuracy(factory, "ConvNet", digits, settings, None, {"name": "x"})


# -- the random subset and its pairing ----------------------------------------------------------
def direct_scores(data, factory, settings, images, labels, seed=0, **options):
    """compute_scores after an evaluation from stream eval/9, as the trainer calls it."""
    syn = evaluate_set(
        images, labels, data, factory, settings, None, stream(seed, "eval/9"), progress=False
    )
    settings = dataclasses.replace(settings, scores_full_epochs=1)
    return fair_scores.compute_scores(
        images,
        labels,
        data,
        factory,
        settings,
        None,
        seed,
        ipc=2,
        syn_accuracy=syn,
        eval_stream="eval/9",
        dataset_cfg={"name": "digits", "image_size": 8},
        **options,
    )


def test_the_random_subset_is_the_same_for_every_set_and_shares_the_models(
    digits, factory, tmp_path
):
    settings = EvalSettings(
        num_models=2,
        epochs=2,
        batch_size=16,
        scores=True,
        scores_cache=str(tmp_path),
    )
    subset = digits.sample_per_class(2, stream(0, fair_scores.RANDOM_STREAM))
    other = digits.sample_per_class(2, torch.Generator().manual_seed(123))
    as_random = direct_scores(digits, factory, settings, *subset)
    as_other = direct_scores(digits, factory, settings, *other)
    runs = as_random["models"]["ConvNet"]["runs"]
    # The synthetic set IS the random subset: same models, same draws, so IOR is exactly 0.
    assert runs["random"] == runs["syn"] and as_random["models"]["ConvNet"]["ior"] == 0.0
    assert runs["rdm_noaug"] == runs["syn_noaug"]
    assert as_other["models"]["ConvNet"]["runs"]["random"] == runs["random"]
    assert as_other["models"]["ConvNet"]["runs"]["syn"] != runs["syn"]


def test_protocols_reuse_the_runs_evaluation_where_they_coincide():
    dsa = object()  # stands for an enabled augmentation
    hard = EvalSettings()
    specs = fair_scores.protocols(hard, dsa, None)
    assert specs["run"] == specs["hard"] == specs["aug"] == ("hard", "run")
    assert specs["noaug"] == ("hard", "none")
    soft = EvalSettings(labels="soft")
    specs = fair_scores.protocols(soft, dsa, None)
    assert specs["hard"] == ("hard", "run") != specs["run"]
    # No augmentation in the protocol: the run's DSA is the "with" side, or no ARS at all.
    plain = fair_scores.protocols(hard, None, dsa)
    assert plain["run"] == plain["noaug"] == ("hard", "none")
    assert plain["aug"] == ("hard", "fallback")
    assert fair_scores.protocols(hard, None, None)["aug"] is None
    assert fair_scores.protocols(EvalSettings(cutmix_p=0.5), None, None)["run"] == ("hard", "run")


def test_without_any_augmentation_ars_is_absent_but_lrs_is_there(digits, factory, tmp_path):
    settings = EvalSettings(num_models=1, epochs=1, scores=True, scores_cache=str(tmp_path))
    images, labels = digits.sample_per_class(2, torch.Generator().manual_seed(5))
    scores = direct_scores(digits, factory, settings, images, labels)
    model = scores["models"]["ConvNet"]
    assert model["ars"] is None and model["accuracies"]["syn_aug"] is None
    assert model["lrs"] is not None and scores["ingredients"]["syn_noaug"]["reuses"] == "syn"


# -- lr selection: validation only --------------------------------------------------------------
def test_the_lr_grid_is_chosen_on_validation_and_never_on_test(
    digits, factory, tmp_path, monkeypatch
):
    """A fake evaluation in which validation prefers lr 0.1 and test prefers lr 0.001: the
    chosen lr is validation's, and no selection call is handed the test split."""
    data = digits.hold_out(5)
    val_images = data.validation[0]
    calls = []

    def fake(images, labels, split, factory, settings, augment, generator, lr=None, **kw):
        on_validation = split.test_images is val_images
        assert on_validation or split.test_images is data.test_images
        calls.append((on_validation, lr, kw.get("desc", "")))
        best = 0.1 if on_validation else 0.001
        acc = 90.0 if lr == best else 50.0
        return {m: {"mean": acc, "std": 0.0, "runs": [acc], "n": 1} for m in settings.models}

    monkeypatch.setattr(fair_scores, "evaluate_set", fake)
    monkeypatch.setattr(fair_scores, "train_full_data", lambda *a, **k: 95.0)
    settings = EvalSettings(
        num_models=1,
        epochs=1,
        scores=True,
        scores_cache=str(tmp_path),
        scores_lr_grid=(0.001, 0.01, 0.1),
    )
    syn = {"ConvNet": {"mean": 80.0, "std": 0.0, "runs": [80.0], "n": 1}}
    images, labels = data.sample_per_class(2, torch.Generator().manual_seed(1))
    scores = fair_scores.compute_scores(
        images, labels, data, factory, settings, None, 0,
        ipc=2, syn_accuracy=syn, eval_stream="eval/0",
    )  # fmt: skip
    selection = scores["lr_selection"]["by_protocol"]["labels=hard, augmentation=none"]
    assert selection["chosen"] == 0.1 and selection["split"] == "validation"
    assert [t["lr"] for t in selection["tried"]] == [0.001, 0.01, 0.1]
    selecting = [c for c in calls if "on validation" in c[2]]
    assert len(selecting) == 3 and all(on_val for on_val, _, _ in selecting)
    tested = [c for c in calls if not c[0]]
    assert tested and all(lr == 0.1 for _, lr, desc in tested if "random" in desc)
    assert scores["ingredients"]["random"]["lr"] == 0.1
    assert scores["ingredients"]["syn"]["lr"] == settings.lr  # the synthetic side keeps its lr


def test_real_selection_trains_on_validation_only(digits, factory, tmp_path, monkeypatch):
    """The real training loop, spied: while lrs are tried, every network is tested on the
    validation split; the test split sees only the chosen lr (and the synthetic side's)."""
    data = digits.hold_out(5)
    seen = []
    real = protocol.train_and_test

    def spy(factory, images, labels, test_images, test_labels, settings, augment, gen, lr=None,
            teacher=None):  # fmt: skip
        split = "validation" if test_images is data.validation[0] else "test"
        assert split == "validation" or test_images is data.test_images
        seen.append((split, lr))
        return real(factory, images, labels, test_images, test_labels, settings, augment, gen,
                    lr, teacher)  # fmt: skip

    monkeypatch.setattr(protocol, "train_and_test", spy)
    settings = EvalSettings(
        num_models=1,
        epochs=1,
        batch_size=16,
        scores=True,
        scores_cache=str(tmp_path),
        scores_lr_grid=(0.001, 0.05),
    )
    images, labels = data.sample_per_class(2, torch.Generator().manual_seed(1))
    scores = direct_scores(data, factory, settings, images, labels)
    chosen = scores["lr_selection"]["by_protocol"]["labels=hard, augmentation=none"]["chosen"]
    assert {lr for split, lr in seen if split == "validation"} == {0.001, 0.05}
    assert {lr for split, lr in seen if split == "test"} <= {None, chosen}
    assert scores["ingredients"]["random"]["lr"] == chosen


# -- bad options --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"scores": "yes"}, "eval.scores must be true or false"),
        ({"scores_recompute": 1}, "eval.scores_recompute must be true or false"),
        ({"scores_full_epochs": 0}, "eval.scores_full_epochs must be a positive integer"),
        ({"scores_full_epochs": 2.5}, "eval.scores_full_epochs must be a positive integer"),
        ({"scores_lr_grid": (0.01, -1.0)}, "finite learning rates > 0"),
        ({"scores_lr_grid": (0.01, math.nan)}, "finite learning rates > 0"),
        ({"scores_lr_grid": (0.01, 0.01)}, "repeats a learning rate"),
        ({"scores_lr_grid": "0.01"}, "must be a list of learning rates"),
        ({"scores_weight": 1.5}, "eval.scores_weight must be a number in [0, 1]"),
        ({"scores_gamma": -0.1}, "eval.scores_gamma must be a number in [0, 1]"),
        ({"scores_cache": ""}, "eval.scores_cache must be a directory path or null"),
        ({"scores": True, "num_models": 0}, "eval.scores needs eval.num_models >= 1"),
    ],
)
def test_bad_score_options_are_one_line_config_errors(options, message):
    with pytest.raises(ConfigError) as error:
        EvalSettings(**options)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_grid_without_a_validation_split_is_refused_before_distilling(tmp_path):
    cfg = scored_config(tmp_path / "cache", "eval.scores_lr_grid=[0.01,0.1]")
    with pytest.raises(ConfigError, match="dataset.validation is 0") as error:
        Trainer(cfg, tmp_path / "run")
    assert "\n" not in str(error.value)


def test_the_eval_block_accepts_the_score_keys_from_yaml():
    cfg = compose_config([*TINY, "eval.scores=true", "eval.scores_lr_grid=[0.01,0.03]"])
    settings = EvalSettings.from_config(cfg.eval)
    assert settings.scores and settings.scores_lr_grid == (0.01, 0.03)
    assert settings.scores_cache is None and settings.scores_full_epochs == 200
    assert fair_scores.cache_dir(settings).parts[-2:] == ("distillkit", "full_data")


# -- distillkit-eval and distillkit-summary -----------------------------------------------------
def test_distillkit_eval_scores_a_saved_set(scored_run, tmp_path, capsys):
    from distillkit.cli.evaluate import main as evaluate_saved

    _, run_dir, cache = scored_run
    out = tmp_path / "eval.json"
    evaluate_saved(
        [
            str(run_dir / "synthetic_set.pt"),
            "--num-models", "1", "--epochs", "2", "--device", "cpu",
            "--scores", "--scores-cache", str(cache), "--scores-full-epochs", "2",
            "--output", str(out),
        ]
    )  # fmt: skip
    written = json.loads(out.read_text())
    model = written["scores"]["models"]["ConvNet"]
    assert set(model["accuracies"]) == set(ACCURACY_KEYS)
    assert model["full_data"]["source"] == "cache"  # the run's full-data model, not retrained
    assert written["scores"]["model_seeds"].startswith("stream 'eval/saved'")
    printed = capsys.readouterr().out
    assert "LRS" in printed and "ARS" in printed and "(cache:" in printed


def test_summary_shows_lrs_and_ars_columns_when_present(scored_run):
    from distillkit.cli.summary import render

    report, _, _ = scored_run
    table = render([report])
    header = table.splitlines()[0]
    assert "| IPC 10 | LRS 10 | ARS 10 |" in header
    lrs = report["scores"]["headline"]["lrs"]
    assert f"{lrs:.3f} ± 0.000" in table
    plain = {k: v for k, v in report.items() if k != "scores"}
    assert "LRS" not in render([plain])
    assert "LRS 10" in render([report, {**plain, "method": "random"}])
