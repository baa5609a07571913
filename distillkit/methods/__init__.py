"""Distillation methods: one module each, one small common interface, one registry."""

from distillkit.methods.base import Method, MethodContext
from distillkit.methods.registry import available_methods, build_method, method_class

__all__ = ["Method", "MethodContext", "available_methods", "build_method", "method_class"]
