"""The methods by name, from the registration the package already has: conf/method/<name>.yaml
names its class (`_target_`), and a class's `name` is its file's name.

Code that needs a method's capabilities (its matching distance, its smoke budget, the expert
buffer it reads) asks its class through here instead of listing method names.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

from distillkit.errors import ConfigError
from distillkit.methods.base import Method
from distillkit.methods.build import method_class

#: The package holding the Hydra configs (the top-level conf/, shipped as distillkit.conf).
CONF_PACKAGE = "distillkit.conf"


def _method_dir() -> Any:
    return resources.files(CONF_PACKAGE).joinpath("method")


def method_files() -> list[str]:
    """The names of the shipped method configs (conf/method/*.yaml), sorted."""
    return sorted(
        p.name.removesuffix(".yaml") for p in _method_dir().iterdir() if p.name.endswith(".yaml")
    )


@functools.cache
def _load(name: str) -> dict[str, Any]:
    import yaml  # omegaconf's dependency

    path = _method_dir().joinpath(f"{name}.yaml")
    if not path.is_file():
        raise ConfigError(
            f"unknown method {name!r}: no conf/method/{name}.yaml; use {method_files()}"
        )
    return yaml.safe_load(path.read_text()) or {}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        out[key] = (
            _merge(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
        )
    return out


def method_file(name: str) -> dict[str, Any]:
    """conf/method/<name>.yaml as a plain mapping, the method files its `defaults` list names
    merged in order (`_self_` where listed, else last, as Hydra does); interpolations stay
    strings. Enough to read a method's `_target_` and its own keys without composing a run."""
    own = dict(_load(name))
    defaults = list(own.pop("defaults", None) or [])
    if "_self_" not in defaults:
        defaults.append("_self_")
    merged: dict[str, Any] = {}
    for entry in defaults:
        if entry == "_self_":
            merged = _merge(merged, own)
        elif isinstance(entry, str):  # another method file (no group overrides here)
            merged = _merge(merged, method_file(entry))
    return merged


def shipped_method(name: str) -> type[Method]:
    """The class conf/method/<name>.yaml names."""
    return method_class(method_file(name))


def shipped_methods() -> dict[str, type[Method]]:
    """Every shipped method by name (conf/method/*.yaml, each file's class)."""
    return {name: shipped_method(name) for name in method_files()}


def _subclasses(cls: type[Method]) -> list[type[Method]]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def known_methods() -> dict[str, type[Method]]:
    """The shipped methods by name, then every other Method subclass defined so far that names
    itself (`name` in its own body): a new method is one more class, and code that asks for
    capabilities finds it without a list to edit. A name two classes claim is the shipped one's,
    else the first defined."""
    known = shipped_methods()
    for cls in _subclasses(Method):
        if "name" in vars(cls):
            known.setdefault(cls.name, cls)
    return known
