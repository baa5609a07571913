"""Add-ons to a base method: batch transforms (FYI) and extra losses (IID's CC and CM)."""

from distillkit.regularizers import centralisation, covariance, fyi  # noqa: F401  (registers)
from distillkit.regularizers.base import (
    LossContext,
    Regularizer,
    SetupContext,
    available_regularizers,
    build_regularizers,
    loss_regularizers,
    needs_feature_map,
    regularizer_terms,
    setup_regularizers,
)

__all__ = [
    "LossContext",
    "Regularizer",
    "SetupContext",
    "available_regularizers",
    "build_regularizers",
    "loss_regularizers",
    "needs_feature_map",
    "regularizer_terms",
    "setup_regularizers",
]
