"""Method names -> classes: the one place a new method is registered."""

from __future__ import annotations

from distillkit.methods.base import Method, MethodContext
from distillkit.methods.dm import DistributionMatching
from distillkit.methods.random_subset import RandomSubset

_METHODS: dict[str, type[Method]] = {
    RandomSubset.name: RandomSubset,
    DistributionMatching.name: DistributionMatching,
}


def available_methods() -> list[str]:
    return sorted(_METHODS)


def build_method(name: str, ctx: MethodContext) -> Method:
    try:
        cls = _METHODS[name]
    except KeyError:
        raise ValueError(
            f"unknown method {name!r}; available: {', '.join(available_methods())}"
        ) from None
    return cls(ctx)
