"""Run logging: local files always, Weights & Biases as an optional mirror."""

from distillkit.logging.base import Logger
from distillkit.logging.build import MultiLogger, build_logger
from distillkit.logging.local import LocalLogger

__all__ = ["LocalLogger", "Logger", "MultiLogger", "build_logger"]
