"""The common interface every distillation method implements, and the add-on plumbing they share.

A method is named by its config (`_target_: distillkit.methods.dm.DistributionMatching`); it
reads its own settings (`Settings`, checked before any data is loaded) and declares whether it
takes loss add-ons (`takes_loss_addons`): subclasses inherit both, so a DM variant works with
IID without any other file knowing its name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from distillkit.addons import (
    AddOn,
    LossContext,
    SetupContext,
    addon_terms,
    loss_addons,
    needs_feature_map,
    setup_addons,
)
from distillkit.augment import DSA
from distillkit.distributed import World, assemble_classes, class_block, class_shard
from distillkit.errors import ConfigError
from distillkit.memory import has_batch_coupling
from distillkit.networks import NetworkFactory
from distillkit.seeding import RunGenerators
from distillkit.settings import Settings, ranged
from distillkit.synthetic import SyntheticSet


def check_rows_independent(networks: Any, method: str) -> None:
    """A class-sharded run feeds each network only a rank's rows: with BatchNorm the batch
    statistics, and so every feature, would depend on which rows a rank holds."""
    net = networks(torch.Generator().manual_seed(0))  # a throwaway: no run stream is drawn
    if has_batch_coupling(net.train()):
        raise ConfigError(
            f"{method} over several processes needs a network without BatchNorm (each rank "
            "sees only its classes' rows, so batch statistics would differ from one process): "
            "use model.norm=instancenorm (the published setting) or one process"
        )


@dataclass
class MethodContext:
    """Everything a method is built from."""

    cfg: Mapping[str, Any]
    data: Any
    synthetic: SyntheticSet
    networks: NetworkFactory
    augment: DSA | None
    generators: RunGenerators
    addons: list[AddOn] = field(default_factory=list)
    #: The run's speed switches: the Runtime the assembly built once (or a `runtime` block, for
    #: methods built by hand); methods that run networks in bulk read it (`Runtime.of`).
    runtime: Any = None
    #: The ranks of the run (distillkit.distributed.World; None: one process).
    world: World | None = None


@dataclass(frozen=True)
class MethodSettings(Settings):
    """What the trainer reads of every method's config."""

    #: The method's one name, its class's `name` (= its conf/method file's): never set in a
    #: YAML; `checked_config` writes it for the files, tables and W&B.
    name: str = ""
    iterations: int = ranged(0, minimum=0)
    #: Siamese DSA while distilling (the run's `dsa` block).
    dsa: bool = False


class Method:
    """A distillation method: `step()` updates the synthetic set once and returns its losses.

    Losses come back as tensors (no host sync per step); the trainer reads them when it logs.
    """

    name: ClassVar[str] = "base"
    #: False for baselines that learn nothing (the trainer then runs no iterations).
    optimises: ClassVar[bool] = True
    #: Whether loss add-ons (IID's CC and CM) may add terms to this method's matching step;
    #: such a method builds `LossContext`s through `addon_terms`.
    takes_loss_addons: ClassVar[bool] = False
    #: Whether the method matches under a Siamese DSA draw it cannot do without (DSA; DC and DM
    #: use one only when the run asks): its `pair_distance` then needs an enabled augmentation.
    requires_augment: ClassVar[bool] = False
    #: Overrides of the method's smoke-scale table jobs (distillkit.tables): budgets small enough
    #: for a CPU check of the plumbing (the published loops and queues are far too big).
    smoke_overrides: ClassVar[tuple[str, ...]] = ()
    #: The distillkit-experts options of the expert buffer the method reads (`method.buffer`;
    #: () for plain SGD experts); None: it reads none. Tables build the buffer it needs.
    expert_options: ClassVar[tuple[str, ...] | None] = None
    #: Overrides of a smoke-scale job after the one-expert buffer it reads.
    smoke_buffer_overrides: ClassVar[tuple[str, ...]] = ()
    Settings: ClassVar[type[MethodSettings]] = MethodSettings
    #: How a run of several processes splits this method's work ("classes": each rank matches
    #: its own classes' rows, `sync_shards` assembles them; "replicated": every rank does the
    #: same, as a random subset's nothing); None: it runs in one process only.
    distributed_split: ClassVar[str | None] = None
    #: Losses every rank computes whole (not a share of the classes): rank 0's are logged.
    replicated_losses: ClassVar[tuple[str, ...]] = ()

    def __init__(self, ctx: MethodContext) -> None:
        self.ctx = ctx
        self.world = ctx.world or World.single()
        if self.world.is_distributed and self.distributed_split is None:
            raise ConfigError(
                f"method {self.name!r} runs in one process only (its class declares no "
                f"distributed_split), not in a launch of {self.world.size} processes; every "
                "shipped method declares one: README, Many GPUs"
            )
        if self.world.size > ctx.synthetic.num_classes and self.distributed_split == "classes":
            raise ConfigError(
                f"{self.world.size} processes for {ctx.synthetic.num_classes} classes: "
                f"{self.name} splits its classes over the processes, so use at most "
                f"{ctx.synthetic.num_classes}"
            )
        self.cfg = ctx.cfg
        self.settings = self.Settings.from_config(ctx.cfg, "method")
        self.data = ctx.data
        self.synthetic = ctx.synthetic
        self.generator = ctx.generators[f"method/{self.name}"]
        self.addons = list(ctx.addons)
        setup_addons(self.addons, self.family(), SetupContext.from_method(ctx))
        self.loss_addons = loss_addons(self.addons)
        self.with_map = needs_feature_map(self.loss_addons)
        #: The synthetic images' optimiser, for methods that have one (kept in checkpoints).
        self.optimiser: torch.optim.Optimizer | None = None

    def image_optimiser(self, lr: float, momentum: float) -> torch.optim.SGD:
        """SGD on the synthetic images (every published method here uses it)."""
        return torch.optim.SGD(self.synthetic.parameters(), lr=lr, momentum=momentum)

    @property
    def own_classes(self) -> range:
        """The classes this rank matches: all of them in one process (`class_shard`)."""
        return class_shard(self.world, self.synthetic.num_classes)

    @property
    def own_rows(self) -> slice | None:
        """This rank's stored rows of the class-contiguous synthetic set (None: all of them)."""
        if not self.world.is_distributed:
            return None
        return class_block(
            self.own_classes, self.synthetic.images.shape[0] // self.synthetic.num_classes
        )

    def sync_shards(self) -> None:
        """Make every rank's state whole before it is saved, evaluated or shown: each class's
        synthetic rows, and their optimiser state, from the rank that owns the class. Nothing
        to do in one process or for a method that does not split its classes."""
        if not self.world.is_distributed or self.distributed_split != "classes":
            return
        k = self.synthetic.num_classes
        self.sync_images()
        if self.optimiser is None:
            return
        for group in self.optimiser.param_groups:
            for param in group["params"]:
                for _, value in sorted(self.optimiser.state.get(param, {}).items()):
                    if torch.is_tensor(value) and value.shape == param.shape:
                        value.copy_(assemble_classes(self.world, value, k))

    def sample_own_classes(self, n: int) -> tuple[Tensor, Tensor]:
        """`n` real images of every class from the method's stream (`sample_per_class`); over
        several ranks only this rank's classes are gathered, from the same draws."""
        if not self.world.is_distributed:
            return self.data.sample_per_class(n, self.generator)
        return self.data.sample_per_class(n, self.generator, self.own_classes)

    def sync_images(self) -> None:
        """Every class's synthetic rows from the rank that owns it (a class-split method whose
        other work reads the whole set: DC's inner loop). Nothing to do in one process."""
        if not self.world.is_distributed or self.distributed_split != "classes":
            return
        images = self.synthetic.images
        with torch.no_grad():
            images.copy_(assemble_classes(self.world, images.detach(), self.synthetic.num_classes))

    def real_per_class(self, wanted: int) -> int:
        """Real images drawn per class: classes with fewer than `wanted` use all of theirs
        (no duplicated rows)."""
        return min(wanted, int(self.data.class_counts().min()))

    @classmethod
    def check_resources(cls, settings: MethodSettings) -> None:
        """Files the method needs, checked before data is loaded (MTT: its expert buffer)."""
        del settings

    @classmethod
    def family(cls) -> tuple[str, ...]:
        """This method's name, then its base methods' (published add-on weights are per base
        method: a DM variant uses DM's unless given its own)."""
        names = [c.name for c in cls.__mro__ if "name" in vars(c) and issubclass(c, Method)]
        return tuple(n for n in dict.fromkeys(names) if n != "base")

    @classmethod
    def pair_distance(
        cls,
        net: torch.nn.Module,
        x: Tensor,
        x_other: Tensor,
        labels: Tensor,
        num_classes: int,
        *,
        augment: DSA | None = None,
        generator: torch.Generator | None = None,
        budget: int = 0,
    ) -> Tensor:
        """The method's matching distance between two batches of the same shape and `labels`,
        per class, shape (num_classes,), computed by the code its matching step uses; FYI's
        unequalness U(X) = D(X, flip X) is it (distillkit.metrics.unequalness). `augment` and
        `generator`: the Siamese DSA draw of a method that `requires_augment`; `budget`: bytes
        per network pass (0: one pass). Methods that match no distance (MTT's trajectories, a
        random subset) have none: this default raises."""
        del net, x, x_other, labels, num_classes, augment, generator, budget
        raise NotImplementedError(f"method {cls.name!r} has no matching distance (pair_distance)")

    def step(self, iteration: int) -> dict[str, Tensor]:
        raise NotImplementedError

    def evaluated_set(self) -> SyntheticSet:
        """The set evaluation, the unequalness score, the grids and synthetic_set.pt see
        (FTD: the moving average of its images)."""
        return self.synthetic

    #: What `evaluated_set` is, as results.json records it (`evaluated`).
    evaluated_name = "synthetic"

    def also_evaluated(self) -> dict[str, SyntheticSet]:
        """Sets evaluated beside the evaluated set at every evaluation point, by name (FTD: its
        raw images); none by default."""
        return {}

    @property
    def evaluates_in_turn(self) -> bool:
        """True: each evaluation network trains on `also_evaluated` first, then further on the
        evaluated set (FTD's reference quirk); False: fresh networks for each set."""
        return False

    @property
    def eval_lr(self) -> float | None:
        """Learning rate evaluation should use (None: the protocol's default)."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return {} if self.optimiser is None else {"optimiser": self.optimiser.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.optimiser is not None:
            self.optimiser.load_state_dict(state["optimiser"])

    def real_view(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """A real batch as it should reach a network: add-ons' real transforms applied."""
        for addon in self.addons:
            if addon.has_real_transform:
                x, y = addon.transform_real(x, y)
        return x, y

    def siamese_augment(
        self,
        real: Tensor,
        real_groups: Tensor,
        syn: Tensor,
        syn_groups: Tensor,
        n_groups: int,
        augment: DSA | None = None,
    ) -> tuple[Tensor, Tensor]:
        """One DSA draw per group, applied identically to real and synthetic rows of the group
        (`augment`: the run's matching DSA unless a method has its own, as IDC does)."""
        augment = self.ctx.augment if augment is None else augment
        if augment is None or not augment.enabled:
            return real, syn
        params = augment.sample(n_groups, self.generator, tuple(real.shape[-2:]), real.device)
        return augment.apply(real, params, real_groups), augment.apply(syn, params, syn_groups)

    def addon_terms(self, **batch: Any) -> dict[str, Tensor]:
        """The loss add-ons' terms for one matching step (`batch`: the `LossContext` fields but
        the generator): {name: unweighted term, ..., "regularizers": their weighted sum}; {}
        when the run has none."""
        if not self.loss_addons:
            return {}
        total, terms = addon_terms(self.loss_addons, LossContext(generator=self.generator, **batch))
        return {"regularizers": total, **terms}
