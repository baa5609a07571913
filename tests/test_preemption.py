"""Preemption and time limits: submitit's signal (SIGUSR2) writes a checkpoint at the next
iteration boundary, then hands over to submitit's requeue; the requeued job resumes.

The fast tests deliver the signal in-process with a stand-in for submitit's handler; the slow one
runs a real sweep under Hydra's submitit_local launcher, whose controller re-runs a job that
exits with submitit's requeue code (a requeue as on SLURM, minus the scheduler).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from helpers import TINY, compose_config, signal_at, start_distillkit

from distillkit.checkpoint import CheckpointSchedule, StopSignals, preemption_signal
from distillkit.synthetic import SyntheticSet
from distillkit.trainer import RunInterrupted, Trainer

SMALL = [
    *TINY,
    "ipc=1",
    "method.iterations=6",
    "method.batch_real=16",
    "checkpoint.every=0",
    "log_every=1",
    "unequalness.enabled=false",
    "images.flips=false",
    "eval.num_models=0",
]


def images(run_dir: Path) -> torch.Tensor:
    return SyntheticSet.load(run_dir / "synthetic_set.pt")[0].images


class Requeued(Exception):
    """What the stand-in for submitit's handler raises (submitit: requeue + sys.exit)."""


@pytest.mark.parametrize("env", [None, "USR1"])
def test_preemption_signal_checkpoints_then_hands_over(tmp_path, monkeypatch, env):
    if env:
        monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", env)
    sig = preemption_signal()
    assert sig == (signal.SIGUSR1 if env else signal.SIGUSR2)
    calls: list[tuple[int, int]] = []

    def submitit_handler(signum, frame):  # runs after the checkpoint is on disk
        state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
        calls.append((signum, state["iteration"]))
        raise Requeued

    previous = signal.signal(sig, submitit_handler)
    try:
        trainer = Trainer(compose_config(SMALL), tmp_path / "run")
        signal_at(trainer, 2, sig)
        with pytest.raises(Requeued):
            trainer.run()
        assert calls == [(sig, 3)]  # the boundary after the step that got the signal
        assert signal.getsignal(sig) is submitit_handler  # restored
    finally:
        signal.signal(sig, previous)
    resumed = Trainer(compose_config(SMALL), tmp_path / "run")  # the requeued job
    assert resumed.start_iteration == 3
    resumed.run()
    Trainer(compose_config(SMALL), tmp_path / "reference").run()
    assert torch.equal(images(tmp_path / "run"), images(tmp_path / "reference"))


def test_preemption_without_a_python_handler_is_a_plain_interruption(tmp_path):
    """Outside submitit (default handler), SIGUSR2 stops the run like SIGTERM does."""
    trainer = Trainer(compose_config(SMALL), tmp_path)
    signal_at(trainer, 1, signal.SIGUSR2)
    with pytest.raises(RunInterrupted, match="SIGUSR2 at iteration 2"):
        trainer.run()
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL


def test_stop_signals_leave_handlers_alone_when_nothing_arrives():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)}
    with StopSignals() as stop:
        assert not stop.requested
    assert {s: signal.getsignal(s) for s in before} == before


def test_time_based_checkpoint_interval(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    schedule = CheckpointSchedule(every=0, every_s=60)
    assert not schedule.due(1, 10)
    clock[0] += 61
    assert schedule.due(2, 10) and not schedule.due(10, 10)  # the end writes its own
    schedule.written()
    assert not schedule.due(3, 10)
    assert CheckpointSchedule(every=5).due(5, 10) and not CheckpointSchedule(every=5).due(4, 10)


# -- a real requeue under Hydra's submitit_local launcher -----------------------------------------
LOCAL = [
    "method=dm",
    "dataset.image_size=8",
    "model.width=8",
    "ipc=2",
    "method.iterations=60",
    "method.batch_real=16",
    "log_every=1",
    "checkpoint.every=0",
    "progress=false",
    "device=cpu",
    "eval.num_models=0",
    "unequalness.enabled=false",
    "images.flips=false",
]


def run_cli(args: list[str], cwd: Path, **kwargs):
    return start_distillkit(args, cwd, stderr=subprocess.STDOUT, **kwargs)


def logged_steps(run_dir: Path) -> int:
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    return max((json.loads(line)["step"] for line in lines if line.strip()), default=0)


def children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.slow
def test_submitit_local_requeue_resumes_to_the_same_set(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    proc = run_cli(
        ["-m", "hydra/launcher=submitit_local", f"hydra.sweep.dir={sweep}", *LOCAL], tmp_path
    )
    job_dir = sweep / "0"
    deadline = time.monotonic() + 300
    while logged_steps(job_dir) < 5:  # the job is distilling
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # submitit_local's job id is the pid of its controller (.submitit/<pid>/); the job runs in
    # the controller's child process, which is where SLURM's signal would arrive.
    (job_id,) = [p.name for p in (sweep / ".submitit").iterdir() if p.name.isdigit()]
    (task,) = children(int(job_id))
    os.kill(task, signal.SIGUSR2)  # what submitit asks SLURM to send before a time limit
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    log = "".join(p.read_text() for p in sorted((sweep / ".submitit" / job_id).glob("*_log.*")))
    assert "SIGUSR2 received" in log and "Requeued job" in log, log
    stopped = int(log.split("SIGUSR2 at iteration ")[1].split(":")[0])
    assert 5 <= stopped < 60
    assert f"resuming from iteration {stopped}" in log  # the requeued job, same directory
    reference = tmp_path / "reference"
    ref = run_cli([f"hydra.run.dir={reference}", *LOCAL], tmp_path)
    out, _ = ref.communicate(timeout=600)
    assert ref.returncode == 0, out
    assert torch.equal(images(job_dir), images(reference))
