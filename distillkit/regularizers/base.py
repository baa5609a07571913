"""The regularizer interface and registry.

A regularizer may transform every synthetic batch on its way to a network (installed once on
`SyntheticSet.batch`) and may add a loss term. It declares the methods it can serve, so an
impossible combination fails at start-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from torch import Tensor

_REGULARIZERS: dict[str, type[Regularizer]] = {}


class Regularizer:
    name: ClassVar[str] = "base"
    #: Methods this add-on can serve; None means every method.
    supported_methods: ClassVar[frozenset[str] | None] = None

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        self.cfg = cfg

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


def available_regularizers() -> list[str]:
    return sorted(_REGULARIZERS)


def build_regularizers(cfg: Mapping[str, Any] | None, method: str) -> list[Regularizer]:
    """Instantiate the enabled add-ons (`cfg` maps name -> options), checking compatibility."""
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
    return regularizers
