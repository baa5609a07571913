"""The trainer end to end on tiny settings: outputs, reproducibility, W&B offline, saved sets."""

from __future__ import annotations

import csv
import json
import sys

import pytest
import torch

from distillkit.methods import method_name
from distillkit.synthetic import SyntheticSet
from distillkit.trainer import Trainer


def run(cfg, run_dir):
    return Trainer(cfg, run_dir).run()


def test_run_writes_every_output(tiny_config, tmp_path, digits):
    results = run(tiny_config("method=dm", "ipc=2", "log_every=1"), tmp_path)
    for name in (
        "metrics.jsonl",
        "results.json",
        "synthetic_set.pt",
        "grid_init.png",
        "grid_final.png",
        "checkpoint.pt",
        "results.csv",
    ):
        assert (tmp_path / name).exists(), name
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train/loss" in r] == [1, 2, 3]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["method"] == "dm" and saved["ipc"] == 2 and saved["seed"] == 0
    assert saved["headline"]["model"] == "ConvNet"
    # A percentage of the test split (not a fraction), the mean of one run per eval network.
    accuracy = saved["accuracy"]["ConvNet"]
    assert accuracy["n"] == len(accuracy["runs"]) == 1
    assert accuracy["mean"] == pytest.approx(sum(accuracy["runs"]) / len(accuracy["runs"]))
    for percent in accuracy["runs"]:
        correct = percent * len(digits.test_labels) / 100
        assert correct == pytest.approx(round(correct), abs=1e-6) and round(correct) >= 1
    assert saved["headline"]["mean"] == accuracy["mean"]
    (row,) = csv.DictReader((tmp_path / "results.csv").open())
    assert float(row["mean"]) == pytest.approx(accuracy["mean"])
    assert saved["versions"]["torch"] == torch.__version__
    assert results["headline"] == saved["headline"]
    synthetic, state = SyntheticSet.load(tmp_path / "synthetic_set.pt")
    assert synthetic.images.shape == (20, 1, 8, 8)
    assert state["config"]["method"]["name"] == method_name(state["config"]["method"]) == "dm"
    assert state["meta"]["class_names"][3] == "3"


def test_same_seed_gives_an_identical_synthetic_set(tiny_config, tmp_path):
    sets = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        run(tiny_config("ipc=2", f"seed={seed}", "eval.num_models=0"), tmp_path / name)
        sets.append(SyntheticSet.load(tmp_path / name / "synthetic_set.pt")[0].images)
    assert torch.equal(sets[0], sets[1])
    assert not torch.equal(sets[0], sets[2])


def test_random_baseline_runs_no_iterations(tiny_config, tmp_path):
    results = run(tiny_config("method=random", "ipc=1"), tmp_path)
    assert results["iterations"] == 0 and results["final_loss"] is None


def test_wandb_offline_run_holds_the_results_table(tiny_config, tmp_path):
    run(tiny_config("logger=wandb", "ipc=1"), tmp_path)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    tables = list(runs[0].rglob("results_*.table.json"))
    assert tables, "the results table was not written to the offline run"
    table = json.loads(tables[0].read_text())
    assert table["columns"][:4] == ["method", "regularizers", "dataset", "ipc"]
    assert table["data"][0][0] == "dm"


def test_distillkit_eval_reevaluates_a_saved_set(tiny_config, tmp_path, monkeypatch, capsys):
    from distillkit.cli.evaluate import main as evaluate_saved

    run(tiny_config("ipc=1"), tmp_path)
    out = tmp_path / "eval.json"
    evaluate_saved(
        [
            str(tmp_path / "synthetic_set.pt"),
            "--models",
            "ConvNet",
            "MLP",
            "--num-models",
            "2",
            "--epochs",
            "2",
            "--device",
            "cpu",
            "--output",
            str(out),
        ]
    )
    accuracy = json.loads(out.read_text())["accuracy"]
    assert set(accuracy) == {"ConvNet", "MLP"} and accuracy["MLP"]["n"] == 2
    assert "MLP:" in capsys.readouterr().out


def test_distillkit_eval_with_another_augmentation_and_the_flips(
    tiny_config, tmp_path, monkeypatch
):
    """--dsa-strategy flip evaluates with random flips only; --with-flips trains on every stored
    image and its mirror image (what FYI matched), the labels repeated."""
    import distillkit.evaluation as evaluation
    from distillkit.cli.evaluate import main as evaluate_saved

    run(tiny_config("ipc=1"), tmp_path)
    seen = []
    real = evaluation.evaluate_set

    def recording(images, labels, data, factory, settings, augment, *args, **kwargs):
        seen.append((images.clone(), labels.clone(), augment))
        return real(images, labels, data, factory, settings, augment, *args, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate_set", recording)
    out = tmp_path / "eval.json"
    common = ["--num-models", "1", "--epochs", "1", "--device", "cpu", "--output", str(out)]
    evaluate_saved([str(tmp_path / "synthetic_set.pt"), *common])
    evaluate_saved([str(tmp_path / "synthetic_set.pt"), "--dsa-strategy", "flip", "--with-flips",
                    *common])  # fmt: skip
    (stored, stored_labels, _), (doubled, doubled_labels, augment) = seen
    n = stored.shape[0]
    assert torch.equal(doubled[:n], stored) and torch.equal(doubled[n:], stored.flip(-1))
    assert torch.equal(doubled_labels, torch.cat([stored_labels, stored_labels]))
    assert augment.families == ("flip",)
    written = json.loads(out.read_text())
    assert written["with_flips"] is True and "flip" in written["augment"]
    with pytest.raises(SystemExit) as refused:
        evaluate_saved([str(tmp_path / "synthetic_set.pt"), "--no-dsa", "--augment", "dc"])
    assert refused.value.code == 2


def test_distillkit_eval_refuses_a_foreign_file(tmp_path, capsys):
    from distillkit.cli.evaluate import main as evaluate_saved

    bad = tmp_path / "not_a_set.pt"
    torch.save({"weights": torch.zeros(3)}, bad)
    with pytest.raises(SystemExit) as exit_info:
        evaluate_saved([str(bad)])
    assert exit_info.value.code == 2
    assert "not a distillkit synthetic set" in capsys.readouterr().err


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
