"""Networks for dataset distillation, built by name through ``build_model``."""

from .alexnet import AlexNet
from .base import DistillNet
from .catalog import available_models, build_model
from .convnet import ConvNet
from .lenet import LeNet
from .mlp import MLP
from .resnet import ResNet18
from .vgg import VGG11

__all__ = [
    "AlexNet",
    "ConvNet",
    "DistillNet",
    "LeNet",
    "MLP",
    "ResNet18",
    "VGG11",
    "available_models",
    "build_model",
]
