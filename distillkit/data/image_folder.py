"""Tiny-ImageNet and the 128x128 ImageNet subsets from class-per-folder image trees.

These sets have no stable download URL, so they are read from folders the user prepares:

    <root>/<name>/train/<class>/**/*.{JPEG,jpg,jpeg,png}
    <root>/<name>/val/<class>/**/*.{JPEG,jpg,jpeg,png}

`<name>` is one of imagenette, imagewoof, imagemeow, imagesquawk, imagefruit, imageyellow
(10 classes each, 128x128), or `tiny-imagenet-200` for `tinyimagenet` (200 classes, 64x64).
Files are found recursively under each class folder, so Tiny-ImageNet's own
`train/<wnid>/images/*.JPEG` works as is. Its validation set may be re-foldered
(`val/<wnid>/[images/]*.JPEG`) or left as shipped (`val/images/*.JPEG` plus
`val/val_annotations.txt`). Classes are the sorted train sub-folder names (wnids); the val
folders must use the same names. Images are decoded to RGB with PIL, resized so the shorter
side equals the target size (bilinear, antialiased), centre-cropped, and stacked into one uint8
tensor; per-class limits are applied to the file lists before decoding. Normalisation uses the
ImageNet mean/std (docs/methods.md, section 1).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from distillkit.data.errors import dataset_not_found
from distillkit.data.raw import RawSplits, first_n_per_class
from distillkit.data.real import DatasetInfo
from distillkit.errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EXTENSIONS = frozenset({".jpeg", ".jpg", ".png"})
IMAGENET_SUBSETS = (
    "imagenette", "imagewoof", "imagemeow", "imagesquawk", "imagefruit", "imageyellow",
)  # fmt: skip


@dataclass(frozen=True)
class FolderSpec:
    """Where an ImageFolder dataset lives under the root and what it must contain."""

    name: str
    folder: str
    size: int
    num_classes: int


SPECS: dict[str, FolderSpec] = {
    "tinyimagenet": FolderSpec("tinyimagenet", "tiny-imagenet-200", 64, 200),
    **{name: FolderSpec(name, name, 128, 10) for name in IMAGENET_SUBSETS},
}


def load_image_folder(
    name: str,
    root: Path,
    download: bool = False,
    *,
    train_limit: int | None = None,
    test_limit: int | None = None,
) -> RawSplits:
    """Load ImageFolder dataset `name` from `root` (`download` cannot apply and is ignored)."""
    spec = SPECS[name]
    base = root / spec.folder
    train_dir, val_dir = base / "train", base / "val"
    if not train_dir.is_dir() or not val_dir.is_dir():
        raise dataset_not_found(
            name,
            [train_dir, val_dir],
            downloadable=False,
            layout=(
                f"<root>/{spec.folder}/train/<class>/**/*.JPEG|jpg|png and "
                f"<root>/{spec.folder}/val/<class>/**/*.JPEG|jpg|png, "
                f"{spec.num_classes} class folders"
            ),
        )
    classes = sorted(d.name for d in train_dir.iterdir() if d.is_dir())
    if len(classes) != spec.num_classes:
        raise InputError(
            f"{name}: {train_dir} holds {len(classes)} class folders, expected {spec.num_classes}"
        )
    train_files, train_y = _list_class_folders(train_dir, classes, require_all=True)
    val_files, val_y = _list_val(val_dir, classes)
    train_files, train_y = _limit(train_files, train_y, train_limit)
    val_files, val_y = _limit(val_files, val_y, test_limit)
    info = DatasetInfo(
        name=name,
        channels=3,
        image_size=(spec.size, spec.size),
        num_classes=spec.num_classes,
        class_names=tuple(classes),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )
    return RawSplits(
        info, decode_all(train_files, spec.size), train_y, decode_all(val_files, spec.size), val_y
    )


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())


def _list_class_folders(
    split_dir: Path, classes: list[str], *, require_all: bool
) -> tuple[list[Path], Tensor]:
    """All image files under `split_dir/<class>/` with their class index."""
    known = set(classes)
    unknown = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and d.name not in known)
    if unknown:
        raise InputError(f"{split_dir} has class folders not in train/: {unknown[:5]}")
    files: list[Path] = []
    labels: list[int] = []
    for index, cls in enumerate(classes):
        found = _images_under(split_dir / cls) if (split_dir / cls).is_dir() else []
        if require_all and not found:
            raise InputError(f"{split_dir / cls} holds no .JPEG/.jpg/.png images")
        files += found
        labels += [index] * len(found)
    return files, torch.tensor(labels, dtype=torch.int64)


def _list_val(val_dir: Path, classes: list[str]) -> tuple[list[Path], Tensor]:
    """Validation files: class folders, or Tiny-ImageNet's shipped annotations file."""
    annotations = val_dir / "val_annotations.txt"
    if not annotations.is_file() or not (val_dir / "images").is_dir():
        return _list_class_folders(val_dir, classes, require_all=False)
    index = {cls: i for i, cls in enumerate(classes)}
    files: list[Path] = []
    labels: list[int] = []
    for line in annotations.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) < 2:
            continue
        if fields[1] not in index:
            raise InputError(f"{annotations}: class {fields[1]!r} is not a train/ class folder")
        files.append(val_dir / "images" / fields[0])
        labels.append(index[fields[1]])
    return files, torch.tensor(labels, dtype=torch.int64)


def _limit(files: list[Path], labels: Tensor, n: int | None) -> tuple[list[Path], Tensor]:
    keep = first_n_per_class(labels, n)
    if keep is None:
        return files, labels
    return [files[i] for i in keep.tolist()], labels[keep]


def decode_all(files: list[Path], size: int) -> Tensor:
    """Decode, resize and centre-crop every file into one uint8 (N, 3, size, size) tensor."""
    out = torch.empty(len(files), 3, size, size, dtype=torch.uint8)
    workers = min(8, os.cpu_count() or 1)

    def work(i: int) -> None:
        out[i] = resize_center_crop(read_rgb(files[i]), size)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(work, range(len(files))))
    return out


def read_rgb(path: Path) -> Tensor:
    """A uint8 (3, H, W) RGB tensor (PIL: torchvision.io decoding is deprecated since 0.29)."""
    with Image.open(path) as img:
        array = np.asarray(img.convert("RGB"))
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def resize_center_crop(img: Tensor, size: int) -> Tensor:
    """Resize the shorter side to `size` (bilinear, antialiased), then centre-crop to a square."""
    if tuple(img.shape[-2:]) != (size, size):
        img = TF.resize(img, [size], antialias=True)
        img = TF.center_crop(img, [size, size])
    return img
