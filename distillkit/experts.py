"""Expert trajectories for trajectory matching (MTT): training them and the sharded buffer format.

An expert is a network trained on the real training set (SGD, no momentum or weight decay,
per-sample DSA); its flattened parameters are stored at init and after every epoch. A buffer is a
directory of shard files `experts_00000.pt`, ... each holding a few experts as one tensor
(experts, epochs + 1, num_params) and the metadata of the setting they were trained in (dataset,
image size, normalisation, ZCA, model and parameter layout). Opening a buffer checks every shard
against the run's setting, so trajectories from another dataset, model or whitening are refused
with an error that names the file instead of silently producing a bad distillation. The store
itself (naming, atomic writes, resume) is `shards.py`'s; the training loop is the evaluation
protocol's. Shards are opened memory-mapped: sampling an expert reads only the two epochs it
needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from distillkit.augment import DSA
from distillkit.data.real import setting_facts
from distillkit.evaluation.protocol import EvalSettings, train_network
from distillkit.networks import NetworkFactory
from distillkit.shards import Shard, ShardKind, mismatch

#: Metadata that must match between a buffer and the run that uses it.
CHECKED_KEYS = (
    "dataset",
    "channels",
    "image_size",
    "num_classes",
    "zca",
    "normalisation",
    "architecture",
    "param_layout",
)


class ExpertBufferError(ValueError):
    """A buffer that cannot serve this run (missing, unreadable, foreign or mismatched)."""


def _malformed(state: Shard) -> str | None:
    trajectories, meta = state.get("trajectories"), state.get("meta") or {}
    if (
        not isinstance(trajectories, Tensor)
        or trajectories.dim() != 3
        or trajectories.shape[0] != len(state.get("expert_ids", ()))
        or trajectories.shape[2] != meta.get("num_params")
    ):
        return "shape or ids do not agree"
    return None


#: experts_00000.pt, ... tagged "distillkit.experts/1", each one (experts, epochs + 1, params)
#: tensor of trajectories.
SHARDS = ShardKind("experts", "expert", "expert_ids", ExpertBufferError, _malformed)


# -- flat parameters ----------------------------------------------------------------------------
def flatten_parameters(net: nn.Module) -> Tensor:
    """All parameters as one detached vector, in `net.parameters()` order."""
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


def parameter_layout(net: nn.Module) -> list[list[Any]]:
    """[[name, shape], ...] in flattening order: two nets are compatible when these are equal."""
    return [[name, list(p.shape)] for name, p in net.named_parameters()]


def buffer_meta(info: Any, factory: NetworkFactory, net: nn.Module | None = None) -> dict:
    """The setting a buffer belongs to, from the dataset info and the network factory."""
    if net is None:
        net = factory(torch.Generator().manual_seed(0))
    options = {k: v for k, v in dict(factory.options).items() if v is not None}
    layout = parameter_layout(net)
    return {
        **setting_facts(info),
        # Shown in messages; `architecture` (the module tree) is what is compared, so an alias
        # (ConvNetW32) and its explicit options (ConvNet width=32) are the same network.
        "model": {"name": str(factory.name), **options},
        "architecture": repr(net),
        "param_layout": layout,
        "num_params": int(sum(math.prod(shape) for _, shape in layout)),
    }


def check_meta(path: Path, saved: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """Refuse a shard made for another setting; the message names the file and the difference."""
    key = mismatch(saved, expected, CHECKED_KEYS)
    if key is None:
        return
    if key in ("architecture", "param_layout"):  # the module tree is compared, the name shown
        key = "model"
    raise ExpertBufferError(
        f"{path}: this expert buffer was trained for {key}={saved.get(key)!r}, but the run uses "
        f"{key}={expected[key]!r}; train experts for this setting (distillkit-experts with the "
        "same dataset/model options) or point method.buffer at a matching buffer"
    )


# -- training -----------------------------------------------------------------------------------
OPTIMISERS = ("sgd", "gsam")


@dataclass(frozen=True)
class ExpertSettings:
    """The published expert recipe: SGD lr 0.01, no momentum or weight decay, batch 256.

    `optimiser="gsam"` is FTD's: the same SGD steps taken along GSAM's direction (surrogate-gap
    guided sharpness-aware minimisation; FTD's buffer_FTD.py: rho 0.01, alpha 0.4, adaptive).
    """

    epochs: int = 50
    lr: float = 0.01
    batch_size: int = 256
    optimiser: str = "sgd"
    rho: float = 0.01
    gsam_alpha: float = 0.4
    adaptive: bool = True

    def __post_init__(self) -> None:
        if self.optimiser not in OPTIMISERS:
            raise ValueError(f"optimiser must be one of {OPTIMISERS}, got {self.optimiser!r}")

    def recipe(self) -> dict[str, Any]:
        """What a shard records of how its experts were trained (beyond the shared keys)."""
        if self.optimiser == "sgd":
            return {}  # as before: SGD buffers keep their old training record
        return {
            "optimiser": self.optimiser,
            "rho": self.rho,
            "gsam_alpha": self.gsam_alpha,
            "adaptive": self.adaptive,
        }


def gsam_wrapper(settings: ExpertSettings) -> Callable[[nn.Module, torch.optim.Optimizer], Any]:
    """GSAM around the expert's SGD (pytorch-optimizer's implementation, which takes the same
    update as FTD's bundled gsam.py; tests/test_ftd.py checks it against the formula). rho is
    constant, as in FTD (rho_max = rho_min, a constant lr)."""
    from pytorch_optimizer import GSAM
    from pytorch_optimizer.lr_scheduler.proportion import ProportionScheduler

    def wrap(net: nn.Module, base: torch.optim.Optimizer) -> Any:
        lr = base.param_groups[0]["lr"]
        constant = torch.optim.lr_scheduler.LambdaLR(base, lambda _: 1.0)
        rho = ProportionScheduler(
            constant, max_lr=lr, min_lr=lr, max_value=settings.rho, min_value=settings.rho
        )
        return GSAM(
            net.parameters(),
            base_optimizer=base,
            model=net,
            rho_scheduler=rho,
            alpha=settings.gsam_alpha,
            adaptive=settings.adaptive,
        )

    return wrap


def train_expert(
    factory: NetworkFactory,
    images: Tensor,
    labels: Tensor,
    settings: ExpertSettings,
    augment: DSA | None,
    generator: torch.Generator,
) -> tuple[Tensor, nn.Module]:
    """One expert: its trajectory (epochs + 1, num_params) on the CPU (init, then every epoch)
    and the trained network. The evaluation protocol's loop with plain SGD (or GSAM) and no lr
    decay."""
    recipe = EvalSettings(
        epochs=settings.epochs,
        lr=settings.lr,
        momentum=0.0,
        weight_decay=0.0,
        batch_size=settings.batch_size,
        lr_decay_at=1.0,  # decay epoch == epochs: never
    )
    trajectory: list[Tensor] = []

    def snapshot(_done: int, net: nn.Module) -> None:
        trajectory.append(flatten_parameters(net).cpu())

    wrap = gsam_wrapper(settings) if settings.optimiser == "gsam" else None
    net = train_network(
        factory, images, labels, recipe, augment, generator, on_epoch=snapshot, wrap_optimiser=wrap
    )
    return torch.stack(trajectory), net


def write_shard(
    directory: str | Path,
    index: int,
    trajectories: Tensor,
    meta: Mapping[str, Any],
    expert_ids: list[int],
    training: Mapping[str, Any] | None = None,
) -> Path:
    """One shard file, written atomically: (experts, epochs + 1, num_params) float32 plus meta."""
    if trajectories.dim() != 3 or trajectories.shape[2] != meta["num_params"]:
        raise ValueError(
            f"trajectories must be (experts, epochs + 1, {meta['num_params']}), "
            f"got {tuple(trajectories.shape)}"
        )
    payload = {"trajectories": trajectories.detach().to("cpu", torch.float32).contiguous()}
    return SHARDS.write(directory, index, expert_ids, meta, training, payload)


def train_experts(
    directory: str | Path,
    data: Any,
    factory: NetworkFactory,
    augment: DSA | None,
    num_experts: int,
    settings: ExpertSettings,
    experts_per_shard: int,
    generator_for: Callable[[int], torch.Generator],
    on_expert: Callable[[int, nn.Module, Tensor], None] | None = None,
) -> list[Path]:
    """Train experts 0..num_experts-1 into `directory`, `experts_per_shard` per shard file.

    Resumable: experts already in the directory's shards (of this setting and recipe) are kept
    and new shards take the next free numbers. Expert i draws everything from
    `generator_for(i)`, so a buffer grown in several runs holds the same experts as one made at
    once. Returns the shard files written.
    """
    directory = Path(directory)
    meta = buffer_meta(data.info, factory)
    training = {
        "epochs": settings.epochs,
        "lr": settings.lr,
        "batch_size": settings.batch_size,
        "dsa": augment.strategy if augment is not None and augment.enabled else None,
        **settings.recipe(),
    }

    def train_one(i: int) -> Tensor:
        trajectory, net = train_expert(
            factory, data.train_images, data.train_labels, settings, augment, generator_for(i)
        )
        if on_expert is not None:
            on_expert(i, net, trajectory)
        return trajectory

    def write(index: int, ids: list[int], trajectories: list[Tensor]) -> Path:
        return write_shard(directory, index, torch.stack(trajectories), meta, ids, training)

    def held(where: Path) -> list[int]:
        buffer = ExpertBuffer.open(where, meta)
        optimiser = buffer.training.get("optimiser", "sgd")
        if optimiser != settings.optimiser:
            raise ExpertBufferError(
                f"{where}: holds {optimiser} experts, asked for {settings.optimiser}; "
                "use another buffer directory"
            )
        if buffer.epochs != settings.epochs:
            raise ExpertBufferError(
                f"{where}: holds experts of {buffer.epochs} epochs, asked for {settings.epochs}; "
                "use another buffer directory"
            )
        return buffer.expert_ids

    return SHARDS.fill(directory, range(num_experts), experts_per_shard, held, train_one, write)


# -- reading ------------------------------------------------------------------------------------
def _epochs(state: Shard) -> int:
    """Training epochs of a shard's experts (a trajectory holds epochs + 1 vectors)."""
    return int(state["trajectories"].shape[1]) - 1


class ExpertBuffer:
    """The experts of one buffer directory, validated and memory-mapped."""

    def __init__(self, directory: Path, shards: list[tuple[Path, Shard]]) -> None:
        self.directory = directory
        self.paths = [path for path, _ in shards]
        self._trajectories = [state["trajectories"] for _, state in shards]
        self.expert_ids = [i for _, state in shards for i in state["expert_ids"]]
        self._index = [(s, row) for s, t in enumerate(self._trajectories) for row in range(len(t))]
        self.meta = shards[0][1]["meta"]
        self.training = shards[0][1].get("training", {})

    @classmethod
    def open(cls, directory: str | Path, expected: Mapping[str, Any]) -> ExpertBuffer:
        """Every shard under `directory`, each checked against the run's setting `expected`."""
        directory = Path(directory)

        def check(path: Path, state: Shard, first: Shard | None) -> None:
            check_meta(path, state["meta"], expected)
            if first is not None and _epochs(state) != _epochs(first):
                raise ExpertBufferError(
                    f"{path}: holds trajectories of {_epochs(state)} epochs, other shards "
                    f"{_epochs(first)}; keep one expert recipe per buffer"
                )

        shards = SHARDS.open(directory, check)
        if not shards:
            raise ExpertBufferError(
                f"{directory}: no expert shards ({SHARDS.pattern}) found; train them first with "
                "distillkit-experts (same dataset and model options) or set method.buffer"
            )
        return cls(directory, shards)

    @property
    def num_experts(self) -> int:
        return len(self._index)

    @property
    def epochs(self) -> int:
        """Training epochs per expert (each trajectory holds epochs + 1 parameter vectors)."""
        return int(self._trajectories[0].shape[1]) - 1

    def trajectory(self, expert: int) -> Tensor:
        """Expert `expert`'s (epochs + 1, num_params) trajectory (memory-mapped, CPU)."""
        shard, row = self._index[expert]
        return self._trajectories[shard][row]

    def sample(
        self, generator: torch.Generator, max_start_epoch: int, expert_epochs: int
    ) -> tuple[Tensor, Tensor, int, int]:
        """A random expert and start epoch t ~ U{0..max_start_epoch-1}: (θ_t, θ_t+M, expert, t).

        Only these two rows are read from disk; they come back as fresh CPU tensors.
        """
        if max_start_epoch + expert_epochs > self.epochs + 1 or max_start_epoch < 1:
            raise ExpertBufferError(
                f"{self.directory}: experts have {self.epochs} epochs, but max_start_epoch="
                f"{max_start_epoch} and expert_epochs={expert_epochs} need "
                f"{max_start_epoch - 1 + expert_epochs}"
            )
        expert = int(torch.randint(self.num_experts, (1,), generator=generator))
        start = int(torch.randint(max_start_epoch, (1,), generator=generator))
        trajectory = self.trajectory(expert)
        return trajectory[start].clone(), trajectory[start + expert_epochs].clone(), expert, start
