"""Add-ons to a base method: batch transforms (FYI) and extra losses (IID)."""

from distillkit.regularizers.base import Regularizer, build_regularizers

__all__ = ["Regularizer", "build_regularizers"]
