"""CIFAR-10 in the official *binary* layout, read directly with numpy.

Layout: `<root>/cifar-10-batches-bin/` with `data_batch_1.bin` ... `data_batch_5.bin`,
`test_batch.bin` and `batches.meta.txt` (one class name a line). Each record is 1 label byte
followed by 3,072 pixel bytes: the 32x32 red plane, then green, then blue, each row-major.
This reader exists because torchvision's CIFAR10 only reads the pickle layout and checks its md5,
which a pickle rebuilt from other sources cannot match.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from distillkit.data.errors import dataset_not_found
from distillkit.data.raw import RawSplits
from distillkit.data.real import DatasetInfo
from distillkit.errors import InputError

FOLDER = "cifar-10-batches-bin"
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
META_FILE = "batches.meta.txt"
RECORD_BYTES = 1 + 3 * 32 * 32
DEFAULT_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


def read_batch(path: Path) -> tuple[Tensor, Tensor]:
    """One `.bin` batch file as uint8 images (N, 3, 32, 32) and int64 labels (N,)."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD_BYTES:
        raise InputError(
            f"{path} is not a CIFAR-10 binary batch: {raw.size} bytes is not a positive multiple "
            f"of {RECORD_BYTES} (1 label byte + 3,072 pixel bytes per record)"
        )
    records = raw.reshape(-1, RECORD_BYTES)
    labels = torch.from_numpy(records[:, 0].astype(np.int64))
    images = torch.from_numpy(np.ascontiguousarray(records[:, 1:]).reshape(-1, 3, 32, 32))
    return images, labels


def read_class_names(folder: Path) -> tuple[str, ...]:
    """Class names from `batches.meta.txt`, or the standard ten when the file is absent."""
    meta = folder / META_FILE
    if not meta.is_file():
        return DEFAULT_CLASSES
    names = tuple(line.strip() for line in meta.read_text().splitlines() if line.strip())
    if len(names) != 10:
        raise InputError(f"{meta} lists {len(names)} class names; CIFAR-10 needs 10")
    return names


def load_cifar10_binary(folder: Path, mean: tuple[float, ...], std: tuple[float, ...]) -> RawSplits:
    """Read the whole binary tree under `folder` (limits are applied by the caller)."""
    missing = [name for name in (*TRAIN_FILES, TEST_FILE) if not (folder / name).is_file()]
    if missing:
        raise dataset_not_found(
            "cifar10",
            [folder / name for name in missing],
            layout=f"<root>/{FOLDER}/{{{','.join(TRAIN_FILES)},{TEST_FILE},{META_FILE}}}",
        )
    train = [read_batch(folder / name) for name in TRAIN_FILES]
    test_x, test_y = read_batch(folder / TEST_FILE)
    info = DatasetInfo(
        name="cifar10",
        channels=3,
        image_size=(32, 32),
        num_classes=10,
        class_names=read_class_names(folder),
        mean=mean,
        std=std,
    )
    train_x = torch.cat([x for x, _ in train])
    train_y = torch.cat([y for _, y in train])
    for split, y in (("train", train_y), ("test", test_y)):
        if int(y.max()) >= 10:
            raise InputError(f"{folder}: {split} label {int(y.max())} is out of range 0-9")
    return RawSplits(info, train_x, train_y, test_x, test_y)
