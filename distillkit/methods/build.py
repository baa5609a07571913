"""A method from its config: the class its `_target_` names (the YAML is the registration)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.utils import get_class

from distillkit.errors import ConfigError
from distillkit.methods.base import Method, MethodContext


def method_class(method_cfg: Mapping[str, Any]) -> type[Method]:
    """The Method subclass `method_cfg["_target_"]` names (ConfigError when it names none)."""
    target = method_cfg.get("_target_")
    label = method_cfg.get("name", "?")
    if not target:
        raise ConfigError(
            f"unknown method {label!r}: its config names no class (method._target_); the "
            "options are the files of conf/method/"
        )
    try:
        cls = get_class(str(target))
    except Exception as exc:  # hydra wraps import errors in its own types
        detail = " ".join(str(exc).split())[:160]
        raise ConfigError(f"unknown method {label!r}: cannot import {target} ({detail})") from None
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise ConfigError(f"unknown method {label!r}: {target} is not a distillkit Method")
    return cls


def build_method(ctx: MethodContext) -> Method:
    return method_class(ctx.cfg)(ctx)
