"""The regularizer interface and registry.

A regularizer may transform every synthetic batch on its way to a network (installed once on
`SyntheticSet.batch`) and may add a loss term to the base method's matching step (IID's class
centralisation and covariance matching). It declares the methods it can serve, so an impossible
combination fails at start-up. Loss add-ons are set up once per run (`setup`: weights for the
base method, pools loaded) before the first step, which is when a missing pool is reported.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

_REGULARIZERS: dict[str, type[Regularizer]] = {}


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


class Regularizer:
    name: ClassVar[str] = "base"
    #: Methods this add-on can serve; None means every method.
    supported_methods: ClassVar[frozenset[str] | None] = None
    #: Whether `loss` adds a term to the method's loss.
    has_loss: ClassVar[bool] = False
    #: Whether `loss` needs the matching network's feature maps in its context.
    needs_feature_map: ClassVar[bool] = False

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        self.cfg = cfg
        self.method: str | None = None
        self.weight = 1.0
        self.is_set_up = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _REGULARIZERS[cls.name] = cls

    def transform(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Map a synthetic batch before it reaches a network (identity by default)."""
        return x, y

    has_transform: ClassVar[bool] = False
    #: Rows out per row in of `transform` (FYI: 2). Methods that sample a fixed number of
    #: synthetic rows per step (MTT) sample batch / multiplier so the compute stays the same.
    batch_multiplier: ClassVar[int] = 1

    @property
    def has_real_transform(self) -> bool:
        """Whether real batches reaching a network are transformed too (off unless asked)."""
        return False

    def transform_real(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Map a real batch before it reaches a network (identity by default)."""
        return x, y

    # -- loss add-ons ---------------------------------------------------------------------------
    def setup(self, method: str, ctx: SetupContext) -> None:
        """Once per run, before the first step: pick the weight for `method`, load what is
        needed. Subclasses extend it (and call it)."""
        self.method = method
        if self.has_loss:
            self.weight = resolve_weight(self.name, self.cfg.get("weight", 1.0), method)
        self.is_set_up = True

    def loss(self, ctx: LossContext) -> Tensor:
        """The add-on's unweighted term for one matching step (methods multiply by `weight`)."""
        raise NotImplementedError(f"regularizer {self.name!r} adds no loss")

    def vanishes(self, rows_per_class: int) -> bool:
        """Whether the term is identically zero (with zero gradient) at this many synthetic rows
        per class reaching the network."""
        del rows_per_class
        return False


def resolve_weight(name: str, weight: Any, method: str) -> float:
    """A number, or a mapping {method: number} (the published weights differ per base method)."""
    if isinstance(weight, Mapping):
        if method not in weight:
            raise ValueError(
                f"regularizer {name!r} has no weight for method {method!r} (weights given for "
                f"{', '.join(sorted(weight))}); set regularizer.{name}.weight.{method}=..."
            )
        weight = weight[method]
    try:
        value = float(weight)
    except (TypeError, ValueError):
        raise ValueError(f"regularizer {name!r}: weight must be a number, got {weight!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"regularizer {name!r}: weight must be finite and >= 0, got {value}")
    return value


def available_regularizers() -> list[str]:
    return sorted(_REGULARIZERS)


def build_regularizers(
    cfg: Mapping[str, Any] | None, method: str, context: SetupContext | None = None
) -> list[Regularizer]:
    """Instantiate the enabled add-ons (`cfg` maps name -> options), checking compatibility.

    With `context`, loss add-ons are set up at once (pools loaded and checked); without it, the
    method sets them up from its own context when it is built.
    """
    regularizers = []
    for name, options in dict(cfg or {}).items():
        if name not in _REGULARIZERS:
            raise ValueError(
                f"unknown regularizer {name!r}; available: "
                f"{', '.join(available_regularizers()) or 'none yet'}"
            )
        cls = _REGULARIZERS[name]
        if cls.supported_methods is not None and method not in cls.supported_methods:
            raise ValueError(
                f"regularizer {name!r} cannot be combined with method {method!r}; it supports: "
                f"{', '.join(sorted(cls.supported_methods))}"
            )
        regularizers.append(cls(options or {}))
    if context is not None:
        setup_regularizers(regularizers, method, context)
    return regularizers


def transform_multiplier(regularizers: Sequence[Regularizer]) -> int:
    """Rows reaching a network per row sampled, over every batch transform (FYI: 2)."""
    multiplier = 1
    for regularizer in regularizers:
        if regularizer.has_transform:
            multiplier *= regularizer.batch_multiplier
    return multiplier


def setup_regularizers(
    regularizers: Sequence[Regularizer], method: str, context: SetupContext
) -> None:
    """Set up the add-ons not set up yet; warn once if every new loss term would vanish."""
    new = [r for r in regularizers if not r.is_set_up]
    for regularizer in new:
        regularizer.setup(method, context)
    rows = context.images_per_class * transform_multiplier(regularizers)
    dead = [r.name for r in new if r.has_loss and r.vanishes(rows)]
    if dead:
        warnings.warn(
            f"regularizer(s) {', '.join(dead)} with method {method!r}: {rows} synthetic image(s) "
            "per class reach the network, so these terms and their gradients are identically 0 "
            "(the IID paper: DM at IPC 1); they add nothing to this run",
            UserWarning,
            stacklevel=2,
        )


def loss_regularizers(regularizers: Sequence[Regularizer]) -> list[Regularizer]:
    return [r for r in regularizers if r.has_loss]


def needs_feature_map(regularizers: Sequence[Regularizer]) -> bool:
    return any(r.has_loss and r.needs_feature_map for r in regularizers)


def regularizer_terms(
    regularizers: Sequence[Regularizer], ctx: LossContext
) -> tuple[Tensor, dict[str, Tensor]]:
    """(sum of weight x term, {name: unweighted term}) over the loss add-ons."""
    total = ctx.syn.new_zeros(())
    terms: dict[str, Tensor] = {}
    for regularizer in regularizers:
        if regularizer.has_loss:
            term = regularizer.loss(ctx)
            terms[regularizer.name] = term
            total = total + regularizer.weight * term
    return total, terms
