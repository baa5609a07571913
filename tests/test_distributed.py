"""Ranks and collectives (distillkit.distributed): the launchers' variables, a single process that
creates no process group, shards, gathers, evaluation spread over ranks, and a dead or late
peer ending the job with one line. The multi-rank tests run this file as a script, two gloo
processes on the CPU (`python tests/test_distributed.py <scenario> <dir>`, one thread each)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from helpers import finish_processes, free_port, launcher_free_env

from distillkit.distributed import (
    World,
    assemble_classes,
    class_block,
    class_mask,
    class_shard,
    evaluate_spread,
    shard_range,
    spread_blocks,
)
from distillkit.launch import DistributedError, Launch, first_host

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
#: Seconds a scenario's processes may take to start (torch's import on a busy 2-core box).
START_S = 90


# -- one process ----------------------------------------------------------------------------------
def test_without_a_launcher_the_world_is_one_process_with_no_group():
    world = World.from_environment("cpu", env={})
    assert (world.rank, world.size, world.local_rank) == (0, 1, 0)
    assert world.is_main and not world.is_distributed and world.backend is None
    assert not dist.is_initialized()
    x = torch.arange(6.0).view(3, 2)
    assert world.all_gather(x) is x
    assert world.all_reduce_sum(x) is x
    assert world.broadcast_object({"a": 1}) == {"a": 1}
    assert world.gather_objects("x") == ["x"] and world.gather_objects("x", dst=None) == ["x"]
    assert world.shard(5) == range(5)
    assert assemble_classes(world, x, 3) is x
    world.barrier()
    world.close()
    assert not dist.is_initialized()


def test_a_launch_of_one_rank_creates_no_group():
    for env in (
        {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_PORT": "1"},
        {"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_NODELIST": "n[1-2]"},
    ):
        world = World.from_environment("cpu", timeout_s=1, env=env)
        assert world.size == 1 and not world.is_distributed
    assert not dist.is_initialized()


def test_torchrun_variables():
    env = {
        "RANK": "3",
        "WORLD_SIZE": "4",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "10.0.0.7",
        "MASTER_PORT": "29511",
        "SLURM_PROCID": "0",  # torchrun's variables win inside an allocation
        "SLURM_NTASKS": "1",
    }
    launch = Launch.from_env(env)
    assert launch == Launch(3, 4, 1, "10.0.0.7", 29511, "torchrun")


def test_slurm_variables():
    env = {
        "SLURM_PROCID": "5",
        "SLURM_NTASKS": "8",
        "SLURM_LOCALID": "1",
        "SLURM_NODELIST": "gpu[003-006,9],login1",
        "SLURM_JOB_ID": "123456",
    }
    launch = Launch.from_env(env)
    assert (launch.rank, launch.size, launch.local_rank, launch.source) == (5, 8, 1, "slurm")
    assert launch.master_addr == "gpu003"
    assert launch.master_port == 29500 + 123456 % 20000  # one port per job, none named
    named = Launch.from_env({**env, "MASTER_ADDR": "head", "MASTER_PORT": "4000"})
    assert (named.master_addr, named.master_port) == ("head", 4000)
    step = Launch.from_env({**env, "SLURM_STEP_NUM_TASKS": "6", "SLURM_STEP_NODELIST": "a7"})
    assert (step.size, step.master_addr) == (6, "a7")  # the srun step's tasks, not the job's


@pytest.mark.parametrize(
    ("nodelist", "host"),
    [
        ("node17", "node17"),
        ("node[01-04,07]", "node01"),
        ("a1,b[2-3]", "a1"),
        ("rack1-[3,5-6]", "rack1-3"),
        ("n[2-3]-ib,m1", "n2-ib"),
        ("x[1-2]y[5-6]", "x1y5"),
    ],
)
def test_first_host_of_a_slurm_node_list(nodelist, host):
    assert first_host(nodelist) == host


@pytest.mark.parametrize(
    "env",
    [
        {"RANK": "2", "WORLD_SIZE": "2"},
        {"RANK": "one", "WORLD_SIZE": "2"},
        {"SLURM_PROCID": "0", "SLURM_NTASKS": "0"},
    ],
)
def test_impossible_launcher_variables_are_one_distributed_error(env):
    with pytest.raises(DistributedError):
        World.from_environment("cpu", env=env)
    assert not dist.is_initialized()
    assert issubclass(DistributedError, RuntimeError)


def test_a_rank_whose_peers_never_come_gives_up_after_the_timeout():
    """Rank 0 of 2 alone: joining the group ends in one DistributedError after the timeout
    (2 s), and no group is left behind."""
    env = {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}
    started = time.monotonic()
    with pytest.raises(DistributedError, match="rank 0 of 2 failed in joining the process group"):
        World.from_environment("cpu", timeout_s=2, env={**env, "MASTER_PORT": str(free_port())})
    assert time.monotonic() - started < 2 + 10
    assert not dist.is_initialized()


def test_shards_cover_every_item_once_contiguous_and_balanced():
    for n in range(0, 23):
        for size in range(1, 6):
            shards = [shard_range(n, size, r) for r in range(size)]
            assert [i for s in shards for i in s] == list(range(n))
            assert max(map(len, shards)) - min(map(len, shards)) <= 1
            assert all(a.stop == b.start for a, b in zip(shards, shards[1:], strict=False))
    with pytest.raises(ValueError):
        shard_range(3, 2, 2)


def test_class_blocks_and_masks():
    classes = range(3, 5)
    assert class_block(classes, 10) == slice(30, 50)
    labels = torch.arange(7).repeat_interleave(2)
    assert class_mask(labels, classes).nonzero().flatten().tolist() == [6, 7, 8, 9]


def draws_model(generator: torch.Generator, i: int) -> float:
    """A tiny 'model' whose draws do not depend on what it computes (as train_network's)."""
    values = torch.rand(3 + i % 2, generator=generator)
    return float(values.sum()) * 100 + i


def test_spreading_over_one_process_trains_every_model_in_order():
    generator = torch.Generator().manual_seed(4)
    seen: list[int] = []

    def run_one(i: int) -> float:
        seen.append(i)
        return draws_model(generator, i)

    reference = torch.Generator().manual_seed(4)
    expected = [draws_model(reference, i) for i in range(5)]
    assert evaluate_spread(World.single(), run_one, 5, skip=lambda i: 1 / 0) == expected
    assert seen == [0, 1, 2, 3, 4]
    assert torch.equal(generator.get_state(), reference.get_state())
    assert spread_blocks(World.single(), lambda models: [len(models)] * 2, 2) == [2.0, 2.0]


@pytest.mark.parametrize("cutmix_p", [0.0, 0.5])
def test_skipping_a_model_leaves_the_generator_where_training_it_does(cutmix_p):
    """`skip_model_draws` (what a rank runs for the models before its share) makes every draw
    `train_network` makes (init, permutations, DSA, CutMix), so the next model starts alike."""
    from helpers import tiny_digits, tiny_factory

    from distillkit.augment import DSA
    from distillkit.evaluation import EvalSettings
    from distillkit.evaluation.protocol import skip_model_draws, train_network

    data, factory = tiny_digits(), tiny_factory()
    images, labels = data.sample_per_class(3, torch.Generator().manual_seed(0))
    settings = EvalSettings(epochs=3, batch_size=8, cutmix_p=cutmix_p)
    augment = DSA("color_crop_cutout_flip_scale_rotate")
    trained, skipped = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    train_network(factory, images, labels, settings, augment, trained)
    skip_model_draws(factory, images.shape[0], settings, augment, skipped, (8, 8))
    assert torch.equal(trained.get_state(), skipped.get_state())


def test_the_evaluation_bar_counts_the_models_this_rank_trains(monkeypatch):
    """Rank 0 of 2 trains 2 of 3 DSA models but all 3 under DC's augmentation (its draws cannot
    be replayed, so it is not spread): the progress bar's total is what the rank trains."""
    from helpers import tiny_digits, tiny_factory

    import distillkit.evaluation.protocol as protocol
    from distillkit.augment import DSA
    from distillkit.augment.dc import DCEvaluationAugment
    from distillkit.evaluation import EvalSettings

    class Bar:
        def __init__(self, total, **_):
            self.total, self.done = total, 0
            bars.append(self)

        def update(self, n=1):
            self.done += n

        def set_postfix(self, *_, **__):
            pass

        def close(self):
            pass

    def spread(world, run_block, num_models, skip=None):  # a group's spread without the group
        accuracies = list(run_block(world.shard(num_models)))
        return accuracies + [0.0] * (num_models - len(accuracies))

    bars: list[Bar] = []
    monkeypatch.setattr(protocol, "progress_bar", Bar)
    monkeypatch.setattr(protocol, "spread_blocks", spread)
    data, factory = tiny_digits(), tiny_factory()
    images, labels = data.sample_per_class(1, torch.Generator().manual_seed(0))
    settings = EvalSettings(models=("ConvNet",), num_models=3, epochs=1, batch_size=8)
    world = World(Launch(rank=0, size=2, source="torchrun"))
    for augment, trained in ((DSA("crop"), 2), (DCEvaluationAugment("digits"), 3)):
        protocol.evaluate_set(
            images, labels, data, factory, settings, augment, torch.Generator().manual_seed(1),
            world=world,
        )  # fmt: skip
        assert (bars[-1].total, bars[-1].done) == (trained, trained)


def test_a_rank_gathers_only_its_classes_from_the_same_draws():
    from helpers import tiny_digits

    data = tiny_digits()
    whole, part = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    images, labels = data.sample_per_class(4, whole)
    mine, mine_labels = data.sample_per_class(4, part, range(3, 7))
    assert torch.equal(mine, images[12:28]) and torch.equal(mine_labels, labels[12:28])
    assert torch.equal(whole.get_state(), part.get_state())


def test_the_command_counts_a_launch_without_importing_torch():
    from distillkit.cli.distill import launched_processes

    assert launched_processes({}) == 1
    assert launched_processes({"RANK": "0", "WORLD_SIZE": "4"}) == 4
    assert launched_processes({"SLURM_PROCID": "1", "SLURM_NTASKS": "8"}) == 8
    # a batch script's own step has one task, whatever the allocation's task count
    slurm_batch = {"SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_STEP_NUM_TASKS": "1"}
    assert launched_processes(slurm_batch) == 1
    assert launched_processes({"SLURM_NTASKS": "8"}) == 1  # salloc's shell, no task


def test_python_m_distillkit_is_the_command():
    """`python -m distillkit` (what torchrun and srun start) is the `distillkit` command."""
    out = subprocess.run(
        [sys.executable, "-m", "distillkit", "--help"],
        capture_output=True, text=True, timeout=START_S, cwd=REPO, env=child_env(),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "distill is powered by Hydra" in out.stdout and "method: " in out.stdout


# -- two gloo processes ---------------------------------------------------------------------------
def child_env(**extra: str) -> dict[str, str]:
    return launcher_free_env(**extra)


def torchrun_env(rank: int, port: int) -> dict[str, str]:
    return child_env(
        RANK=str(rank),
        WORLD_SIZE="2",
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )


def slurm_env(rank: int, port: int) -> dict[str, str]:
    return child_env(
        SLURM_PROCID=str(rank),
        SLURM_NTASKS="2",
        SLURM_LOCALID=str(rank),
        SLURM_NODELIST="localhost",
        MASTER_PORT=str(port),
    )


def launch(scenario: str, out: Path, make_env) -> list[subprocess.Popen]:
    port = free_port()
    return [
        subprocess.Popen(
            [sys.executable, str(HERE), scenario, str(out)],
            env=make_env(rank, port),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for rank in range(2)
    ]


def finish(procs: list[subprocess.Popen], timeout: float) -> list[tuple[int, str, str]]:
    return finish_processes(procs, timeout)


def wait_for(paths: list[Path], procs: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + START_S
    while not all(p.exists() for p in paths):
        crashed = [p for p in procs if p.poll() is not None]
        if crashed or time.monotonic() > deadline:
            for proc in procs:
                proc.kill()
            pytest.fail(f"the ranks did not start: {finish(procs, 5)}")
        time.sleep(0.05)


def test_two_ranks_share_one_group_and_its_collectives(tmp_path):
    """Each rank checks the collectives (tests/test_distributed.py `collectives`); here the two
    reports must agree. Evaluation spread over 2 ranks gives exactly the 1-rank accuracies, and
    DM sharded by class over 2 ranks the 1-rank synthetic set."""
    results = finish(launch("collectives", tmp_path, torchrun_env), START_S)
    for rc, _, stderr in results:
        assert rc == 0, stderr
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for rank, report in enumerate(reports):
        assert report["where"] == [rank, 2, "torchrun", "gloo"]
        assert report["spread"] == report["single"]  # bit for bit: float64 through gloo
    assert reports[0]["spread"] == reports[1]["spread"]
    # Three real evaluation models (DSA, 2 epochs) over 2 ranks: the 1-rank accuracies exactly.
    for report in reports:
        assert report["spread_training"] == report["single_training"]
    assert reports[0]["spread_training"] == reports[1]["spread_training"]
    # DM with its classes over 2 ranks: the 1-rank set, to 1e-5 (bit for bit on this CPU: the
    # same per-class sums; another backend may round a class mean's sum in another order).
    for report in reports:
        assert report["dm_difference"] <= 1e-5 and report["dm_changed"] > 0.1
        sharded, single = report["dm_losses"]
        assert sharded == pytest.approx(single, rel=1e-5)  # a sum over ranks: rounding only


@pytest.mark.parametrize(
    ("kill", "make_env"),
    [(True, torchrun_env), (False, slurm_env)],
    ids=["killed", "never-arrives"],
)
def test_a_lost_peer_ends_the_other_rank_with_one_line(tmp_path, kill, make_env):
    """kill -9 of rank 1 (or rank 1 never reaching the collective) ends rank 0 within the
    collective timeout (8 s) with one line and exit status 2; no hang, no traceback. The ranks
    of the second run meet through SLURM's variables (srun), those of the first torchrun's."""
    procs = launch("lost-peer", tmp_path, make_env)
    ready = [tmp_path / "ready0", tmp_path / "ready1"]
    wait_for(ready, procs)
    source = "torchrun" if make_env is torchrun_env else "slurm"
    assert [p.read_text() for p in ready] == [f"{source} {r} 2" for r in range(2)]
    started = time.monotonic()
    if kill:
        procs[1].send_signal(signal.SIGKILL)
    try:
        procs[0].wait(timeout=8 + 30)
    except subprocess.TimeoutExpired:
        pass
    elapsed = time.monotonic() - started
    (rc, _, stderr), _ = finish(procs, 1)
    assert rc == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("distillkit: error: distributed run: rank 0 of 2 failed in ")
    assert "Traceback" not in stderr
    assert elapsed < 8 + 12, elapsed  # the timeout, plus exiting on a busy 2-core machine
    if not kill:
        assert elapsed > 8 - 1 and "within 8 s" in lines[0]


# -- what each rank runs ------------------------------------------------------------------------
def tiny_training(world: World) -> tuple[list[float], list[float]]:
    """Three real evaluation models (2 epochs on 10 digits with DSA, one generator): spread over
    `world` and in one process; the spread's `skip` replays a model's draws as stacked.py does."""
    from helpers import tiny_digits, tiny_factory

    from distillkit.augment import DSA
    from distillkit.evaluation import EvalSettings
    from distillkit.evaluation.protocol import train_and_test
    from distillkit.evaluation.stacked import _epoch_draws

    data, factory = tiny_digits(), tiny_factory()
    images, labels = data.sample_per_class(1, torch.Generator().manual_seed(0))
    settings = EvalSettings(epochs=2, batch_size=4)
    augment = DSA("color_crop_cutout_flip_scale_rotate")

    def runner(generator):
        def run_one(i: int) -> float:
            return train_and_test(
                factory, images, labels, data.test_images, data.test_labels, settings,
                augment, generator,
            )  # fmt: skip

        def skip(i: int) -> None:
            factory(generator)
            for _ in range(settings.schedule()[0]):
                _epoch_draws(images.shape[0], settings.batch_size, augment, generator, (8, 8))

        return run_one, skip

    out = []
    for where in (world, World.single()):
        generator = torch.Generator().manual_seed(11)
        run_one, skip = runner(generator)
        out.append(
            [*evaluate_spread(where, run_one, 3, skip), float(torch.rand(1, generator=generator))]
        )
    return out[0], out[1]


def sharded_dm(world: World, iterations: int = 6) -> tuple[torch.Tensor, list[float]]:
    """DM on tiny digits with its classes sharded over `world` (the recipe the trainer wires,
    spelled out on top of DistributionMatching): every rank draws the same network, real batch
    and Siamese DSA parameters for every class, and matches only its own classes' rows; the
    whole set is assembled from the class blocks at the end. Returns it and the summed losses."""
    from helpers import tiny_digits

    from distillkit.augment import DSA
    from distillkit.classwise import class_means
    from distillkit.methods import MethodContext
    from distillkit.methods.dm import DistributionMatching, mean_embedding_distance
    from distillkit.networks import NetworkFactory
    from distillkit.seeding import RunGenerators
    from distillkit.synthetic import SyntheticSet

    class ShardedDM(DistributionMatching):
        def matching_terms(self, net):
            k = self.synthetic.num_classes
            mine = class_shard(world, k)
            real, real_labels = self.real_view(
                *self.data.sample_per_class(self.batch_real, self.generator)
            )
            keep = class_mask(real_labels, mine)
            real, real_labels = real[keep], real_labels[keep]
            syn, syn_labels = self.synthetic.batch(class_block(mine, self.synthetic.ipc))
            params = self.ctx.augment.sample(k, self.generator, tuple(real.shape[-2:]), "cpu")
            syn = self.ctx.augment.apply(syn, params, syn_labels)
            real_means, _, _ = self.real_side(net, real, real_labels, params, k)
            syn_means = class_means(self.network_pass(net, syn)[0], syn_labels, k)
            match = mean_embedding_distance(real_means, syn_means)[mine.start : mine.stop]
            return {"match": match.sum()}

    data = tiny_digits()
    generators = RunGenerators(3)
    synthetic = SyntheticSet.initialise(data, 2, "real", generators["init"])
    networks = NetworkFactory("ConvNet", 1, 10, (8, 8), {"width": 8})
    cfg = {"lr_img": 1.0, "momentum": 0.5, "batch_real": 16, "iterations": iterations}
    augment = DSA("color_crop_cutout_flip_scale_rotate")
    ctx = MethodContext(cfg, data, synthetic, networks, augment, generators)
    method = (ShardedDM if world.is_distributed else DistributionMatching)(ctx)
    losses = [float(world.all_reduce_sum(method.step(i)["loss"])) for i in range(iterations)]
    return assemble_classes(world, synthetic.images.detach(), 10), losses


def scenario_collectives(out: Path) -> None:
    world = World.from_environment("cpu", timeout_s=60)
    r = world.rank
    assert dist.is_initialized() and world.size == 2 and world.is_main == (r == 0)
    assert world.shard(5) == (range(0, 3) if r == 0 else range(3, 5))
    # Unequal first dimensions (rank 1 has none of the second block), in rank order.
    block = torch.full((r + 2, 2, 3), float(r))
    gathered = world.all_gather(block)
    assert gathered.shape == (5, 2, 3) and gathered[:2].eq(0).all() and gathered[2:].eq(1).all()
    empty = world.all_gather(torch.ones(2 if r == 0 else 0, 4, dtype=torch.int64))
    assert empty.shape == (2, 4) and empty.dtype == torch.int64
    flags = world.all_gather(torch.tensor([True, r == 1]))
    assert flags.tolist() == [True, False, True, True]
    halves = world.all_gather(torch.full((1,), 1 / 3 + r, dtype=torch.bfloat16))
    assert halves.dtype == torch.bfloat16 and halves.tolist() == [
        float(torch.tensor(1 / 3 + i, dtype=torch.bfloat16)) for i in range(2)
    ]
    try:
        world.all_gather(torch.zeros(1, 2 + r))
        raise AssertionError("trailing shapes that differ must be refused")
    except ValueError:
        pass
    x = torch.tensor([1.0, 2.0]) * (r + 1)
    assert world.all_reduce_sum(x).tolist() == [3.0, 6.0] and x.tolist() == [r + 1, 2 * r + 2]
    assert world.broadcast_object({"seed": 7} if r == 0 else None) == {"seed": 7}
    assert world.gather_objects(("rank", r)) == ([("rank", 0), ("rank", 1)] if r == 0 else None)
    assert world.gather_objects(r * 10, dst=None) == [0, 10]
    # A class-sharded set: 5 classes x 2 rows, each rank's own classes hold its updates.
    classes = class_shard(world, 5)
    full = torch.full((10, 3), -1.0)
    full[class_block(classes, 2)] = torch.arange(10.0)[class_block(classes, 2), None]
    assembled = assemble_classes(world, full, 5)
    assert assembled.equal(torch.arange(10.0)[:, None].expand(10, 3))

    def spread_and_single(where: World) -> list[float]:
        generator = torch.Generator().manual_seed(4)
        accuracies = evaluate_spread(
            where, lambda i: draws_model(generator, i), 5, lambda i: draws_model(generator, i)
        )
        return [*accuracies, float(torch.rand(1, generator=generator))]  # where the stream ends

    report = {
        "where": [r, world.size, world.launch.source, world.backend],
        "spread": spread_and_single(world),
        "single": spread_and_single(World.single()),
    }
    report["spread_training"], report["single_training"] = tiny_training(world)
    (dm_spread, dm_losses), (dm_single, dm_single_losses) = (
        sharded_dm(world),
        sharded_dm(World.single()),
    )
    report["dm_difference"] = float((dm_spread - dm_single).abs().max())
    report["dm_changed"] = float((dm_single - sharded_dm(World.single(), 0)[0]).abs().max())
    report["dm_losses"] = [dm_losses, dm_single_losses]
    world.barrier()
    (out / f"rank{r}.json").write_text(json.dumps(report))
    world.close()
    assert not dist.is_initialized()


def scenario_lost_peer(out: Path) -> None:
    """Rank 1 stops taking part after a barrier (it is killed, or it sleeps); rank 0 waits in
    an all_reduce, behind the commands' error boundary."""
    from distillkit.cli._common import error_boundary

    with error_boundary():
        world = World.from_environment("cpu", timeout_s=8)
        world.barrier()
        (out / f"ready{world.rank}").write_text(f"{world.launch.source} {world.rank} {world.size}")
        if world.rank == 1:
            time.sleep(120)
        world.all_reduce_sum(torch.ones(3))  # rank 0: its peer is gone, or never comes
        raise AssertionError(f"rank {world.rank} got past a collective its peer never joined")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))  # helpers
    torch.set_num_threads(1)
    name, folder = sys.argv[1], Path(sys.argv[2])
    if name == "collectives":
        scenario_collectives(folder)
    else:
        scenario_lost_peer(folder)
