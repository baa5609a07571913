"""Add-ons to a base method: batch transforms (FYI) and extra losses (IID)."""

from distillkit.regularizers import fyi  # noqa: F401  (registers the add-on)
from distillkit.regularizers.base import Regularizer, available_regularizers, build_regularizers

__all__ = ["Regularizer", "available_regularizers", "build_regularizers"]
