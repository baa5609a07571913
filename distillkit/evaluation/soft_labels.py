"""Soft-label evaluation: a teacher relabels every augmented training batch (`eval.labels=soft`).

DD-Ranking's soft-label evaluator (mode 'M', ddranking 0.2.0 `utils/train_and_eval.py`
`train_one_epoch`) trains the evaluation models on the teacher's logits for the very batch the
student sees, after augmentation, instead of the synthetic set's class indices. Its criteria,
restated here from their definitions (not copied):

- kl: KL(softmax(t/T) || softmax(s/T)) averaged over the batch (`batchmean`);
- sce: the soft cross-entropy  -sum softmax(t/T) * log_softmax(s/T)  averaged over the batch;

each optionally multiplied by T^2 (its `scale_loss`, default off there; on here, Hinton et
al.'s convention, which keeps the gradient's size independent of T). DD-Ranking's loss classes
default to T = 1.2, its shipped configs to T = 1.0; distillkit's default is 1.0.

The teacher is one network of the evaluation architecture, either trained here on the whole
real training split (`eval.teacher=train`, the evaluation's optimiser for `eval.teacher_epochs`
epochs, no augmentation: DD-Ranking's full-data recipe for CIFAR-10 ConvNet-3 is SGD lr 0.01,
200 epochs, lr x 0.1 at 100) or loaded from a saved state_dict (`eval.teacher=<path>`, with
`{model}` standing for the architecture's name when several are evaluated). A trained teacher
draws from its own generator (seed `TEACHER_SEED`), never from the run's streams, and is kept
for the process's later evaluations of the same data and architecture.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillkit.errors import ConfigError, InputError

LABELS = ("hard", "soft")
SOFT_LOSSES = ("kl", "sce")
#: `eval.teacher` value that trains the teacher on the real training split.
TRAIN = "train"
#: Placeholder in a teacher path for the evaluation architecture's name.
MODEL_PLACEHOLDER = "{model}"
#: The trained teacher's own seed: the same teacher for every evaluation point and run.
TEACHER_SEED = 0


# -- settings ---------------------------------------------------------------------------------
def check_settings(settings: Any) -> float:
    """Validate the soft-label fields of an EvalSettings; returns the temperature as a float.

    Checked whatever `labels` is, so a typo fails at once rather than when soft labels are
    switched on. Teacher files are checked only with `labels=soft`.
    """
    _check_choice("labels", settings.labels, LABELS)
    _check_choice("soft_loss", settings.soft_loss, SOFT_LOSSES)
    temperature = _check_temperature(settings.temperature)
    if not isinstance(settings.soft_scale, bool):
        raise ConfigError(f"eval.soft_scale must be true or false, got {settings.soft_scale!r}")
    _check_epochs(settings.teacher_epochs)
    if not isinstance(settings.teacher, str) or not settings.teacher.strip():
        raise ConfigError(
            f"eval.teacher must be '{TRAIN}' or a state_dict path, got {settings.teacher!r}"
        )
    if settings.labels == "soft" and settings.teacher != TRAIN:
        for name in settings.models:
            _check_teacher_file(settings.teacher, name, len(settings.models))
    return temperature


def _check_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"eval.{key} must be one of {' | '.join(choices)}, got {value!r}")


def _check_temperature(value: Any) -> float:
    """A finite float > 0 (ints accepted, booleans refused)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"eval.temperature must be a number > 0, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"eval.temperature must be a finite number > 0, got {value!r}")
    return float(value)


def _check_epochs(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"eval.teacher_epochs must be a positive integer, got {value!r}")


def teacher_path(teacher: str, model: str) -> Path:
    """The state_dict file for architecture `model` (`{model}` in the path replaced)."""
    return Path(teacher.replace(MODEL_PLACEHOLDER, model)).expanduser()


def _check_teacher_file(teacher: str, model: str, num_models: int) -> None:
    if num_models > 1 and MODEL_PLACEHOLDER not in teacher:
        raise ConfigError(
            f"eval.teacher={teacher!r} is one file for {num_models} evaluation architectures: "
            f"put {MODEL_PLACEHOLDER} in the path for the architecture's name"
        )
    path = teacher_path(teacher, model)
    if not path.is_file():
        raise ConfigError(f"eval.teacher: no teacher state_dict for {model} at {path}")


# -- the losses -------------------------------------------------------------------------------
def soft_loss(
    student: Tensor, teacher: Tensor, kind: str, temperature: float, scale: bool = True
) -> Tensor:
    """The soft-label criterion of one batch of logits; the teacher's side takes no gradient."""
    log_p = F.log_softmax(student / temperature, dim=1)
    q = F.softmax(teacher.detach() / temperature, dim=1)
    if kind == "kl":
        loss = F.kl_div(log_p, q, reduction="batchmean")
    elif kind == "sce":
        loss = -(q * log_p).sum() / student.shape[0]
    else:
        raise ValueError(f"unknown soft loss {kind!r}")
    return loss * temperature**2 if scale else loss


@torch.no_grad()
def relabel(teacher: nn.Module, x: Tensor) -> Tensor:
    """The teacher's logits on the batch the student is about to see (in eval mode)."""
    teacher.eval()
    return teacher(x)


def batch_soft_loss(net: nn.Module, teacher: nn.Module, x: Tensor, settings: Any) -> Tensor:
    """The student's soft-label loss on batch `x`, relabelled by `teacher`."""
    return soft_loss(
        net(x), relabel(teacher, x), settings.soft_loss, settings.temperature, settings.soft_scale
    )


# -- the teacher ------------------------------------------------------------------------------
#: Trained teachers of this process: (weak reference to the training images, key, network).
_TRAINED: list[tuple[weakref.ref, tuple, nn.Module]] = []


def teacher_for(
    factory: Any, data: Any, settings: Any, train: Callable[..., nn.Module]
) -> nn.Module:
    """The teacher for architecture `factory` (loaded, or trained once per process and data by
    `train`: the protocol's train_network, handed in so that this module stays below it)."""
    if settings.teacher != TRAIN:
        return load_teacher(factory, teacher_path(settings.teacher, factory.name))
    images = data.train_images
    key = _teacher_key(factory, settings)
    _TRAINED[:] = [entry for entry in _TRAINED if entry[0]() is not None]
    for ref, known, net in _TRAINED:
        if ref() is images and known == key:
            return net
    net = train_teacher(factory, data, settings, train)
    _TRAINED.append((weakref.ref(images), key, net))
    return net


def _teacher_key(factory: Any, settings: Any) -> tuple:
    """What a trained teacher depends on besides the data."""
    recipe = teacher_recipe(settings)
    return (
        factory.name,
        factory.channels,
        factory.num_classes,
        tuple(factory.image_size),
        repr(sorted(dict(factory.options).items())),
        str(factory.device),
        recipe,
    )


def teacher_recipe(settings: Any) -> Any:
    """The evaluation's optimiser and single lr decay, hard labels, `teacher_epochs` epochs.

    Fields that do not change the teacher's training are reset, so they do not retrain it."""
    return dataclasses.replace(
        settings,
        models=(),
        num_models=1,
        epochs=settings.teacher_epochs,
        extra_epoch=False,
        cutmix_p=0.0,
        lr_milestones=(),
        at=(),
        stacked=False,
        test_batch_size=1024,
        labels="hard",
        soft_loss="kl",
        temperature=1.0,
        soft_scale=True,
        teacher=TRAIN,
    )


def train_teacher(
    factory: Any, data: Any, settings: Any, train_network: Callable[..., nn.Module]
) -> nn.Module:
    """A network trained on the whole real training split, from its own generator."""
    generator = torch.Generator().manual_seed(TEACHER_SEED)
    recipe = teacher_recipe(settings)
    net = train_network(factory, data.train_images, data.train_labels, recipe, None, generator)
    return net.eval()


def load_teacher(factory: Any, path: Path) -> nn.Module:
    """A network of `factory`'s architecture with the state_dict saved at `path`."""
    net = factory(torch.Generator().manual_seed(TEACHER_SEED))
    try:
        state = torch.load(path, map_location=factory.device, weights_only=True)
        net.load_state_dict(state)
    except (
        OSError,
        RuntimeError,
        KeyError,
        TypeError,
        AttributeError,
        EOFError,
        pickle.UnpicklingError,
    ) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(
            f"eval.teacher: {path} is not a state_dict of {factory.name} for this dataset: {first}"
        ) from error
    return net.eval()
