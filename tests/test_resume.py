"""Checkpoint and resume: a killed run continues to the same synthetic set, bit for bit.

The subprocess test kills the real command (SIGKILL, and once SIGTERM) at seeded random points and
re-runs it in the same run directory; the in-process tests cover signals, `resume=path`, the
metrics log, intermediate evaluations and IDM's queue.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from helpers import TINY, compose_config, crash_at, signal_at, start_distillkit

from distillkit.synthetic import SyntheticSet
from distillkit.trainer import RunInterrupted, Trainer

#: DM with tiny real batches, a checkpoint and a log line every iteration, two intermediate
#: evaluations: ~80 ms an iteration on a CPU.
KILLED = [
    *TINY,
    "ipc=2",
    "method.iterations=40",
    "method.batch_real=16",
    "checkpoint.every=1",
    "log_every=1",
    "eval.at=[7,19]",
    "unequalness.enabled=false",
    "images.flips=false",
]


def loss_log(run_dir: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["train/loss"]) for r in records if "train/loss" in r]


def assert_same_run(run_dir: Path, reference: Path) -> None:
    """Identical final set (bit for bit), losses, evaluations; no duplicated log lines."""
    images = SyntheticSet.load(run_dir / "synthetic_set.pt")[0].images
    assert torch.equal(images, SyntheticSet.load(reference / "synthetic_set.pt")[0].images)
    assert loss_log(run_dir) == loss_log(reference)
    results, expected = (json.loads((d / "results.json").read_text()) for d in (run_dir, reference))
    assert results["evaluations"] == expected["evaluations"]
    assert results["final_loss"] == expected["final_loss"]


def checkpoint_id(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def start(overrides: list[str], cwd: Path):
    return start_distillkit(overrides, cwd)


def kill_after_checkpoints(
    proc: subprocess.Popen, checkpoint: Path, writes: int, delay: float, sig: int
) -> None:
    """Send `sig` `delay` seconds after the `writes`-th new checkpoint of this process."""
    seen, last = 0, checkpoint_id(checkpoint)
    deadline = time.monotonic() + 120
    while seen < writes:
        assert proc.poll() is None, f"the run ended before it was killed: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "no checkpoint was written"
        current = checkpoint_id(checkpoint)
        if current != last:
            seen, last = seen + 1, current
        time.sleep(0.002)
    time.sleep(delay)
    assert proc.poll() is None, "the run ended before it was killed"
    proc.send_signal(sig)
    proc.wait(timeout=60)


def test_killed_at_random_iterations_and_resumed_gives_the_same_set(tmp_path):
    reference = tmp_path / "reference"
    Trainer(compose_config(KILLED), reference).run()
    run_dir = tmp_path / "killed"
    command = [*KILLED, f"hydra.run.dir={run_dir}"]
    rng = random.Random(9)
    reached = []
    for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGKILL):
        proc = start(command, tmp_path)
        kill_after_checkpoints(
            proc, run_dir / "checkpoint.pt", rng.randint(1, 4), rng.uniform(0, 0.08), sig
        )
        stderr = proc.stderr.read()
        if sig == signal.SIGTERM:  # graceful: a checkpoint at the boundary, one line, 128 + 15
            assert proc.returncode == 143, stderr
            assert "Traceback" not in stderr and "interrupted: SIGTERM at iteration" in stderr
        else:
            assert proc.returncode == -signal.SIGKILL
        reached.append(torch.load(run_dir / "checkpoint.pt", weights_only=True)["iteration"])
    assert 0 < reached[0] < reached[1] < reached[2] < 40, reached
    proc = start(command, tmp_path)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert not list(run_dir.glob(".checkpoint.pt.*.tmp"))
    assert_same_run(run_dir, reference)


# -- in-process ---------------------------------------------------------------------------------
SMALL = [
    *TINY,
    "ipc=1",
    "method.iterations=6",
    "method.batch_real=16",
    "checkpoint.every=2",
    "log_every=1",
    "eval.at=[3]",
    "unequalness.enabled=false",
    "images.flips=false",
]


@pytest.fixture(scope="module")
def small_reference(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("reference")
    Trainer(compose_config(SMALL), run_dir).run()
    return run_dir


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_checkpoints_at_the_next_boundary(small_reference, tmp_path, sig):
    before = signal.getsignal(sig)
    trainer = Trainer(compose_config(SMALL), tmp_path)
    signal_at(trainer, 2, sig)
    with pytest.raises(RunInterrupted, match=f"{signal.Signals(sig).name} at iteration 3"):
        trainer.run()
    assert signal.getsignal(sig) is before  # handlers are restored
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["iteration"] == 3
    resumed = Trainer(compose_config(SMALL), tmp_path)
    assert resumed.start_iteration == 3
    resumed.run()
    assert_same_run(tmp_path, small_reference)


def test_crash_after_a_checkpoint_drops_the_later_log_lines(small_reference, tmp_path):
    trainer = Trainer(compose_config(SMALL), tmp_path)
    crash_at(trainer, 5, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    assert [s for s, _ in loss_log(tmp_path)] == [1, 2, 3, 4, 5]  # 5 is after checkpoint 4
    resumed = Trainer(compose_config(SMALL), tmp_path)
    assert resumed.start_iteration == 4 and len(resumed.evaluations) == 1
    assert [s for s, _ in loss_log(tmp_path)] == [1, 2, 3, 4]
    resumed.run()
    assert_same_run(tmp_path, small_reference)


def test_resume_from_another_directory(small_reference, tmp_path):
    first = tmp_path / "first"
    trainer = Trainer(compose_config(SMALL), first)
    crash_at(trainer, 3, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    second = tmp_path / "second"
    resumed = Trainer(compose_config([*SMALL, f"resume={first}"]), second)
    assert resumed.start_iteration == 2
    resumed.run()
    assert_same_run(second, small_reference)


def test_copy_to_outlives_the_run_directory(small_reference, tmp_path):
    """A session whose run directory is lost (a purged scratch disk, a fresh checkout) re-runs
    the same command and continues from `checkpoint.copy_to`."""
    copy = tmp_path / "kept" / "run.pt"
    command = [*SMALL, f"checkpoint.copy_to={copy}"]
    trainer = Trainer(compose_config(command), tmp_path / "lost")
    crash_at(trainer, 5, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    assert torch.load(copy, weights_only=True)["iteration"] == 4
    run_dir = tmp_path / "again"  # the same command, its run directory gone
    resumed = Trainer(compose_config(command), run_dir)
    assert resumed.start_iteration == 4 and resumed.checkpoint.last_good == copy
    resumed.run()
    assert_same_run(run_dir, small_reference)
    assert torch.load(copy, weights_only=True)["iteration"] == 6  # the end writes the copy too


def test_resume_path_that_does_not_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        Trainer(compose_config([*SMALL, f"resume={tmp_path / 'nowhere'}"]), tmp_path / "run")


def test_idm_queue_and_its_generator_resume_exactly(tmp_path):
    overrides = [
        *SMALL,
        "method=idm",
        "method.iterations=3",
        "method.net_generate_interval=2",  # pushes at 0 and 2: the second after the resume
        "method.net_num=3",
        "method.batch_train=32",
        "method.model_train_steps=1",
        "eval.at=[]",
        "eval.num_models=0",
    ]
    Trainer(compose_config(overrides), tmp_path / "full").run()
    trainer = Trainer(compose_config(overrides), tmp_path / "resumed")
    crash_at(trainer, 2, RuntimeError("killed"))
    with pytest.raises(RuntimeError):
        trainer.run()
    resumed = Trainer(compose_config(overrides), tmp_path / "resumed")
    assert resumed.start_iteration == 2 and len(resumed.method.queue) == 3
    resumed.run()
    full = SyntheticSet.load(tmp_path / "full" / "synthetic_set.pt")[0].images
    again = SyntheticSet.load(tmp_path / "resumed" / "synthetic_set.pt")[0].images
    assert torch.equal(full, again)
    assert loss_log(tmp_path / "resumed") == loss_log(tmp_path / "full")


# The W&B side of a resume (a new offline run that replays the history and names the run it
# supersedes; online, the same id) is tested in tests/test_wandb.py.


@pytest.mark.parametrize(
    "cell, overrides",
    [
        ("cifar10_dc_fyi_ipc1", ["method=dc", "regularizer=fyi"]),
        ("cifar10_dsa_ipc1", ["method=dsa", "regularizer=none"]),
    ],
)
def test_the_committed_published_budget_checkpoints_still_resume(cell, overrides):
    """The checkpoint copies of the long CIFAR-10 runs (experiments/published_cpu.sh) were
    written by an older config schema; today's config for the same line must not differ (keys
    added since carry their defaults, retired ones are dropped), or the runs restart from 0."""
    from distillkit.checkpoint import config_differences
    from distillkit.config import checked_config

    path = Path(__file__).parents[1] / "benchmarks/results/published_cpu/in_progress" / f"{cell}.pt"
    if not path.exists():
        pytest.skip(f"{path.name}: the run has finished (no checkpoint copy is kept)")
    saved = torch.load(path, map_location="cpu", weights_only=False)["config"]
    line = [
        *overrides, "dataset=cifar10", "dataset.root=../shared/data", "ipc=1",
        "eval.num_models=20", "dsa.always_flip=true", "eval.always_flip=true",
        "checkpoint.every=10", "checkpoint.every_s=120",
        f"checkpoint.copy_to=benchmarks/results/published_cpu/in_progress/{cell}.pt",
    ]  # fmt: skip
    current = checked_config(compose_config(line), resources=False)
    assert config_differences(saved, current) == []
