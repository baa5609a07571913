"""A method from its config: the class its `_target_` names (the YAML is the registration)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from distillkit.methods.base import Method, MethodContext
from distillkit.settings import component_class


def method_class(method_cfg: Mapping[str, Any]) -> type[Method]:
    """The Method subclass `method_cfg["_target_"]` names (ConfigError when it names none)."""
    unknown = f"unknown method {method_cfg.get('_target_', '?')!r}"
    return component_class(method_cfg.get("_target_"), Method, unknown)


def method_name(method_cfg: Mapping[str, Any]) -> str:
    """The method's one name (its class's `name`, which is also its conf/method file's name):
    what results, tables, run names and W&B record."""
    return method_class(method_cfg).name


def build_method(ctx: MethodContext) -> Method:
    return method_class(ctx.cfg)(ctx)
