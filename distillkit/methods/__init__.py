"""Distillation methods: one module each, one small common interface; configs name the class."""

from distillkit.methods.base import Method, MethodContext, MethodSettings
from distillkit.methods.build import build_method, method_class, method_name

__all__ = [
    "Method",
    "MethodContext",
    "MethodSettings",
    "build_method",
    "method_class",
    "method_name",
]
