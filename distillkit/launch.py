"""Where this process stands in a launch, read from the launcher's variables without torch.

torchrun sets `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`; SLURM's srun sets
`SLURM_PROCID`, `SLURM_STEP_NUM_TASKS` (or `SLURM_NTASKS`), `SLURM_LOCALID` and the node list.
Commands read this before anything heavy loads (a sweep under a launch is refused before Hydra
starts); `distillkit.distributed.World` joins the process group it describes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from distillkit.errors import UserError

#: The master port when the launcher names none (srun without MASTER_PORT): this plus the job
#: id modulo PORT_SPAN, so two jobs sharing a node do not pick the same port.
BASE_PORT = 29500
PORT_SPAN = 20000


class DistributedError(UserError, RuntimeError):
    """A distributed run cannot go on: a peer process died or did not reach a collective within
    the timeout, or the ranks could not meet. Not a bug of distillkit (a rank was killed, ran
    out of memory, lost its node, or the launcher's variables do not fit): one line, exit 2."""


@dataclass(frozen=True)
class Launch:
    """Where this process stands in a launch: its rank, the world size, its rank on its node,
    the master's address and port, and which launcher said so (None: a single process)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = BASE_PORT
    source: str | None = None
    #: torchrun's agent holds the rendezvous store (the ranks join it through env://).
    agent_store: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Launch:
        """torchrun's variables first, then SLURM's; neither: a single process."""
        env = os.environ if env is None else env
        if "RANK" in env and "WORLD_SIZE" in env:
            return cls(
                rank=_int(env, "RANK"),
                size=_int(env, "WORLD_SIZE"),
                local_rank=_int(env, "LOCAL_RANK", _int(env, "RANK")),
                master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
                master_port=_int(env, "MASTER_PORT", BASE_PORT),
                source="torchrun",
                agent_store=env is os.environ and "TORCHELASTIC_RUN_ID" in env,
            )._checked()
        if "SLURM_PROCID" in env and ("SLURM_STEP_NUM_TASKS" in env or "SLURM_NTASKS" in env):
            size_key = "SLURM_STEP_NUM_TASKS" if "SLURM_STEP_NUM_TASKS" in env else "SLURM_NTASKS"
            addr = env.get("MASTER_ADDR") or first_host(
                env.get("SLURM_STEP_NODELIST") or env.get("SLURM_NODELIST") or "127.0.0.1"
            )
            default_port = BASE_PORT + _int(env, "SLURM_JOB_ID", 0) % PORT_SPAN
            return cls(
                rank=_int(env, "SLURM_PROCID"),
                size=_int(env, size_key),
                local_rank=_int(env, "SLURM_LOCALID", 0),
                master_addr=addr,
                master_port=_int(env, "MASTER_PORT", default_port),
                source="slurm",
            )._checked()
        return cls()

    def _checked(self) -> Launch:
        if self.size < 1 or not 0 <= self.rank < self.size or self.local_rank < 0:
            raise DistributedError(
                f"the {self.source} variables give rank {self.rank} of a world of {self.size} "
                f"(local rank {self.local_rank}): no such rank"
            )
        return self


def _int(env: Mapping[str, str], key: str, default: int | None = None) -> int:
    value = env.get(key)
    if value is None or value == "":
        if default is None:
            raise DistributedError(f"the launcher set no {key}")
        return default
    try:
        return int(value)
    except ValueError:
        raise DistributedError(f"{key}={value!r} is not an integer") from None


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: `node[01-04,07],gpu2` -> `node01`."""
    text = nodelist.strip()
    depth, end = 0, len(text)
    for i, char in enumerate(text):  # the first entry ends at a comma outside brackets
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            end = i
            break
    entry = text[:end]
    match = re.fullmatch(r"([^\[]*)\[([^\]]*)\](.*)", entry)
    if not match:
        if not entry:
            raise DistributedError(f"SLURM_NODELIST={nodelist!r} names no host")
        return entry
    prefix, ranges, suffix = match.groups()
    first = ranges.split(",")[0].split("-")[0]
    return f"{prefix}{first}{first_host(suffix) if '[' in suffix else suffix}"
