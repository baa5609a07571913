"""One distillation over two gloo processes on the CPU (`python -m distillkit` as torchrun starts
it, one thread each), against the same run in one process: the synthetic set, the evaluation,
the files rank 0 alone writes, a stop that one rank receives, a resume (on two processes and on
one), a dead rank, and the methods and launches that are refused with one line."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import finish_processes, free_port, launcher_free_env

from distillkit.io import load_torch
from distillkit.methods.random_subset import RandomSubset

REPO = Path(__file__).resolve().parents[1]
#: Seconds a run of a few tiny iterations may take on a busy 2-core machine (two imports of
#: torch at once, then the run).
RUN_S = 240
TINY = [
    "dataset=digits", "dataset.image_size=8", "model.width=8", "ipc=2", "eval.num_models=3",
    "eval.epochs=2", "progress=false", "checkpoint.every=0", "device=cpu",
    "unequalness.enabled=false", "images.flips=false",
]  # fmt: skip
DM = ["method=dm", "method.iterations=6", "method.batch_real=16"]
IDM = [
    "method=idm", "method.iterations=4", "method.batch_real=8", "method.batch_train=16",
    "method.model_train_steps=1", "method.initial_nets=1", "method.net_num=2",
]  # fmt: skip
#: What every rank of one run must agree on, written by rank 0 alone.
RUN_FILES = {"checkpoint.pt", "synthetic_set.pt", "results.json", "metrics.jsonl", "results.csv"}


def start(
    overrides: list[str], run_dir: Path, ranks: int, **extra_env: str
) -> list[subprocess.Popen]:
    """`ranks` processes of `python -m distillkit` with torchrun's variables (one: none)."""
    port = free_port()
    command = [sys.executable, "-m", "distillkit", *overrides, f"hydra.run.dir={run_dir}"]
    procs = []
    for rank in range(ranks):
        env = launcher_free_env(**extra_env)
        if ranks > 1:
            env.update(
                RANK=str(rank), WORLD_SIZE=str(ranks), LOCAL_RANK=str(rank),
                MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
            )  # fmt: skip
        procs.append(
            subprocess.Popen(
                command,
                env=env,
                cwd=REPO,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )  # fmt: skip
        )
    return procs


def finish(procs: list[subprocess.Popen], timeout: float = RUN_S) -> list[tuple[int, str]]:
    """(exit status, stderr) of each process; any still running after `timeout` is killed."""
    return [(status, stderr) for status, _, stderr in finish_processes(procs, timeout)]


def run(overrides: list[str], run_dir: Path, ranks: int) -> None:
    for status, stderr in finish(start(overrides, run_dir, ranks)):
        assert status == 0, stderr[-3000:]


def images(run_dir: Path) -> torch.Tensor:
    return load_torch(run_dir / "synthetic_set.pt", "set")["images"]


def accuracies(run_dir: Path) -> dict[str, list[float]]:
    results = json.loads((run_dir / "results.json").read_text())
    return {a: r["runs"] for a, r in results["accuracy"].items()}


def same_run(one: Path, two: Path, exact: bool = False, tolerance: float = 1e-5) -> None:
    """The two-process run's set is the one-process run's (allclose at `tolerance`, or bit for
    bit, when the evaluation models score the same too), and its logged losses agree."""
    a, b = images(one), images(two)
    if exact:
        assert torch.equal(a, b), (a - b).abs().max()
        assert accuracies(two) == accuracies(one)
    else:
        torch.testing.assert_close(b, a, rtol=tolerance, atol=tolerance)
    losses = [
        [r["train/loss"] for r in map(eval_json, (d / "metrics.jsonl").read_text().splitlines())
         if "train/loss" in r]
        for d in (one, two)
    ]  # fmt: skip
    assert losses[1] == pytest.approx(losses[0], rel=tolerance)


def eval_json(line: str) -> dict:
    return json.loads(line)


# -- the same run over two processes -------------------------------------------------------------
def test_dm_over_two_processes_is_the_one_process_run(tmp_path):
    """Classes sharded over the ranks (5 each), the 3 evaluation models spread 2 + 1: the same
    set (at this size bit for bit: every class's rows go through the network as in one
    process), the same accuracies, and rank 0's files alone in rank 0's run directory: each
    rank's Hydra names its own (here rank<RANK>, as timestamps may differ), and rank 1's, which
    holds only Hydra's files, is removed."""
    run(TINY + DM, tmp_path / "one", 1)
    run(TINY + DM, tmp_path / "two" / "rank${oc.env:RANK}", 2)
    main = tmp_path / "two" / "rank0"
    same_run(tmp_path / "one", main, exact=True)
    assert len(accuracies(main)["ConvNet"]) == 3
    assert RUN_FILES <= {p.name for p in main.iterdir()}
    assert [p.name for p in (tmp_path / "two").iterdir()] == ["rank0"]  # no stray directory


@pytest.mark.slow
def test_dm_with_fyi_over_two_processes_is_the_one_process_run(tmp_path):
    overrides = TINY + DM + ["regularizer=fyi", "ipc=1"]
    run(overrides, tmp_path / "one", 1)
    run(overrides, tmp_path / "two", 2)
    same_run(tmp_path / "one", tmp_path / "two")


@pytest.mark.slow
def test_idm_with_iid_over_two_processes_is_the_one_process_run(tmp_path, tiny_pool):
    """IDM's per-class optimiser steps, replayed with zero gradients for the other rank's
    classes, keep every row on its one-process trajectory; the queue trains alike on both."""
    overrides = TINY + IDM + ["regularizer=iid", f"regularizer.cc.pool={tiny_pool}"]
    run(overrides, tmp_path / "one", 1)
    run(overrides, tmp_path / "two", 2)
    same_run(tmp_path / "one", tmp_path / "two", exact=True)
    net_acc = [
        [r["train/net_acc"] for r in map(eval_json, (tmp_path / d / "metrics.jsonl").read_text()
         .splitlines()) if "train/net_acc" in r]
        for d in ("one", "two")
    ]  # fmt: skip
    assert net_acc[1] == net_acc[0]  # rank 0's, not the sum of both


GRADIENT_MATCHING = [
    "method.iterations=2", "method.outer_loop=2", "method.inner_loop=2", "method.batch_real=16",
    "method.batch_train=8",
]  # fmt: skip


@pytest.mark.slow
def test_dc_over_two_processes_is_the_one_process_run(tmp_path):
    """Each rank matches its 5 classes; the whole set is gathered before every inner loop, so
    both ranks train the same network; the result is the one-process run's."""
    overrides = TINY + ["method=dc", *GRADIENT_MATCHING]
    run(overrides, tmp_path / "one", 1)
    run(overrides, tmp_path / "two", 2)
    same_run(tmp_path / "one", tmp_path / "two", exact=True)


@pytest.mark.slow
def test_dsa_with_fyi_over_two_processes_is_the_one_process_run(tmp_path):
    overrides = TINY + ["method=dsa", "regularizer=fyi", "ipc=1", *GRADIENT_MATCHING]
    run(overrides, tmp_path / "one", 1)
    run(overrides, tmp_path / "two", 2)
    same_run(tmp_path / "one", tmp_path / "two")


@pytest.mark.slow
def test_a_random_subset_over_two_processes_spreads_its_evaluation(tmp_path):
    overrides = TINY + ["method=random", "eval.num_models=4"]
    run(overrides, tmp_path / "one", 1)
    run(overrides, tmp_path / "two", 2)
    same_run(tmp_path / "one", tmp_path / "two", exact=True)


def build_experts(directory: Path, *options: str) -> Path:
    """One expert of 3 epochs for the tiny runs (distillkit-experts, as a user builds it)."""
    command = [
        str(Path(sys.executable).parent / "distillkit-experts"), "dataset=digits",
        "dataset.image_size=8", "model.width=8", "num_experts=1", "epochs=3",
        "experts_per_shard=1", "device=cpu", "progress=false", f"buffer_dir={directory}/buffer",
        f"hydra.run.dir={directory}/run", *options,
    ]  # fmt: skip
    done = subprocess.run(
        command, env=launcher_free_env(), cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return directory / "buffer"


@pytest.fixture(scope="module")
def expert_buffer(tmp_path_factory) -> Path:
    return build_experts(tmp_path_factory.mktemp("experts"))


def mtt(buffer: Path, mode: str) -> list[str]:
    return TINY + [
        "method=mtt", f"method.buffer={buffer}", f"method.mode={mode}", "method.iterations=3",
        "method.syn_steps=3", "method.expert_epochs=1", "method.max_start_epoch=2",
        "method.batch_syn=10",
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["constant_memory", "unrolled"])
def test_mtt_over_two_processes_is_the_one_process_run(tmp_path, expert_buffer, mode):
    """Each student step's batch of 10 rows is split 5 + 5; the step's gradient is summed over
    the ranks (inside the graph when unrolled), then the images' and lr's gradients: the same
    set and learned lr as one process, up to the order of float sums (two halves' sums added,
    not one; MTT's image lr of 1000 magnifies them to ~2e-5 after 3 iterations)."""
    run(mtt(expert_buffer, mode), tmp_path / "one", 1)
    run(mtt(expert_buffer, mode), tmp_path / "two", 2)
    same_run(tmp_path / "one", tmp_path / "two", tolerance=1e-4)
    lrs = [
        json.loads((tmp_path / d / "results.json").read_text())["eval_lr"] for d in ("one", "two")
    ]
    assert lrs[1] == pytest.approx(lrs[0], rel=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("class_steps", ["sequential", "round_start"])
def test_idc_over_two_processes_is_the_one_process_run(tmp_path, class_steps):
    """IDC's classes split; the other rank's classes' draws and zero-gradient steps keep every
    row on its one-process trajectory (its network trains on real data only)."""
    overrides = TINY + [
        "method=idc", "method.iterations=2", "method.batch_real=16", "method.inner_loop=2",
        "method.n_data=32", f"method.class_steps={class_steps}", "method.batch_syn_max=3",
    ]  # fmt: skip
    run(overrides, tmp_path / "one", 1)
    run(overrides, tmp_path / "two", 2)
    same_run(tmp_path / "one", tmp_path / "two", exact=True)


@pytest.mark.slow
def test_fair_scores_over_two_processes_are_the_one_process_scores(tmp_path):
    """The random subset, no-augmentation and full-data models spread over the ranks as the
    run's evaluation does; rank 0 writes the full-data cache file."""
    scores = TINY + DM + ["eval.scores=true", "eval.scores_full_epochs=1"]
    for name, ranks in (("one", 1), ("two", 2)):
        run([*scores, f"eval.scores_cache={tmp_path / name}_cache"], tmp_path / name, ranks)
        assert len(list((tmp_path / f"{name}_cache").glob("*.json"))) == 1
    got = [
        json.loads((tmp_path / d / "results.json").read_text())["scores"]["models"]["ConvNet"]
        for d in ("one", "two")
    ]
    assert got[1]["accuracies"] == got[0]["accuracies"]
    assert (got[1]["lrs"], got[1]["ars"]) == (got[0]["lrs"], got[0]["ars"])


@pytest.mark.slow
def test_ftd_over_two_processes_is_the_one_process_run(tmp_path):
    """FTD is MTT's split with GSAM experts; its moving average follows identical images."""
    buffer = build_experts(tmp_path / "gsam", "optimizer=gsam")
    overrides = mtt(buffer, "unrolled")
    overrides[overrides.index("method=mtt")] = "method=ftd"
    overrides += ["method.ema_decay=0.5", "method.gsam_alpha=null"]
    run(overrides, tmp_path / "one", 1)
    run(overrides, tmp_path / "two", 2)
    same_run(tmp_path / "one", tmp_path / "two", tolerance=1e-4)


@pytest.mark.slow
def test_distillkit_eval_over_two_processes_gives_the_one_process_accuracies(tmp_path):
    """`torchrun -m distillkit.cli.evaluate SET`: the saved set's models spread 3 + 2."""
    run(TINY + DM, tmp_path / "run", 1)
    outputs = []
    for ranks in (1, 2):
        out = tmp_path / f"eval{ranks}.json"
        saved = str(tmp_path / "run" / "synthetic_set.pt")
        command = [
            sys.executable, "-m", "distillkit.cli.evaluate", saved, "--num-models", "5",
            "--epochs", "2", "--device", "cpu", "--output", str(out),
        ]  # fmt: skip
        port = free_port()
        procs = [
            subprocess.Popen(
                command, cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=launcher_free_env(**({} if ranks == 1 else {
                    "RANK": str(r), "WORLD_SIZE": str(ranks), "LOCAL_RANK": str(r),
                    "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})),
            )
            for r in range(ranks)
        ]  # fmt: skip
        done = finish_processes(procs, RUN_S)
        assert [d[0] for d in done] == [0] * ranks, done
        assert "ConvNet:" in done[0][1] and all(not d[1] for d in done[1:])  # rank 0 prints
        outputs.append(json.loads(out.read_text())["accuracy"]["ConvNet"]["runs"])
    assert len(outputs[0]) == 5 and outputs[1] == outputs[0]


# -- stops, resumes and failures -----------------------------------------------------------------
def wait_for_checkpoint(run_dir: Path, procs: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + RUN_S
    while not (run_dir / "checkpoint.pt").exists():
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            pytest.fail(f"no checkpoint: {finish(procs, 5)}")
        time.sleep(0.1)


@pytest.mark.slow
def test_a_stop_sent_to_one_rank_stops_both_and_the_run_resumes_as_uninterrupted(tmp_path):
    """SIGTERM to rank 1 alone: both ranks checkpoint at the same iteration and exit 143; the
    same command on two processes, then on one, ends with the uninterrupted run's set."""
    long = TINY + ["method=dm", "method.iterations=60", "method.batch_real=16",
                   "checkpoint.every=5", "eval.num_models=1"]  # fmt: skip
    run(long, tmp_path / "whole", 1)
    procs = start(long, tmp_path / "cut", 2)
    wait_for_checkpoint(tmp_path / "cut", procs)
    procs[1].send_signal(signal.SIGTERM)
    results = finish(procs)
    assert [s for s, _ in results] == [128 + signal.SIGTERM] * 2, results
    stopped = load_torch(tmp_path / "cut" / "checkpoint.pt", "checkpoint")["iteration"]
    assert 5 <= stopped < 60
    for _, stderr in results:
        assert f"at iteration {stopped}" in stderr
    run(long, tmp_path / "cut", 2)  # resumes on two processes
    torch.testing.assert_close(images(tmp_path / "cut"), images(tmp_path / "whole"))
    # and a two-process checkpoint resumes on one process
    procs = start(long, tmp_path / "cut2", 2)
    wait_for_checkpoint(tmp_path / "cut2", procs)
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    finish(procs)
    run(long, tmp_path / "cut2", 1)
    torch.testing.assert_close(images(tmp_path / "cut2"), images(tmp_path / "whole"))


def test_a_killed_rank_ends_the_other_with_one_line_within_the_timeout(tmp_path):
    long = TINY + ["method=dm", "method.iterations=100000", "method.batch_real=16",
                   "checkpoint.every=5", "distributed.timeout_s=20"]  # fmt: skip
    procs = start(long, tmp_path / "run", 2)
    wait_for_checkpoint(tmp_path / "run", procs)
    procs[1].kill()
    killed = time.monotonic()
    status, stderr = finish(procs[:1], timeout=120)[0]
    finish(procs[1:], 5)
    assert time.monotonic() - killed < 60
    assert status == 2, stderr[-2000:]
    lines = [line for line in stderr.splitlines() if line.startswith("distillkit:")]
    assert len(lines) == 1 and "rank 0 of 2" in lines[0] and "peer" in lines[0], stderr[-2000:]
    assert "Traceback" not in stderr


class OneProcessRandom(RandomSubset):
    """A user's method that says nothing of how to split it."""

    distributed_split = None


def test_methods_that_run_in_one_process_and_sweeps_are_refused_with_one_line(tmp_path):
    mine = TINY + ["method=random", "method._target_=test_distributed_runs.OneProcessRandom"]
    tests = str(Path(__file__).resolve().parent)
    for status, stderr in finish(start(mine, tmp_path / "mine", 2, PYTHONPATH=tests)):
        assert status == 2 and "runs in one process only" in stderr, stderr[-2000:]
        assert "Traceback" not in stderr
    assert not (tmp_path / "mine" / "checkpoint.pt").exists()
    sweep = ["-m", *TINY, *DM, "ipc=1,2", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    for status, stderr in finish(start(sweep, tmp_path / "unused", 2)):
        assert status == 2 and "a sweep (-m) under a launch of 2 processes" in stderr, stderr
