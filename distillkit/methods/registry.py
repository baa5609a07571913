"""Method names -> classes: the one place a new method is registered.

Entries are import paths, so a method's module (and its dependencies) load only when used.
"""

from __future__ import annotations

from importlib import import_module

from distillkit.methods.base import Method, MethodContext

_METHODS: dict[str, str] = {
    "random": "distillkit.methods.random_subset:RandomSubset",
    "dm": "distillkit.methods.dm:DistributionMatching",
    "dc": "distillkit.methods.gradient_matching:DatasetCondensation",
    "dsa": "distillkit.methods.gradient_matching:SiameseGradientMatching",
    "idm": "distillkit.methods.idm:ImprovedDistributionMatching",
    "mtt": "distillkit.methods.mtt:TrajectoryMatching",
}


def available_methods() -> list[str]:
    return sorted(_METHODS)


def method_class(name: str) -> type[Method]:
    try:
        module, _, attribute = _METHODS[name].partition(":")
    except KeyError:
        raise ValueError(
            f"unknown method {name!r}; available: {', '.join(available_methods())}"
        ) from None
    return getattr(import_module(module), attribute)


def build_method(name: str, ctx: MethodContext) -> Method:
    return method_class(name)(ctx)
