"""One run seed, many named generators: every random draw in a run comes from one of these."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import torch

from distillkit.errors import InputError


def derive_seed(seed: int, name: str) -> int:
    """A stable 63-bit seed for stream `name`, independent of Python's hash randomisation."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def fresh_stream(seed: int, name: str) -> torch.Generator:
    """A new CPU generator of stream `name` of `seed`, at its start whatever else has drawn."""
    return torch.Generator().manual_seed(derive_seed(seed, name))


class RunGenerators:
    """Named CPU `torch.Generator`s derived from one run seed.

    Streams are independent, so adding draws to one stream (say, evaluation) never changes another
    (say, distillation). Their states go into checkpoints for bit-exact resume.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._generators: dict[str, torch.Generator] = {}

    def __getitem__(self, name: str) -> torch.Generator:
        if name not in self._generators:
            self._generators[name] = fresh_stream(self.seed, name)
        return self._generators[name]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: g.get_state() for name, g in self._generators.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        problem = self.check_state(state)
        if problem:
            raise InputError(f"generator states: {problem}")
        for name, value in state.items():
            self[name].set_state(value)

    @staticmethod
    def check_state(state: object) -> str | None:
        """Why `state` cannot be loaded (None when it can), checked before any generator changes."""
        if not isinstance(state, dict):
            return f"expected a dict of generator states, got {type(state).__name__}"
        size = torch.Generator().get_state().numel()
        for name, value in state.items():
            if not isinstance(name, str):
                return f"generator name {name!r} is not a string"
            if not (
                isinstance(value, torch.Tensor)
                and value.dtype == torch.uint8
                and value.numel() == size
            ):
                return f"generator {name!r} holds no valid CPU generator state"
        return None


def draw_seed(generator: torch.Generator) -> int:
    """One 63-bit integer from `generator`, for APIs that only accept a seed."""
    return int(torch.randint(0, 2**63 - 1, (1,), generator=generator).item())


@contextlib.contextmanager
def seeded_global_rng(generator: torch.Generator) -> Iterator[None]:
    """Run a block under a global RNG seeded from `generator`, then restore the global state.

    PyTorch's module initialisers only use the global RNG; this keeps network initialisation on
    the run's generators without reseeding anything globally for good.
    """
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(draw_seed(generator))
        yield
