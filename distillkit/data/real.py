"""The real dataset as every method sees it: normalised tensors on one device plus class indexing.

Distillation methods sample real images per class thousands of times, so the per-class index
structure is computed once here and sampling is pure index arithmetic driven by a caller-owned
CPU generator (reproducible on any device).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from distillkit.errors import ConfigError, InputError

if TYPE_CHECKING:
    from distillkit.data.zca import ZCAState


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset: shape, classes and the normalisation constants used."""

    name: str
    channels: int
    image_size: tuple[int, int]
    num_classes: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    #: ZCA-whitened pixels (then mean/std are the identity 0/1: no normalisation on top).
    zca: bool = False


def setting_facts(info: Any) -> dict[str, Any]:
    """The dataset facts a stored artefact (expert buffer, pre-trained pool) must share with the
    run that uses it: features of another dataset, resolution or whitening are useless there."""
    return {
        "dataset": str(info.name),
        "channels": int(info.channels),
        "image_size": [int(s) for s in info.image_size],
        "num_classes": int(info.num_classes),
        "zca": bool(getattr(info, "zca", False)),
        "normalisation": {
            "mean": [float(m) for m in info.mean],
            "std": [float(s) for s in info.std],
        },
    }


class RealData:
    """Normalised train/test tensors of one dataset, with per-class lookup and sampling.

    Images are float32 (N, C, H, W) normalised with `info.mean`/`info.std`, or ZCA-whitened with
    `zca` (then `info.zca` is true); labels are int64. The training set need not be sorted by
    class: a stable class ordering is precomputed.
    """

    def __init__(
        self,
        info: DatasetInfo,
        train_images: Tensor,
        train_labels: Tensor,
        test_images: Tensor,
        test_labels: Tensor,
        zca: ZCAState | None = None,
        validation: tuple[Tensor, Tensor] | None = None,
    ) -> None:
        if info.zca != (zca is not None):
            raise ValueError(
                f"{info.name}: info.zca={info.zca} but a ZCA state is {zca is not None}"
            )
        _check_split("train", info, train_images, train_labels)
        _check_split("test", info, test_images, test_labels)
        self.info = info
        self.train_images = train_images
        self.train_labels = train_labels
        self.test_images = test_images
        self.test_labels = test_labels
        #: The fitted ZCA whitening (None unless the dataset was loaded with zca=True).
        self.zca = zca
        #: Images and labels held out of the training split for model selection (or None).
        self.validation = validation
        labels_cpu = train_labels.detach().to("cpu", torch.int64)
        # Training indices grouped by class (stable), with each class's start and size.
        self._order_cpu = torch.sort(labels_cpu, stable=True).indices
        self._counts = torch.bincount(labels_cpu, minlength=info.num_classes)
        self._starts = torch.cumsum(self._counts, 0) - self._counts
        self._order = self._order_cpu.to(train_images.device)

    @property
    def zca_state(self) -> dict[str, Any] | None:
        """The ZCA state to save with a synthetic set (`load_dataset(..., zca_state=)` re-applies
        it); None when the dataset is not whitened."""
        return None if self.zca is None else self.zca.state_dict()

    @property
    def device(self) -> torch.device:
        """Device that holds the image tensors."""
        return self.train_images.device

    def class_indices(self, c: int) -> Tensor:
        """Indices (on `device`) of the training images of class `c`, in dataset order."""
        start, count = int(self._starts[c]), int(self._counts[c])
        return self._order[start : start + count]

    def class_counts(self) -> Tensor:
        """Number of training images per class, shape (K,), int64 on the CPU (metadata)."""
        return self._counts.clone()

    def sample_per_class(
        self, n: int, generator: torch.Generator, classes: range | None = None
    ) -> tuple[Tensor, Tensor]:
        """Draw `n` training images of every class, class-contiguous (class 0 first).

        Within a class the draw is without replacement when `n` <= its size, else with
        replacement. All randomness comes from `generator` (CPU); returns (K*n images, labels).
        `classes`: only those classes' rows are gathered (a rank of a class-sharded run), from
        the same draws, so the generator advances as it does for all of them.
        """
        k = self.info.num_classes
        counts = self._counts
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if bool((counts == 0).any()):
            empty = torch.nonzero(counts == 0).flatten().tolist()
            raise InputError(f"cannot sample: classes {empty} have no training images")
        max_count = int(counts.max())
        small = counts < n  # classes drawn with replacement
        pos = torch.zeros(k, n, dtype=torch.int64)
        if not bool(small.all()):
            # Random keys per (class, slot); padding slots beyond a class's size never win.
            keys = torch.rand(k, max_count, generator=generator)
            keys[torch.arange(max_count) >= counts[:, None]] = 2.0
            # Some class has >= n images, so n <= max_count and top-k is defined.
            pos = torch.topk(keys, n, dim=1, largest=False).indices
        if bool(small.any()):
            u = torch.rand(k, n, generator=generator, dtype=torch.float64)
            with_repl = (u * counts[:, None]).long().clamp_max_(counts[:, None] - 1)
            pos = torch.where(small[:, None], with_repl, pos)
        idx = self._order_cpu[(self._starts[:, None] + pos).flatten()]
        labels = torch.arange(k).repeat_interleave(n)
        if classes is not None:
            idx, labels = (
                idx[classes.start * n : classes.stop * n],
                labels[classes.start * n : classes.stop * n],
            )
        idx = idx.to(self.device)
        return self.train_images[idx], labels.to(self.device)

    def sample_class(self, c: int, n: int, generator: torch.Generator) -> Tensor:
        """Draw `n` training images of class `c` (without replacement when possible)."""
        count = int(self._counts[c])
        if count == 0:
            raise InputError(f"cannot sample: class {c} has no training images")
        if n <= count:
            pos = torch.randperm(count, generator=generator)[:n]
        else:
            pos = torch.randint(0, count, (n,), generator=generator)
        idx = self._order_cpu[int(self._starts[c]) + pos]
        return self.train_images[idx.to(self.device)]

    def denormalise(self, x: Tensor) -> Tensor:
        """Undo the mean/std normalisation or the ZCA whitening (pixel space, roughly [0, 1];
        not clamped)."""
        if self.zca is not None:
            return self.zca.invert(x)
        shape = (-1, 1, 1)
        mean = torch.tensor(self.info.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.info.std, dtype=x.dtype, device=x.device).view(shape)
        return x * std + mean

    def to(self, device: str | torch.device) -> RealData:
        """A copy of this dataset with every tensor on `device`."""
        return RealData(
            self.info,
            self.train_images.to(device),
            self.train_labels.to(device),
            self.test_images.to(device),
            self.test_labels.to(device),
            None if self.zca is None else self.zca.to(device),
            None if self.validation is None else tuple(t.to(device) for t in self.validation),
        )

    def hold_out(self, per_class: int) -> RealData:
        """This dataset with the last `per_class` training images of every class (in dataset
        order: no random draw) moved to a validation split, so a search never selects on test."""
        order, counts = self._order_cpu, self._counts.tolist()
        if per_class >= min(counts):
            raise ConfigError(
                f"dataset.validation={per_class} leaves no training images in the smallest class "
                f"({min(counts)} images)"
            )
        ends = torch.cumsum(self._counts, 0).tolist()
        held = torch.cat([order[end - per_class : end] for end in ends])
        keep = torch.ones(len(order), dtype=torch.bool)
        keep[held] = False
        keep = keep.to(self.device)
        held = held.to(self.device)
        return RealData(
            self.info,
            self.train_images[keep],
            self.train_labels[keep],
            self.test_images,
            self.test_labels,
            self.zca,
            (self.train_images[held], self.train_labels[held]),
        )

    def validation_view(self) -> RealData:
        """The same training split with the validation split in the place of the test split
        (what `evaluate_set` tests on)."""
        if self.validation is None:
            raise ValueError(f"{self.info.name}: no validation split (dataset.validation=0)")
        return RealData(self.info, self.train_images, self.train_labels, *self.validation, self.zca)

    def __repr__(self) -> str:
        return (
            f"RealData({self.info.name}: train={tuple(self.train_images.shape)}, "
            f"test={tuple(self.test_images.shape)}, classes={self.info.num_classes}, "
            f"device={self.device})"
        )


def _check_split(split: str, info: DatasetInfo, images: Tensor, labels: Tensor) -> None:
    """Fail early on tensors that do not match the dataset's declared shape."""
    expected = (info.channels, *info.image_size)
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise InputError(
            f"{info.name} {split} images: expected (N, {expected}), got {tuple(images.shape)}"
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise InputError(
            f"{info.name} {split} labels: expected ({images.shape[0]},), got {tuple(labels.shape)}"
        )
    if labels.dtype != torch.int64:
        raise InputError(f"{info.name} {split} labels must be int64, got {labels.dtype}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= info.num_classes):
        raise InputError(f"{info.name} {split} labels must lie in [0, {info.num_classes})")
