"""One distillation across N processes: the ranks, their devices and the collectives they share.

`World.from_environment` reads what a launcher sets (`distillkit.launch.Launch`: torchrun's
`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`, or SLURM's srun: `SLURM_PROCID`,
`SLURM_NTASKS`, `SLURM_LOCALID`, the master from `MASTER_ADDR` or the first host of
`SLURM_NODELIST`). Without them, or with a world of one, it is a single-process world: no
process group is created and every collective is the identity, so a single-process run is the
run it always was. Otherwise it joins one process group (gloo on the CPU, NCCL on CUDA, one
device per rank from the local rank) whose collectives time out after `timeout_s`.

A collective that fails because a peer is gone (killed, out of memory, a lost node) or did not
reach it within the timeout raises one `DistributedError`, reported as one line by the commands'
error boundary, never a hang. What the run shares across ranks is built on the collectives here:
`shard` (which of n items a rank owns: contiguous, balanced, the same on every rank),
`evaluate_spread` (evaluation models over the ranks, accuracies gathered in model order, each
model trained from the draws it gets in a single-process run) and the class blocks of a
class-sharded method (`class_shard`, `class_block`, `assemble_classes`).
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from distillkit.launch import DistributedError, Launch

#: Seconds a rank waits in a collective (or for the others to join) before giving up. Ranks
#: also wait for each other's local work between collectives (an uneven share of evaluation
#: models), so this is generous; tests use a few seconds.
DEFAULT_TIMEOUT_S = 1800.0
#: Dimensions `World.all_gather` carries in its shape exchange.
MAX_DIMS = 8

#: What a failed collective says when a peer is gone or late (gloo raises plain RuntimeErrors
#: with these; torch's own are DistError).
_PEER_FAILURE = re.compile(
    r"timed out|timeout|connection (closed|reset|refused)|closed by peer|broken pipe|"
    r"socket|read error|write error|unreachable|nccl error|watchdog",
    re.IGNORECASE,
)
_DTYPES = (
    torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32,
    torch.int16, torch.int8, torch.uint8, torch.bool,
)  # fmt: skip


def shard_range(n: int, size: int, rank: int) -> range:
    """The items of `n` that `rank` of `size` owns: contiguous, in rank order, balanced (the
    first n % size ranks get one more), every item exactly once; empty when n < size."""
    if n < 0 or size < 1 or not 0 <= rank < size:
        raise ValueError(f"cannot shard {n} items for rank {rank} of {size}")
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (rank < extra))


class World:
    """The ranks of one run. A single-process world (`World.single()`, or `from_environment`
    without a launcher) creates no process group and its collectives return their input."""

    def __init__(
        self,
        launch: Launch | None = None,
        device: torch.device | str = "cpu",
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.launch = launch or Launch()
        self.device = torch.device(device)
        self.timeout_s = float(timeout_s)
        self.backend: str | None = None

    @classmethod
    def single(cls, device: torch.device | str = "cpu") -> World:
        return cls(Launch(), device)

    @classmethod
    def from_environment(
        cls,
        device_type: str | torch.device = "cpu",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        env: Mapping[str, str] | None = None,
        join_single: bool = False,
    ) -> World:
        """This process's world: with a launcher's variables and more than one rank, the process
        group is joined here (gloo on the CPU, NCCL on CUDA with one device per rank: the local
        rank's, modulo the visible devices); otherwise a single-process world. `device_type` may
        be a device (`cuda:0`): its type counts, the rank picks the index. `join_single`: a
        launch of one rank joins a group too (a check of the backend on one device)."""
        launch = Launch.from_env(env)
        kind = torch.device(device_type).type
        if launch.size == 1 and not (join_single and launch.source):
            return cls(launch, device_type, timeout_s)
        if kind == "cuda":
            count = torch.cuda.device_count()
            if count == 0:
                raise DistributedError("a CUDA run was asked for, but no CUDA device is visible")
            device = torch.device("cuda", launch.local_rank % count)
            torch.cuda.set_device(device)
        else:
            device = torch.device(kind)
        world = cls(launch, device, timeout_s)
        world._join("nccl" if kind == "cuda" else "gloo")
        return world

    def _join(self, backend: str) -> None:
        if dist.is_initialized():
            raise ValueError("a process group exists already: one World per process")
        launch = self.launch
        if backend == "nccl":  # a timed-out NCCL collective raises here instead of aborting
            os.environ.setdefault("TORCH_NCCL_BLOCKING_WAIT", "1")
        options: dict[str, Any] = {"device_id": self.device} if backend == "nccl" else {}
        if launch.agent_store:
            init_method = "env://"  # torchrun's agent holds the store at MASTER_ADDR:PORT
        else:
            init_method = f"tcp://{_host(launch.master_addr)}:{launch.master_port}"
        with self._translated("joining the process group"):
            dist.init_process_group(
                backend,
                init_method=init_method,
                rank=launch.rank,
                world_size=launch.size,
                timeout=datetime.timedelta(seconds=self.timeout_s),
                **options,
            )
        self.backend = backend

    # -- who is who -----------------------------------------------------------------------------
    @property
    def rank(self) -> int:
        return self.launch.rank

    @property
    def size(self) -> int:
        return self.launch.size

    @property
    def local_rank(self) -> int:
        return self.launch.local_rank

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes checkpoints, results, grids and W&B."""
        return self.launch.rank == 0

    @property
    def is_distributed(self) -> bool:
        """True when a process group is joined (more than one rank)."""
        return self.backend is not None

    def shard(self, n: int) -> range:
        """The items of `n` this rank owns (`shard_range`); `slice(r.start, r.stop)` cuts them."""
        return shard_range(n, self.size, self.rank)

    def __repr__(self) -> str:
        return (
            f"World(rank={self.rank}, size={self.size}, device={self.device}, "
            f"backend={self.backend})"
        )

    # -- collectives ----------------------------------------------------------------------------
    def all_gather(self, tensor: Tensor) -> Tensor:
        """Every rank's `tensor` concatenated along dimension 0 in rank order, on every rank.
        First dimensions may differ (zero too); the others and the dtype must agree."""
        if not self.is_distributed:
            return tensor
        if tensor.dim() == 0 or tensor.dim() > MAX_DIMS or tensor.dtype not in _DTYPES:
            raise ValueError(f"cannot all_gather a {tensor.dtype} tensor of {tensor.dim()} dims")
        meta = torch.full((MAX_DIMS + 2,), -1, dtype=torch.int64)
        meta[0], meta[1] = _DTYPES.index(tensor.dtype), tensor.dim()
        meta[2 : 2 + tensor.dim()] = torch.tensor(tensor.shape)
        metas = self._gather_equal(meta.to(self.device)).cpu().view(self.size, -1)
        if not bool((metas[:, [0, 1]] == metas[0, [0, 1]]).all()) or not bool(
            (metas[:, 3:] == metas[0, 3:]).all()
        ):
            shapes = [tuple(int(s) for s in m[2 : 2 + int(m[1])]) for m in metas]
            raise ValueError(f"all_gather needs one dtype and trailing shape, got {shapes}")
        rows = [int(m[2]) for m in metas]
        longest = max(1, max(rows))
        sent = _transported(tensor.detach())
        padded = sent.new_zeros((longest, *sent.shape[1:]), device=self.device)
        padded[: tensor.shape[0]] = sent
        gathered = self._gather_equal(padded).view(self.size, longest, *sent.shape[1:])
        out = torch.cat([gathered[r, :count] for r, count in enumerate(rows)])
        return _received(out, tensor.dtype).to(tensor.device)

    def _gather_equal(self, tensor: Tensor) -> Tensor:
        out = tensor.new_empty((self.size * tensor.shape[0], *tensor.shape[1:]))
        with self._translated("all_gather"):
            dist.all_gather(list(out.chunk(self.size)), tensor.contiguous())
        return out

    def all_reduce_sum(self, tensor: Tensor) -> Tensor:
        """The sum of every rank's `tensor` (a new tensor; the input is left as it is)."""
        if not self.is_distributed:
            return tensor
        total = tensor.detach().to(self.device, copy=True)
        with self._translated("all_reduce"):
            dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total.to(tensor.device)

    def all_reduce_sum_differentiable(self, tensor: Tensor) -> Tensor:
        """The sum of every rank's `tensor` inside an autograd graph: its backward sums the
        ranks' upstream gradients (torch.distributed.nn), so a loss every rank computes alike
        must be divided by the world size before its backward. One process: `tensor`."""
        if not self.is_distributed:
            return tensor
        from torch.distributed.nn.functional import all_reduce

        with self._translated("all_reduce (differentiable)"):
            return all_reduce(tensor)

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """Rank `src`'s `obj` (picklable) on every rank."""
        if not self.is_distributed:
            return obj
        box = [obj if self.rank == src else None]
        with self._translated("broadcast_object"):
            dist.broadcast_object_list(box, src=src, device=self._object_device)
        return box[0]

    def gather_objects(self, obj: Any, dst: int | None = 0) -> list[Any] | None:
        """Every rank's `obj` in rank order: on rank `dst` (None elsewhere), or with `dst=None`
        on every rank."""
        if not self.is_distributed:
            return [obj]
        out: list[Any] = [None] * self.size
        if dst is None:
            with self._translated("all_gather_object"):
                dist.all_gather_object(out, obj)
            return out
        with self._translated("gather_object"):
            dist.gather_object(obj, out if self.rank == dst else None, dst=dst)
        return out if self.rank == dst else None

    def barrier(self) -> None:
        if not self.is_distributed:
            return
        options = {"device_ids": [self.device.index]} if self.backend == "nccl" else {}
        with self._translated("barrier"):
            dist.barrier(**options)

    def close(self) -> None:
        """Leave the process group (nothing for a single process); safe to call twice."""
        if self.backend is None:
            return
        self.backend = None
        if dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:  # a broken group is being left anyway
                pass

    def __enter__(self) -> World:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _object_device(self) -> torch.device | None:
        return self.device if self.backend == "nccl" else None

    @contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        """A peer that is gone or late becomes one DistributedError; other errors stay bugs."""
        try:
            yield
        except Exception as exc:
            if not isinstance(exc, dist.DistError) and not _PEER_FAILURE.search(str(exc)):
                raise
            self.close()  # the group is broken: leave it now, not in the interpreter's exit
            cause = " ".join(str(exc).split())
            cause = re.sub(r"^\[[^\]]*\]\s*", "", cause)  # gloo's [file.cc:line] prefix
            cause = re.sub(r"\.? This is typically caused by.*$", "", cause)  # gloo's advice
            raise DistributedError(
                f"distributed run: rank {self.rank} of {self.size} failed in {what}: a peer "
                f"process stopped, or did not get there within {self.timeout_s:g} s ({cause})"
            ) from exc


def _transported(tensor: Tensor) -> Tensor:
    """`tensor` in a dtype every backend moves, bits unchanged: bool as uint8, 16-bit floats as
    their bytes (a new last dimension of 2; gloo has no int16)."""
    if tensor.dtype == torch.bool:
        return tensor.to(torch.uint8)
    if tensor.dtype in (torch.float16, torch.bfloat16):
        return tensor.contiguous().unsqueeze(-1).view(torch.uint8)
    return tensor


def _received(tensor: Tensor, dtype: torch.dtype) -> Tensor:
    if dtype == torch.bool:
        return tensor.to(torch.bool)
    if dtype in (torch.float16, torch.bfloat16):
        return tensor.contiguous().view(dtype).squeeze(-1)
    return tensor


def _host(addr: str) -> str:
    return f"[{addr}]" if ":" in addr and not addr.startswith("[") else addr


# -- evaluation models over the ranks -----------------------------------------------------------
def spread_blocks(
    world: World,
    run_block: Callable[[range], Sequence[float]],
    num_models: int,
    skip: Callable[[int], None] | None = None,
) -> list[float]:
    """Models 0..num_models-1 over the ranks, their accuracies in model order on every rank.

    This rank trains its shard (`world.shard`, contiguous) with one `run_block(models)` call,
    which returns their accuracies in order. When models share one random stream (a
    single-process run trains them one after another from one generator), `skip(i)` must
    advance it past model i's draws without training: the models before the shard are skipped
    first, so every model starts from the state it has in a single-process run, and those after
    it last, so the stream ends where the single-process loop leaves it. A single-process world
    calls `run_block(range(num_models))` alone."""
    if not world.is_distributed:
        return [float(a) for a in run_block(range(num_models))]
    mine = world.shard(num_models)
    if skip is not None:
        for i in range(mine.start):
            skip(i)
    accuracies = [float(a) for a in run_block(mine)] if len(mine) else []
    if len(accuracies) != len(mine):
        raise ValueError(f"run_block gave {len(accuracies)} accuracies for {len(mine)} models")
    if skip is not None:
        for i in range(mine.stop, num_models):
            skip(i)
    gathered = world.all_gather(torch.tensor(accuracies, dtype=torch.float64))
    return gathered.tolist()


def evaluate_spread(
    world: World,
    run_one: Callable[[int], float],
    num_models: int,
    skip: Callable[[int], None] | None = None,
) -> list[float]:
    """`spread_blocks` with one `run_one(i)` per model of this rank's shard, in order."""
    return spread_blocks(world, lambda models: [run_one(i) for i in models], num_models, skip)


# -- a class-sharded method (DM, IDM) -----------------------------------------------------------
def class_shard(world: World, num_classes: int) -> range:
    """The classes this rank matches (contiguous, balanced; rank order is class order)."""
    return world.shard(num_classes)


def class_block(classes: range, rows_per_class: int) -> slice:
    """The rows of `classes` in a class-contiguous tensor (class 0's rows first)."""
    return slice(classes.start * rows_per_class, classes.stop * rows_per_class)


def class_mask(labels: Tensor, classes: range) -> Tensor:
    """Which rows of a batch labelled `labels` belong to `classes`."""
    return (labels >= classes.start) & (labels < classes.stop)


def assemble_classes(world: World, full: Tensor, num_classes: int) -> Tensor:
    """A class-contiguous tensor (synthetic images, their optimiser state) with every class's
    rows from the rank that owns it: this rank's block of `full` gathered with the others' in
    class order. A single-process world returns `full`. Every rank must call it."""
    if not world.is_distributed:
        return full
    if full.shape[0] % num_classes:
        raise ValueError(f"{full.shape[0]} rows are not class-contiguous for {num_classes}")
    block = class_block(class_shard(world, num_classes), full.shape[0] // num_classes)
    return world.all_gather(full[block])
