"""The 10-class ImageNet subsets of MTT and FYI, built from an ImageNet-1k tree.

MTT (and FYI, which reuses its loader) pick fixed ImageNet-1k class indices per subset
(GeorgeCazenavette/mtt-distillation utils.py, `Config`: imagenette, imagewoof, imagefruit,
imageyellow, imagemeow, imagesquawk), index = position in the sorted list of the 1000 synset
folders (torchvision's ImageNet/ImageFolder order), and load them at 128x128 (resize the shorter
side, centre crop: what `image_folder.py` does when reading). Another download called
"imagenette" (fast.ai's, for instance) holds other images and gives other numbers; this builds
the published ones. Class c of a subset is written as folder `<c:02d>_<wnid>`, so the sorted
folder order is MTT's label order.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from distillkit.errors import ConfigError

#: ImageNet-1k class indices per subset, in MTT's label order (mtt-distillation utils.py).
SUBSET_CLASSES: dict[str, tuple[int, ...]] = {
    "imagenette": (0, 217, 482, 491, 497, 566, 569, 571, 574, 701),
    "imagewoof": (193, 182, 258, 162, 155, 167, 159, 273, 207, 229),
    "imagemeow": (281, 282, 283, 284, 285, 291, 292, 290, 289, 287),
    "imagesquawk": (84, 130, 88, 144, 145, 22, 96, 9, 100, 89),
    "imagefruit": (953, 954, 949, 950, 951, 957, 952, 945, 943, 948),
    "imageyellow": (309, 986, 954, 951, 987, 779, 599, 291, 72, 11),
}
SPLITS = ("train", "val")
MODES = ("copy", "symlink", "hardlink")
IMAGENET_CLASSES = 1000


def imagenet_synsets(root: Path) -> list[str]:
    """The 1000 synset folders of `root/train`, sorted (ImageNet-1k's class index order)."""
    train = root / "train"
    if not train.is_dir():
        raise ConfigError(f"{root}: no train/ folder (expected an ImageNet-1k tree: train/<wnid>/)")
    synsets = sorted(p.name for p in train.iterdir() if p.is_dir())
    if len(synsets) != IMAGENET_CLASSES:
        raise ConfigError(
            f"{train}: {len(synsets)} class folders, ImageNet-1k has {IMAGENET_CLASSES}; the "
            "subsets are defined by index into the sorted 1000 synsets, so a partial tree would "
            "pick the wrong classes"
        )
    return synsets


def subset_folders(name: str, synsets: list[str]) -> list[tuple[str, str]]:
    """(wnid, output folder name) of each class of subset `name`, in MTT's label order."""
    if name not in SUBSET_CLASSES:
        raise ConfigError(f"unknown subset {name!r}; known: {', '.join(SUBSET_CLASSES)}")
    return [(synsets[i], f"{c:02d}_{synsets[i]}") for c, i in enumerate(SUBSET_CLASSES[name])]


def build_subset(imagenet: Path, out_root: Path, name: str, mode: str = "copy") -> dict[str, int]:
    """Write `out_root/name/{train,val}/<c>_<wnid>/` from `imagenet`; returns images per split.

    Resumable: files already there are kept. `mode` copy, symlink or hardlink the images (the
    loader resizes to 128x128 when reading, as MTT does)."""
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    synsets = imagenet_synsets(imagenet)
    for split in SPLITS:
        missing = [
            w for w, _ in subset_folders(name, synsets) if not (imagenet / split / w).is_dir()
        ]
        if missing:
            raise ConfigError(
                f"{imagenet / split}: no folder for {', '.join(missing)} (the validation images "
                "must be sorted into val/<wnid>/ folders, as torchvision's ImageNet prepares them)"
            )
    counts = {}
    for split in SPLITS:
        total = 0
        for wnid, folder in subset_folders(name, synsets):
            source, target = imagenet / split / wnid, out_root / name / split / folder
            target.mkdir(parents=True, exist_ok=True)
            for path in sorted(p for p in source.rglob("*") if p.is_file()):
                dest = target / path.relative_to(source).as_posix().replace("/", "_")
                if not dest.exists():
                    _place(path, dest, mode)
                total += 1
        counts[split] = total
    return counts


def _place(source: Path, dest: Path, mode: str) -> None:
    if mode == "symlink":
        dest.symlink_to(source.absolute())
    elif mode == "hardlink":
        os.link(source, dest)
    else:
        shutil.copyfile(source, dest)
