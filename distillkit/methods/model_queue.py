"""IDM's model queue: randomly initialised networks that keep training on real data.

Matching against networks at many stages of training (not only at initialisation, as DM does)
is what lets IDM's synthetic images carry the features trained networks rely on. Each queued
network keeps its own optimiser and its own running training accuracy, which weighs IDM's
class-aware term. The whole queue is part of a checkpoint, so a resumed run is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillkit.augment import DSA
from distillkit.networks import NetworkFactory


@dataclass
class QueuedNet:
    """One network of the queue, its optimiser, and its running training accuracy."""

    net: nn.Module
    optimiser: torch.optim.SGD
    #: Correct predictions and images seen since the net joined the queue (as a tensor: no sync).
    correct: Tensor
    seen: int = 0

    @property
    def accuracy(self) -> Tensor:
        """Running training accuracy in percent (0-100) since joining or the last reset; 0 before
        any training (as the reference code)."""
        if self.seen == 0:
            return torch.zeros((), device=self.correct.device)
        return (self.correct * (100.0 / self.seen)).float()


class ModelQueue:
    """A FIFO of at most `max_size` networks, all from the run's seeded model factory."""

    def __init__(
        self,
        networks: NetworkFactory,
        generator: torch.Generator,
        max_size: int,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
    ) -> None:
        if max_size < 1:
            raise ValueError(f"the model queue needs max_size >= 1, got {max_size}")
        self.networks = networks
        self.generator = generator
        self.max_size = int(max_size)
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), float(weight_decay)
        self.members: list[QueuedNet] = []

    def __len__(self) -> int:
        return len(self.members)

    def _member(self, net: nn.Module) -> QueuedNet:
        optimiser = torch.optim.SGD(
            net.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )
        device = next(net.parameters()).device
        return QueuedNet(net, optimiser, torch.zeros((), dtype=torch.float64, device=device))

    def push(self) -> None:
        """Append a fresh random network; drop the oldest ones beyond `max_size`."""
        self.members.append(self._member(self.networks(self.generator)))
        del self.members[: max(0, len(self.members) - self.max_size)]

    def reset_accuracy(self) -> None:
        """Start every running accuracy afresh (the reference does so at each evaluation)."""
        for member in self.members:
            member.correct.zero_()
            member.seen = 0

    def sample(self) -> QueuedNet:
        """One member drawn uniformly with the run's generator."""
        if not self.members:
            raise RuntimeError("the model queue is empty")
        index = int(torch.randint(len(self.members), (1,), generator=self.generator))
        return self.members[index]

    def train(
        self,
        images: Tensor,
        labels: Tensor,
        num_nets: int,
        steps: int,
        batch_size: int,
        augment: DSA | None = None,
    ) -> list[int]:
        """Train `num_nets` distinct random members for `steps` SGD steps each on random batches
        of (`images`, `labels`) (per-sample DSA when given). Returns the indices trained."""
        chosen = torch.randperm(len(self.members), generator=self.generator)[:num_nets].tolist()
        n = images.shape[0]
        for index in chosen:
            member = self.members[index]
            member.net.train()
            for _ in range(steps):
                rows = torch.randperm(n, generator=self.generator)[:batch_size]
                rows = rows.to(images.device)
                x, y = images[rows], labels[rows]
                if augment is not None and augment.enabled:
                    x = augment(x, self.generator)
                logits = member.net(x)
                loss = F.cross_entropy(logits, y)
                member.optimiser.zero_grad(set_to_none=True)
                loss.backward()
                member.optimiser.step()
                member.correct += (logits.detach().argmax(1) == y).sum()
                member.seen += int(y.shape[0])
        return chosen

    # -- persistence ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "members": [
                {
                    "net": m.net.state_dict(),
                    "optimiser": m.optimiser.state_dict(),
                    "correct": m.correct.clone(),
                    "seen": m.seen,
                }
                for m in self.members
            ]
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Rebuild the queue from `state` (weights overwritten: no run generator is consumed)."""
        scratch = torch.Generator().manual_seed(0)
        self.members = []
        for saved in state["members"]:
            member = self._member(self.networks(scratch))
            member.net.load_state_dict(saved["net"])
            member.optimiser.load_state_dict(saved["optimiser"])
            member.correct = saved["correct"].to(member.correct.device, member.correct.dtype)
            member.seen = int(saved["seen"])
            self.members.append(member)
