"""The catalogue of architectures: build one by the name the dataset-distillation literature
uses (`build_model`). Seeding and device placement are `distillkit.networks.NetworkFactory`'s.

Aliases (ConvNetBN, ResNet18_AP, ...) are a base class plus default options; options passed to
``build_model`` override those defaults.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from distillkit.errors import ConfigError

from .alexnet import AlexNet
from .base import DistillNet, Size, as_size
from .convnet import ConvNet
from .lenet import LeNet
from .mlp import MLP
from .resnet import ResNet18
from .vgg import VGG11

Builder = Callable[..., DistillNet]

# canonical name -> (class, default options)
_MODELS: dict[str, tuple[Builder, dict[str, Any]]] = {
    "ConvNet": (ConvNet, {}),
    **{f"ConvNetD{d}": (ConvNet, {"depth": d}) for d in range(1, 6)},
    **{f"ConvNetW{w}": (ConvNet, {"width": w}) for w in (32, 64, 128, 256)},
    "ConvNetIN": (ConvNet, {"norm": "instancenorm"}),
    "ConvNetBN": (ConvNet, {"norm": "batchnorm"}),
    "ConvNetLN": (ConvNet, {"norm": "layernorm"}),
    "ConvNetGN": (ConvNet, {"norm": "groupnorm"}),
    "ConvNetNN": (ConvNet, {"norm": "none"}),
    "ConvNetAS": (ConvNet, {"act": "sigmoid"}),
    "ConvNetAR": (ConvNet, {"act": "relu"}),
    "ConvNetAL": (ConvNet, {"act": "leakyrelu"}),
    "ConvNetASwish": (ConvNet, {"act": "swish"}),
    "ConvNetAP": (ConvNet, {"pool": "avgpool"}),
    "ConvNetMP": (ConvNet, {"pool": "maxpool"}),
    "ConvNetNP": (ConvNet, {"pool": "none"}),
    "AlexNet": (AlexNet, {"norm": "none"}),
    "AlexNetBN": (AlexNet, {"norm": "batchnorm"}),
    "VGG11": (VGG11, {"norm": "instancenorm"}),
    "VGG11BN": (VGG11, {"norm": "batchnorm"}),
    "ResNet18": (ResNet18, {"norm": "instancenorm"}),
    "ResNet18BN": (ResNet18, {"norm": "batchnorm"}),
    "ResNet18_AP": (ResNet18, {"norm": "instancenorm", "downsample": "avgpool"}),
    "ResNet18BN_AP": (ResNet18, {"norm": "batchnorm", "downsample": "avgpool"}),
    "LeNet": (LeNet, {}),
    "MLP": (MLP, {}),
}
_BY_KEY = {name.lower(): name for name in _MODELS}


def available_models() -> list[str]:
    """Canonical names accepted by ``build_model`` (matching is case-insensitive)."""
    return list(_MODELS)


def _options_of(cls: Builder) -> list[str]:
    """Keyword-only options a network class accepts (what config files may set)."""
    params = inspect.signature(cls).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def model_keys(name: str) -> frozenset[str] | None:
    """The keys a run's `model` block may set for model `name` (None: no such model)."""
    key = _BY_KEY.get(str(name).lower())
    return None if key is None else frozenset({"name", *_options_of(_MODELS[key][0])})


def build_model(
    name: str, channels: int, num_classes: int, image_size: int | Size, **options: Any
) -> DistillNet:
    """Build a freshly initialised network (PyTorch default init, nothing downloaded)."""
    key = _BY_KEY.get(str(name).lower())
    if key is None:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    cls, defaults = _MODELS[key]
    accepted = _options_of(cls)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(
            f"{key} does not take option(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(accepted) or 'none'}"
        )
    return cls(channels, num_classes, as_size(image_size), **{**defaults, **options})
