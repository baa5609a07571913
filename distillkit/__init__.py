"""distillkit: dataset distillation in one composable, reproducible trainer."""

__version__ = "0.1.0"
