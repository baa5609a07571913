"""The error boundary: a user error is one line and exit 2; a bug anywhere else (even a plain
ValueError) keeps its traceback and exit 1; a multirun's failed jobs are returned, not kept in
module state, and the command exits 1 listing them."""

from __future__ import annotations

import json
import traceback

import pytest
from helpers import TINY

import distillkit.cli.distill
from distillkit.cli import _common
from distillkit.cli.distill import distill_job
from distillkit.cli.distill import main as distill
from distillkit.errors import ConfigError, InputError, UserError

#: On top of TINY: no evaluation, U(S) or flip figure (a run takes about a second).
QUICK = [*TINY, "ipc=1", "eval.num_models=0", "unequalness.enabled=false", "images.flips=false"]


def run_distillkit(argv: list[str], capsys) -> tuple[int, str]:
    """`distillkit argv` in this process: (exit status, stderr). Hydra prints an exception that
    reaches it and exits 1; under a tracer (a debugger, coverage) it re-raises it instead, which
    Python would print as a traceback with exit 1 too."""
    capsys.readouterr()
    try:
        distill(argv)
        status = 0
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    except Exception:
        traceback.print_exc()
        status = 1
    return status, capsys.readouterr().err


def plant_bug(monkeypatch) -> None:
    """DM's step raises a plain ValueError, as a programming error inside distillkit would."""

    def planted_step(self, iteration: int):
        raise ValueError("planted bug")

    monkeypatch.setattr("distillkit.methods.dm.DistributionMatching.step", planted_step)


def test_user_errors_are_value_errors_but_not_every_value_error_is_one():
    assert issubclass(ConfigError, UserError) and issubclass(ConfigError, ValueError)
    assert issubclass(InputError, UserError) and issubclass(InputError, ValueError)
    assert _common.exit_status(ConfigError("x")) == _common.EXIT_USER
    assert _common.exit_status(InputError("x")) == _common.EXIT_USER
    assert _common.exit_status(FileNotFoundError("x")) == _common.EXIT_USER
    assert _common.exit_status(FloatingPointError("x")) == _common.EXIT_NUMERICAL
    assert _common.exit_status(ValueError("x")) is None
    assert ValueError not in _common.USER_ERRORS


def test_hydra_composition_errors_are_the_users(tmp_path):
    from hydra import compose, initialize_config_module
    from hydra.errors import MissingConfigException, OverrideParseException

    for override, error in (("method=nosuch", MissingConfigException), ("seed=(", None)):
        with initialize_config_module(config_module="distillkit.conf", version_base="1.3"):
            with pytest.raises(Exception) as info:
                compose("config", overrides=[override])
        assert _common.exit_status(info.value) == _common.EXIT_USER, repr(info.value)
        assert error is None or isinstance(info.value, error)
    assert _common.exit_status(OverrideParseException("x=(", "bad")) == _common.EXIT_USER


def test_a_bug_in_a_method_prints_its_traceback_and_exits_1(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    plant_bug(monkeypatch)
    status, err = run_distillkit([*QUICK, "method=dm", f"hydra.run.dir={tmp_path}"], capsys)
    assert status == 1, err
    assert "Traceback" in err and "planted_step" in err and "ValueError: planted bug" in err
    assert "distillkit: error:" not in err


def test_a_user_error_is_one_line_and_exit_2(tmp_path, capsys):
    status, err = run_distillkit(
        [*QUICK, "method=dm", "method.lr_img=-1", f"hydra.run.dir={tmp_path}"], capsys
    )
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("distillkit: error: method.lr_img must be > 0"), err


def test_a_bad_input_file_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    status, err = run_distillkit(
        [*QUICK, "checkpoint.every=1", f"hydra.run.dir={tmp_path}"], capsys
    )
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("distillkit: error: "), err
    assert "not a readable distillkit checkpoint" in lines[0]


def test_a_failed_multirun_job_is_returned_not_kept(tmp_path, capsys, monkeypatch):
    """Job 0 has a bug, job 1 completes: the runner returns job 0's failure (failed.json with
    the traceback), the command exits 1 listing it, and nothing is left in module state."""
    sweep = tmp_path / "sweep"
    plant_bug(monkeypatch)
    argv = ["-m", *QUICK, "method=dm,random", f"hydra.sweep.dir={sweep}"]
    capsys.readouterr()
    failures = _common.run_hydra_command(distill_job, "config", argv)
    err = capsys.readouterr().err
    assert [f.run_dir for f in failures] == [sweep / "0"], err
    assert failures[0].line == "job 0 failed (ValueError): planted bug"
    assert "planted_step" in err  # a bug's traceback is printed, the sweep goes on
    record = json.loads((sweep / "0" / "failed.json").read_text())
    assert record["error"] == "ValueError" and record["method"] == "dm"
    assert any("planted_step" in line for line in record["traceback"])
    assert (sweep / "1" / "results.json").exists()
    assert not hasattr(distillkit.cli.distill, "FAILED_JOBS")

    # The command itself: exit 1 and one line per failed job (a fresh list: nothing carried over).
    again = tmp_path / "again"
    status, err = run_distillkit(["-m", *QUICK, "method=dm,random", f"hydra.sweep.dir={again}"],
                                 capsys)  # fmt: skip
    assert status == 1, err
    assert "distillkit: 1 job(s) of the sweep failed:" in err
    assert "  job 0 failed (ValueError): planted bug" in err
    assert (again / "1" / "results.json").exists()


def test_the_table_launcher_gets_a_failed_job_back_in_its_return(tmp_path, monkeypatch):
    """distillkit.tables.launch: a job that fails in its body hands its JobFailure back in the
    JobReturn (whichever process ran it), with failed.json written; the next job still runs."""
    from hydra.core.utils import JobStatus

    from distillkit.cli._args import quote_numeric_group_choices
    from distillkit.tables.launch import launch

    plant_bug(monkeypatch)
    jobs = [
        quote_numeric_group_choices([*QUICK, f"method={m}", f"hydra.sweep.subdir={m}"])
        for m in ("dm", "random")
    ]
    returns = launch([f"hydra.sweep.dir={tmp_path}"], jobs)
    assert [r.status for r in returns] == [JobStatus.COMPLETED] * 2
    failure = returns[0].return_value
    assert isinstance(failure, _common.JobFailure) and failure.run_dir == tmp_path / "dm"
    assert failure.line == "job 0 failed (ValueError): planted bug"
    assert (tmp_path / "dm" / "failed.json").exists()
    assert not isinstance(returns[1].return_value, _common.JobFailure)
    assert (tmp_path / "random" / "results.json").exists()


def test_a_truncated_expert_shard_is_one_line_and_exit_2(tmp_path, capsys):
    import torch

    buffer = tmp_path / "buffer"
    buffer.mkdir()
    shard = buffer / "experts_00000.pt"
    torch.save({"format": "distillkit.experts/1"}, shard)
    shard.write_bytes(shard.read_bytes()[:50])
    argv = [*QUICK, "method=mtt", f"method.buffer={buffer}", f"hydra.run.dir={tmp_path / 'run'}"]
    status, err = run_distillkit(argv, capsys)
    assert status == 2, err
    assert err.strip().splitlines() == [err.strip()] and "not a readable expert shard" in err
