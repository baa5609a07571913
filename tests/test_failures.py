"""Bad files are refused naming the file; a non-finite loss keeps the last good state; a failing
multirun job is reported while the others complete."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from helpers import TINY, distillkit, poison_at

from distillkit.cli.summary import collect, render
from distillkit.experts import ExpertBufferError
from distillkit.synthetic import SyntheticSet
from distillkit.trainer import Trainer

#: On top of TINY: no evaluation, U(S) or flip figure, small real batches (a run takes ~1 s).
QUICK = [
    "eval.num_models=0",
    "unequalness.enabled=false",
    "images.flips=false",
    "method.batch_real=16",
]


@pytest.fixture
def finished_run(tiny_config, tmp_path):
    """A run directory with a complete checkpoint, and a maker of the same config."""

    def make(*extra: str):
        return tiny_config(*QUICK, "ipc=1", "checkpoint.every=1", *extra)

    run_dir = tmp_path / "run"
    Trainer(make(), run_dir).run()
    return run_dir, make


# -- checkpoints --------------------------------------------------------------------------------
def test_truncated_checkpoint_is_refused_and_nothing_is_touched(finished_run):
    run_dir, make = finished_run
    checkpoint = run_dir / "checkpoint.pt"
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2])
    metrics = (run_dir / "metrics.jsonl").read_bytes()
    with pytest.raises(ValueError, match="not a readable distillkit checkpoint") as info:
        Trainer(make(), run_dir)
    assert str(checkpoint) in str(info.value) and "truncated" in str(info.value)
    assert (run_dir / "metrics.jsonl").read_bytes() == metrics  # never half-loaded


def test_foreign_checkpoint_is_refused(finished_run):
    run_dir, make = finished_run
    torch.save({"state_dict": {"weight": torch.zeros(3)}}, run_dir / "checkpoint.pt")
    with pytest.raises(ValueError, match=r"checkpoint\.pt: not a distillkit checkpoint"):
        Trainer(make(), run_dir)


def test_pickled_objects_are_not_executed_or_loaded(finished_run):
    run_dir, make = finished_run
    (run_dir / "checkpoint.pt").write_bytes(pickle.dumps(Path("/"), protocol=2))
    with pytest.raises(ValueError, match=r"checkpoint\.pt: not a readable distillkit checkpoint"):
        Trainer(make(), run_dir)


def test_incomplete_checkpoint_names_what_is_missing(finished_run):
    run_dir, make = finished_run
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    del state["method"], state["generators"]
    torch.save(state, run_dir / "checkpoint.pt")
    with pytest.raises(ValueError, match="incomplete checkpoint, missing method, generators"):
        Trainer(make(), run_dir)


def test_checkpoint_that_does_not_fit_the_run_is_refused(finished_run):
    run_dir, make = finished_run
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    state["synthetic"]["images"] = torch.zeros(3, 1, 8, 8)
    torch.save(state, run_dir / "checkpoint.pt")
    with pytest.raises(ValueError, match=r"synthetic images of shape \(3, 1, 8, 8\)"):
        Trainer(make(), run_dir)


def test_checkpoint_of_another_configuration_names_the_difference(finished_run):
    run_dir, make = finished_run
    with pytest.raises(ValueError, match=r"different configuration \(differs in method\.lr_img\)"):
        Trainer(make("method.lr_img=2"), run_dir)


def test_cli_reports_a_truncated_checkpoint_in_one_line(finished_run, tmp_path):
    run_dir, _ = finished_run
    checkpoint = run_dir / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    overrides = [*TINY, *QUICK, "ipc=1", "checkpoint.every=1"]
    out = distillkit(*overrides, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr
    assert lines[0].startswith(f"distillkit: error: {checkpoint}: not a readable")


# -- synthetic sets and expert buffers ----------------------------------------------------------
def test_truncated_synthetic_set_is_refused(finished_run, capsys):
    from distillkit.cli.evaluate import main as evaluate_saved

    run_dir, _ = finished_run
    path = run_dir / "synthetic_set.pt"
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(ValueError, match="not a readable synthetic-set file") as info:
        SyntheticSet.load(path)
    assert str(path) in str(info.value)
    with pytest.raises(SystemExit) as exit_info:
        evaluate_saved([str(path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err


def test_incomplete_synthetic_set_is_refused(finished_run):
    run_dir, _ = finished_run
    path = run_dir / "synthetic_set.pt"
    state = torch.load(path, weights_only=False)
    del state["labels"]
    torch.save(state, path)
    with pytest.raises(ValueError, match="incomplete synthetic set, missing labels"):
        SyntheticSet.load(path)


def test_truncated_expert_shard_stops_mtt_at_start_up(tiny_config, tmp_path):
    buffer = tmp_path / "buffer"
    buffer.mkdir()
    torch.save({"format": "distillkit.experts/1"}, buffer / "experts_00000.pt")
    shard = buffer / "experts_00000.pt"
    shard.write_bytes(shard.read_bytes()[:50])
    cfg = tiny_config("method=mtt", f"method.buffer={buffer}")
    with pytest.raises(ExpertBufferError, match="not a readable expert shard") as info:
        Trainer(cfg, tmp_path / "run")
    assert str(shard) in str(info.value)


# -- numerical failure --------------------------------------------------------------------------
def test_forced_nan_keeps_the_last_good_checkpoint_and_set(tiny_config, tmp_path):
    # Checkpoints every 2 iterations, logs every 5: the NaN of iteration 6 (0-based 5) comes
    # after the log of 5 and must not reach the checkpoint of 6 (nor any log line).
    cfg = tiny_config(*QUICK, "ipc=1", "method.iterations=8", "checkpoint.every=2", "log_every=5")
    trainer = Trainer(cfg, tmp_path)
    poison_at(trainer, 5)
    expected = r"by iteration 6.*last good state \(iteration 4\)"
    with pytest.raises(FloatingPointError, match=expected):
        trainer.run()
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["iteration"] == 4
    assert torch.isfinite(state["synthetic"]["images"]).all()
    saved, extra = SyntheticSet.load(tmp_path / "synthetic_set.pt")
    assert extra["iteration"] == 4
    assert torch.equal(saved.images, state["synthetic"]["images"])
    assert "nan" not in (tmp_path / "metrics.jsonl").read_text().lower()


def test_nan_before_any_checkpoint_says_so(tiny_config, tmp_path):
    trainer = Trainer(tiny_config(*QUICK, "ipc=1", "log_every=1"), tmp_path)
    poison_at(trainer, 0)
    with pytest.raises(FloatingPointError, match="no checkpoint had been written yet"):
        trainer.run()
    assert not (tmp_path / "checkpoint.pt").exists()
    assert not (tmp_path / "synthetic_set.pt").exists()


def test_exploding_learning_rate_stops_with_exit_3(tmp_path):
    run_dir = tmp_path / "run"
    out = distillkit(
        *TINY,
        *QUICK,
        "ipc=1",
        "method.lr_img=1e30",
        "method.iterations=6",
        "checkpoint.every=1",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert out.returncode == 3, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "non-finite" in lines[0] and "last good state" in lines[0]
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert 1 <= state["iteration"] < 6
    assert torch.isfinite(state["synthetic"]["images"]).all()
    assert torch.isfinite(SyntheticSet.load(run_dir / "synthetic_set.pt")[0].images).all()


# -- multirun -----------------------------------------------------------------------------------
def test_a_failing_multirun_job_is_reported_and_the_others_complete(tmp_path):
    sweep = tmp_path / "sweep"
    out = distillkit(
        "-m",
        *TINY,
        "unequalness.enabled=false",
        "images.flips=false",
        "method=random",
        "ipc=200,1",  # job 0 cannot work: digits has fewer than 200 images in some class
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    failed = json.loads((sweep / "0" / "failed.json").read_text())
    assert failed["error"] == "ConfigError" and "ipc=200 needs 200" in failed["message"]
    assert (failed["method"], failed["dataset"], failed["ipc"]) == ("random", "digits", 200)
    assert (sweep / "1" / "results.json").exists()  # the job after the failure still ran
    assert "1 job(s) of the sweep failed" in out.stderr
    table = render(collect(sweep))
    assert "failed (ConfigError)" in table and "±" in table
