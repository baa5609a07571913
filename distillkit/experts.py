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

The meta also records whether the experts' DSA was FYI's always-flip variant (`always_flip`): a
run that distils with `dsa.always_flip=true` refuses a buffer of plain-DSA experts, and the
reverse. FTD's experts take GSAM steps (`GSAM`, distillkit's own: FTD's alpha 1.0 included).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from distillkit.augment import DSA
from distillkit.data.real import setting_facts
from distillkit.errors import ConfigError, InputError
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
    "always_flip",
)
#: Buffers written before `always_flip` was recorded were all trained with plain DSA.
META_DEFAULTS: dict[str, Any] = {"always_flip": False}


class ExpertBufferError(InputError):
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


def buffer_meta(
    info: Any,
    factory: NetworkFactory,
    net: nn.Module | None = None,
    *,
    always_flip: bool | None = False,
) -> dict:
    """The setting a buffer belongs to, from the dataset info and the network factory.

    `always_flip`: the experts' DSA is FYI's always-flip variant (a p=0.5 flip, then one other
    operation); as an expectation, None accepts either kind of buffer.
    """
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
        "always_flip": None if always_flip is None else bool(always_flip),
    }


def check_meta(path: Path, saved: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """Refuse a shard made for another setting; the message names the file and the difference."""
    saved = {**META_DEFAULTS, **saved}
    expected = {**META_DEFAULTS, **expected}
    keys = [k for k in CHECKED_KEYS if not (k == "always_flip" and expected[k] is None)]
    key = mismatch(saved, expected, keys)
    if key is None:
        return
    if key == "always_flip":
        kinds = {True: "FYI's always-flip DSA (dsa.always_flip=true)", False: "plain DSA"}
        raise ExpertBufferError(
            f"{path}: this expert buffer was trained with {kinds[bool(saved[key])]}, but the run "
            f"uses {kinds[bool(expected[key])]}; train experts with distillkit-experts "
            f"dsa.always_flip={str(bool(expected[key])).lower()} (its default buffer_dir ends in "
            "_flip when on) or point method.buffer at a matching buffer"
        )
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
    guided sharpness-aware minimisation; FTD's buffer_FTD.py: rho 0.01, alpha 0.4, adaptive; its
    table trains alpha 1.0 for most cells, which `GSAM` takes).
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
            raise ConfigError(f"optimiser must be one of {OPTIMISERS}, got {self.optimiser!r}")
        if not (self.rho >= 0 and self.gsam_alpha >= 0):  # also refuses NaN
            raise ConfigError(
                f"gsam.rho and gsam.alpha must be >= 0, got {self.rho} and {self.gsam_alpha}"
            )

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


@contextmanager
def _frozen_batchnorm_statistics(net: nn.Module) -> Iterator[None]:
    """BatchNorm momentum 0 (running statistics kept) for GSAM's second, perturbed pass, as
    FTD's gsam/util.py disable_running_stats / enable_running_stats."""
    saved = [(m, m.momentum) for m in net.modules() if isinstance(m, _BatchNorm)]
    for module, _ in saved:
        module.momentum = 0.0
    try:
        yield
    finally:
        for module, momentum in saved:
            module.momentum = momentum


class GSAM:
    """Surrogate-gap guided sharpness-aware minimisation (Zhuang et al., ICLR 2022) around an SGD
    optimiser: the update of FTD's bundled GSAM (AngusDujw/FTD-distillation, buffer/gsam/gsam.py,
    `GSAM.step`), in its order of operations.

    distillkit's own because pytorch-optimizer's GSAM refuses alpha >= 1 ("alpha must be in the
    range [0.0, 1.0)") while FTD's table trains experts with alpha 1.0 in 6 of its 8 cells; FTD's
    gsam.py has no limit on alpha. One step on a batch, with g the gradient at the weights w and
    every norm taken over all parameters together:

    1. e = rho g / (||g * |w| || + eps) * w^2 (adaptive; otherwise rho g / (||g|| + eps)); w += e.
    2. g' = the gradient at w + e (BatchNorm running statistics frozen for this pass).
    3. g_perp = g - cos(g, g') ||g|| g' / (||g'|| + eps), cos = <g, g'> / (||g'|| ||g|| + eps):
       the component of g orthogonal to g'.
    4. w -= e; the base optimiser steps with the gradient g' - alpha g_perp.

    rho is a constant: FTD's ProportionScheduler ties it to a learning rate that buffer_FTD.py
    keeps constant (StepLR with gamma 1, rho_max = rho_min), so it always returns rho_max.
    Single process (FTD's gradient all-reduce across workers is not needed here).
    """

    def __init__(
        self,
        model: nn.Module,
        base: torch.optim.Optimizer,
        rho: float,
        alpha: float,
        adaptive: bool = True,
        eps: float = 1e-12,
    ) -> None:
        if rho < 0 or alpha < 0:
            raise ValueError(f"GSAM needs rho >= 0 and alpha >= 0, got rho={rho}, alpha={alpha}")
        self.model, self.base = model, base
        self.rho, self.alpha, self.adaptive, self.eps = float(rho), float(alpha), adaptive, eps
        self._batch: tuple[Callable[[Tensor, Tensor], Tensor], Tensor, Tensor] | None = None

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The base optimiser's groups (a learning-rate schedule writes `lr` into them)."""
        return self.base.param_groups

    def set_closure(
        self, loss_fn: Callable[[Tensor, Tensor], Tensor], inputs: Tensor, targets: Tensor
    ) -> None:
        """The batch and loss of the next `step` (both passes use the same augmented batch)."""
        self._batch = (loss_fn, inputs, targets)

    def _gradients(self) -> tuple[Tensor, Tensor]:
        if self._batch is None:
            raise RuntimeError("GSAM.step needs set_closure(loss_fn, inputs, targets) first")
        loss_fn, inputs, targets = self._batch
        self.base.zero_grad()
        with torch.enable_grad():
            outputs = self.model(inputs)
            loss = loss_fn(outputs, targets)
        loss.backward()
        return outputs.detach(), loss.detach()

    @staticmethod
    def _norm(tensors: list[Tensor]) -> Tensor:
        return torch.norm(torch.stack([t.norm(p=2) for t in tensors]), p=2)

    @torch.no_grad()
    def step(self) -> tuple[Tensor, Tensor]:
        """One GSAM step on the batch of `set_closure`; returns (outputs, loss) at w."""
        outputs, loss = self._gradients()
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        old = [p.grad.clone() for p in params]
        weighted = [(p.abs() * p.grad) if self.adaptive else p.grad for p in params]
        scale = self.rho / (self._norm(weighted) + self.eps)
        perturbation = []
        for p in params:
            e = p.grad * scale.to(p)
            if self.adaptive:
                e *= torch.pow(p, 2)
            p.add_(e)
            perturbation.append(e)
        with _frozen_batchnorm_statistics(self.model):
            self._gradients()
        new = [p.grad for p in params]
        inner = sum(torch.sum(a * b) for a, b in zip(old, new, strict=True))
        new_norm, old_norm = self._norm(new), self._norm(old)
        cosine = inner / (new_norm * old_norm + self.eps)
        for g_old, g_new in zip(old, new, strict=True):
            vertical = g_old - cosine * old_norm * g_new / (new_norm + self.eps)
            g_new.add_(vertical, alpha=-self.alpha)
        for p, e in zip(params, perturbation, strict=True):
            p.sub_(e)
        self.base.step()
        return outputs, loss


def gsam_wrapper(settings: ExpertSettings) -> Callable[[nn.Module, torch.optim.Optimizer], GSAM]:
    """GSAM (rho, alpha, adaptive of `settings`) around the expert's SGD."""

    def wrap(net: nn.Module, base: torch.optim.Optimizer) -> GSAM:
        return GSAM(net, base, settings.rho, settings.gsam_alpha, settings.adaptive)

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
    and new shards take the next free numbers (a buffer of the other DSA kind, plain or
    always-flip, is refused). Expert i draws everything from
    `generator_for(i)`, so a buffer grown in several runs holds the same experts as one made at
    once. Returns the shard files written.
    """
    directory = Path(directory)
    flip = augment is not None and augment.enabled and augment.always_flip
    meta = buffer_meta(data.info, factory, always_flip=flip)
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
