"""Add-ons to a base method: batch transforms (FYI) and extra losses (IID's CC and CM).

The config group that selects them is `regularizer` (the design card's name); each option's
YAML names its class in `_target_`.
"""

from distillkit.addons.base import (
    AddOn,
    LossContext,
    SetupContext,
    addon_terms,
    build_addons,
    loss_addons,
    needs_feature_map,
    setup_addons,
    transform_multiplier,
)

__all__ = [
    "AddOn",
    "LossContext",
    "SetupContext",
    "addon_terms",
    "build_addons",
    "loss_addons",
    "needs_feature_map",
    "setup_addons",
    "transform_multiplier",
]
