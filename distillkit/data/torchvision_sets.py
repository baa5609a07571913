"""MNIST, Fashion-MNIST, CIFAR-10/100 and SVHN through torchvision's dataset classes.

Folders under the data root follow torchvision's conventions: `MNIST/raw/`, `FashionMNIST/raw/`,
`cifar-10-batches-py/`, `cifar-100-python/`, and SVHN's `train_32x32.mat`/`test_32x32.mat`
directly in the root. Two shortcuts avoid needless work and writes:
- the MNIST family is read straight from its idx files in `<Folder>/raw/` (plain or `.gz`),
  so a read-only copy holding only the official `.gz` files works without extraction;
- CIFAR-10 prefers the official binary layout `cifar-10-batches-bin/` when it exists
  (see `cifar_binary`), since torchvision's md5 check refuses a rebuilt pickle.
Whole `.data`/`.targets` arrays are read at once (no per-item PIL). Normalisation constants are
the ones the papers use (docs/methods.md, section 1).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torchvision import datasets

from distillkit.data.cifar_binary import FOLDER as CIFAR10_BIN_FOLDER
from distillkit.data.cifar_binary import load_cifar10_binary
from distillkit.data.errors import dataset_not_found
from distillkit.data.raw import RawSplits
from distillkit.data.real import DatasetInfo
from distillkit.errors import ConfigError, InputError

DIGIT_NAMES = tuple(str(i) for i in range(10))


@dataclass(frozen=True)
class TorchvisionSpec:
    """How one torchvision dataset maps onto distillkit's DatasetInfo."""

    name: str
    dataset_class: type
    folders: tuple[str, ...]  # relative to root, for error messages
    channels: int
    size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] | None = None  # None: take `.classes` from the instance


SPECS: dict[str, TorchvisionSpec] = {
    spec.name: spec
    for spec in (
        TorchvisionSpec(
            "mnist", datasets.MNIST, ("MNIST/raw",), 1, 28, 10, (0.1307,), (0.3081,), DIGIT_NAMES
        ),
        TorchvisionSpec(
            "fashion_mnist", datasets.FashionMNIST, ("FashionMNIST/raw",), 1, 28, 10,
            (0.2861,), (0.3530,), tuple(datasets.FashionMNIST.classes),
        ),
        TorchvisionSpec(
            "cifar10", datasets.CIFAR10, (CIFAR10_BIN_FOLDER, "cifar-10-batches-py"), 3, 32, 10,
            (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010),
        ),
        TorchvisionSpec(
            "cifar100", datasets.CIFAR100, ("cifar-100-python",), 3, 32, 100,
            (0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762),
        ),
        TorchvisionSpec(
            "svhn", datasets.SVHN, ("train_32x32.mat", "test_32x32.mat"), 3, 32, 10,
            (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), DIGIT_NAMES,
        ),
    )
}  # fmt: skip

#: CIFAR-100's normalisation: its own statistics (the DC/DSA/DM and IDM references), or
#: CIFAR-10's, as MTT's loader does (mtt-distillation utils.py get_dataset, CIFAR100 branch:
#: mean [0.4914, 0.4822, 0.4465], std [0.2023, 0.1994, 0.2010]).
STATS_CHOICES = {"cifar100": ("own", "cifar10")}


def _with_stats(spec: TorchvisionSpec, stats: str | None) -> TorchvisionSpec:
    if stats in (None, "own"):
        return spec
    if stats not in STATS_CHOICES.get(spec.name, ()):
        allowed = ", ".join(STATS_CHOICES.get(spec.name, ("own",)))
        raise ConfigError(f"dataset {spec.name}: stats must be one of {allowed}, got {stats!r}")
    other = SPECS[stats]
    return replace(spec, mean=other.mean, std=other.std)


MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def load_torchvision(
    name: str,
    root: Path,
    download: bool,
    *,
    train_limit: int | None = None,
    test_limit: int | None = None,
    stats: str | None = None,
) -> RawSplits:
    """Load dataset `name` (a key of SPECS) from `root`, downloading only if `download`.

    `stats` (CIFAR-100 only): normalise with another dataset's mean/std (STATS_CHOICES).
    """
    spec = _with_stats(SPECS[name], stats)
    if name == "cifar10" and (root / CIFAR10_BIN_FOLDER).is_dir():
        raw = load_cifar10_binary(root / CIFAR10_BIN_FOLDER, spec.mean, spec.std)
        return raw.limited(train_limit, test_limit)
    if spec.dataset_class in (datasets.MNIST, datasets.FashionMNIST):
        raw = _read_mnist_raw(spec, root)
        if raw is not None:
            return raw.limited(train_limit, test_limit)
    train = _construct(spec, root, download, train=True)
    test = _construct(spec, root, download, train=False)
    train_x, train_y = _arrays(train)
    test_x, test_y = _arrays(test)
    names = spec.class_names or tuple(train.classes)
    raw = RawSplits(_info(spec, names), train_x, train_y, test_x, test_y)
    return raw.limited(train_limit, test_limit)


def _info(spec: TorchvisionSpec, class_names: tuple[str, ...]) -> DatasetInfo:
    return DatasetInfo(
        name=spec.name,
        channels=spec.channels,
        image_size=(spec.size, spec.size),
        num_classes=spec.num_classes,
        class_names=class_names,
        mean=spec.mean,
        std=spec.std,
    )


def _construct(spec: TorchvisionSpec, root: Path, download: bool, *, train: bool) -> object:
    """Instantiate the torchvision class, turning its not-found/download errors into ours."""
    split = {"split": "train" if train else "test"} if spec.name == "svhn" else {"train": train}
    try:
        return spec.dataset_class(str(root), download=download, **split)
    except (RuntimeError, OSError) as exc:
        tried = [root / folder for folder in spec.folders]
        raise dataset_not_found(spec.name, tried, detail=str(exc)) from None


def _arrays(ds: object) -> tuple[Tensor, Tensor]:
    """Whole-dataset uint8 NCHW images and int64 labels from a torchvision instance."""
    data = ds.data  # type: ignore[attr-defined]
    labels = ds.labels if isinstance(ds, datasets.SVHN) else ds.targets  # type: ignore[attr-defined]
    images = torch.as_tensor(np.asarray(data), dtype=torch.uint8)
    if images.ndim == 3:  # MNIST family: (N, H, W)
        images = images.unsqueeze(1)
    elif not isinstance(ds, datasets.SVHN):  # CIFAR: (N, H, W, C)
        images = images.permute(0, 3, 1, 2)
    return images.contiguous(), torch.as_tensor(np.asarray(labels), dtype=torch.int64)


def _read_mnist_raw(spec: TorchvisionSpec, root: Path) -> RawSplits | None:
    """Read the four idx files (plain or .gz) under `<root>/<Folder>/raw`; None if incomplete."""
    folder = root / spec.folders[0]
    arrays: dict[str, tuple[Tensor, Tensor]] = {}
    for split, (image_file, label_file) in MNIST_FILES.items():
        image_path, label_path = _find_idx(folder, image_file), _find_idx(folder, label_file)
        if image_path is None or label_path is None:
            return None
        images = torch.from_numpy(_read_idx(image_path, ndim=3)).unsqueeze(1)
        labels = torch.from_numpy(_read_idx(label_path, ndim=1).astype(np.int64))
        if images.shape[0] != labels.shape[0]:
            raise InputError(f"{image_path} and {label_path} hold different numbers of items")
        arrays[split] = (images, labels)
    names = spec.class_names or tuple(spec.dataset_class.classes)  # type: ignore[attr-defined]
    return RawSplits(_info(spec, names), *arrays["train"], *arrays["test"])


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse an unsigned-byte idx file (the MNIST format) into a writable numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:3] != b"\x00\x00\x08" or data[3] != ndim:
        raise InputError(f"{path} is not a {ndim}-d unsigned-byte idx file")
    dims = [int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4)]
    values = np.frombuffer(bytearray(data), dtype=np.uint8, offset=4 + 4 * ndim)
    if values.size != int(np.prod(dims)):
        raise InputError(f"{path}: header says {dims} but holds {values.size} values")
    return values.reshape(dims)
