"""The add-on interface: batch transforms (FYI) and extra loss terms (IID's CC and CM).

An add-on may transform every synthetic batch on its way to a network (installed once on
`SyntheticSet.batch`, so it holds for every method) and may add a loss term to the base method's
matching step, which only methods declaring `takes_loss_addons` offer. Add-ons are named by their
config (`_target_`), read their own `Settings`, and are set up once per run (`setup`: the weight
for the base method, pools loaded) before the first step, which is when a missing pool is
reported.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from distillkit.errors import ConfigError
from distillkit.settings import Settings, component_class


@dataclass
class SetupContext:
    """What loss add-ons need from the run, once, before the first step."""

    #: The dataset the run distils (a `DatasetInfo`): pools are checked against it.
    info: Any
    device: torch.device | str = "cpu"
    #: The run's named generators (`RunGenerators`); add-ons draw from their own stream.
    generators: Any = None
    #: Rows per class that reach a network before add-on transforms (IPC x factor**2).
    images_per_class: int = 1

    @classmethod
    def from_method(cls, ctx: Any) -> SetupContext:
        """From a `MethodContext` (what DM/IDM do when the caller gave no context)."""
        return cls(
            info=ctx.data.info,
            device=ctx.synthetic.device,
            generators=ctx.generators,
            images_per_class=ctx.synthetic.images_per_class,
        )


@dataclass
class LossContext:
    """One matching step as a loss add-on sees it: the network and the Siamese-augmented batches.

    Labels are group ids in [0, num_classes): DM passes the classes, IDM (one class per step)
    passes zeros with num_classes = 1. Rows need not be class-contiguous (FYI appends mirrors).
    Real tensors carry no graph; synthetic ones do.
    """

    iteration: int
    net: nn.Module
    real: Tensor
    real_labels: Tensor
    syn: Tensor
    syn_labels: Tensor
    num_classes: int
    generator: torch.Generator
    #: The matching network's last feature maps (N, C, h, w), when an add-on asked for them.
    real_map: Tensor | None = None
    syn_map: Tensor | None = None


class AddOn:
    name: ClassVar[str] = "base"
    #: Whether `loss` adds a term to the method's loss (needs a method that takes loss add-ons).
    has_loss: ClassVar[bool] = False
    #: Whether `loss` needs the matching network's feature maps in its context.
    needs_feature_map: ClassVar[bool] = False
    has_transform: ClassVar[bool] = False
    #: Rows out per row in of `transform` (FYI: 2). Methods that sample a fixed number of
    #: synthetic rows per step (MTT) sample batch / multiplier so the compute stays the same.
    batch_multiplier: ClassVar[int] = 1
    Settings: ClassVar[type[Settings]] = Settings

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        self.cfg = cfg
        self.settings = self.Settings.from_config(cfg, f"regularizer.{self.name}")
        self.method: str | None = None
        self.weight = 1.0
        self.is_set_up = False

    def transform(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Map a synthetic batch before it reaches a network (identity by default)."""
        return x, y

    @property
    def has_real_transform(self) -> bool:
        """Whether real batches reaching a network are transformed too (off unless asked)."""
        return False

    def transform_real(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Map a real batch before it reaches a network (identity by default)."""
        return x, y

    # -- loss add-ons ---------------------------------------------------------------------------
    def setup(self, method: str | Sequence[str], ctx: SetupContext) -> None:
        """Once per run, before the first step: pick the weight for the base method (`method`:
        its name, or its family, most specific first), load what is needed. Subclasses extend
        it (and call it)."""
        family = [method] if isinstance(method, str) else list(method)
        self.method = family[0]
        if self.has_loss:
            self.weight = resolve_weight(self.name, self.cfg.get("weight", 1.0), family)
        self.is_set_up = True

    def loss(self, ctx: LossContext) -> Tensor:
        """The add-on's unweighted term for one matching step (methods multiply by `weight`)."""
        raise NotImplementedError(f"regularizer {self.name!r} adds no loss")

    def record(self) -> dict[str, Any] | None:
        """What results.json keeps about this add-on beyond its config (None: nothing)."""
        return None

    def vanishes(self, rows_per_class: int) -> bool:
        """Whether the term is identically zero (with zero gradient) at this many synthetic rows
        per class reaching the network."""
        del rows_per_class
        return False


def resolve_weight(name: str, weight: Any, method: str | Sequence[str]) -> float:
    """A number, or a mapping {method: number} (the published weights differ per base method);
    with a family of names, the first one the mapping has."""
    family = [method] if isinstance(method, str) else list(method)
    if isinstance(weight, Mapping):
        known = next((m for m in family if m in weight), None)
        if known is None:
            raise ConfigError(
                f"regularizer {name!r} has no weight for method {family[0]!r} (weights given for "
                f"{', '.join(sorted(weight))}); set regularizer.{name}.weight.{family[0]}=..."
            )
        weight = weight[known]
    try:
        value = float(weight)
    except (TypeError, ValueError):
        raise ConfigError(
            f"regularizer {name!r}: weight must be a number, got {weight!r}"
        ) from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"regularizer {name!r}: weight must be finite and >= 0, got {value}")
    return value


def addon_class(name: str, options: Mapping[str, Any]) -> type[AddOn]:
    """The class an add-on's config names in `_target_` (the files of conf/regularizer/)."""
    return component_class(options.get("_target_"), AddOn, f"unknown regularizer {name!r}")


def build_addons(
    cfg: Mapping[str, Any] | None, method: Any = None, context: SetupContext | None = None
) -> list[AddOn]:
    """Instantiate the enabled add-ons (`cfg` maps name -> options with `_target_`).

    `method` (a Method class) is checked for the capability loss add-ons need. With `context`,
    add-ons are set up at once (pools loaded and checked); otherwise the method sets them up.
    """
    addons = []
    for name, options in dict(cfg or {}).items():
        options = dict(options or {})
        cls = addon_class(str(name), options)
        if cls.has_loss and method is not None and not getattr(method, "takes_loss_addons", False):
            raise ConfigError(
                f"regularizer {name!r} cannot be combined with method {method.name!r}: it adds "
                "a loss term, which only methods with takes_loss_addons take (dm, idm and their "
                "subclasses)"
            )
        options.pop("_target_")
        addons.append(cls(options))  # Settings.from_config: a bad option is a ConfigError
    if context is not None:
        family = method.family() if method is not None else ("base",)
        setup_addons(addons, family, context)
    return addons


def transform_multiplier(addons: Sequence[AddOn]) -> int:
    """Rows reaching a network per row sampled, over every batch transform (FYI: 2)."""
    multiplier = 1
    for addon in addons:
        if addon.has_transform:
            multiplier *= addon.batch_multiplier
    return multiplier


def setup_addons(
    addons: Sequence[AddOn], method: str | Sequence[str], context: SetupContext
) -> None:
    """Set up the add-ons not set up yet; warn once if every new loss term would vanish."""
    new = [a for a in addons if not a.is_set_up]
    for addon in new:
        addon.setup(method, context)
    rows = context.images_per_class * transform_multiplier(addons)
    dead = [a.name for a in new if a.has_loss and a.vanishes(rows)]
    if dead:
        base = method if isinstance(method, str) else method[0]
        warnings.warn(
            f"regularizer(s) {', '.join(dead)} with method {base!r}: {rows} synthetic image(s) "
            "per class reach the network, so these terms and their gradients are identically 0 "
            "(the IID paper: DM at IPC 1); they add nothing to this run",
            UserWarning,
            stacklevel=2,
        )


def loss_addons(addons: Sequence[AddOn]) -> list[AddOn]:
    return [a for a in addons if a.has_loss]


def needs_feature_map(addons: Sequence[AddOn]) -> bool:
    return any(a.has_loss and a.needs_feature_map for a in addons)


def addon_terms(addons: Sequence[AddOn], ctx: LossContext) -> tuple[Tensor, dict[str, Tensor]]:
    """(sum of weight x term, {name: unweighted term}) over the loss add-ons."""
    total = ctx.syn.new_zeros(())
    terms: dict[str, Tensor] = {}
    for addon in addons:
        if addon.has_loss:
            term = addon.loss(ctx)
            terms[addon.name] = term
            total = total + addon.weight * term
    return total, terms
