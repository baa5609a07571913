"""The learnable synthetic set, and the one path every synthetic batch takes to a network."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from distillkit.errors import ConfigError, InputError
from distillkit.io import load_torch, save_torch

BatchTransform = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]

FORMAT = "distillkit.synthetic_set/1"


class SyntheticSet:
    """IPC learnable images per class, stored class-contiguously (class 0's rows first).

    `batch()` is the single door to networks during distillation: stored images are decoded
    (IDM's mosaics) and then every registered add-on transform (such as FYI's flip-and-concatenate)
    is applied there, so add-ons hold for every method at once.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        ipc: int,
        num_classes: int,
        meta: dict[str, Any] | None = None,
        factor: int = 1,
    ) -> None:
        if images.shape[0] != ipc * num_classes or labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"expected {ipc} x {num_classes} images and labels, got {tuple(images.shape)} "
                f"and {tuple(labels.shape)}"
            )
        self.images = images.detach().clone().requires_grad_(True)
        self.labels = labels.detach().clone()
        self.ipc = int(ipc)
        self.num_classes = int(num_classes)
        self.meta: dict[str, Any] = dict(meta or {})
        #: IDM's partition factor: each stored image is a factor x factor mosaic of smaller images.
        self.factor = int(factor)
        self.transforms: list[BatchTransform] = []
        #: Rows reaching a network per stored row sampled, over the transforms (FYI: 2).
        self.batch_multiplier = 1

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def initialise(
        cls, data: Any, ipc: int, init: str, generator: torch.Generator, factor: int = 1
    ) -> SyntheticSet:
        """Random real images of each class (`real`) or standard normal noise (`noise`).

        With factor > 1, a real init fills each stored image with factor**2 different real images
        of its class, each downscaled by 1/factor (IDM's mosaic init).
        """
        k = data.info.num_classes
        if init == "real":
            images, labels = data.sample_per_class(ipc * factor**2, generator)
            if factor > 1:
                images, labels = encode_mosaic(images, labels, factor)
        elif init == "noise":
            c, (h, w) = data.info.channels, data.info.image_size
            images = torch.randn((k * ipc, c, h, w), generator=generator)
            labels = torch.arange(k).repeat_interleave(ipc)
        else:
            raise ConfigError(f"synthetic.init must be 'real' or 'noise', got {init!r}")
        device = data.train_images.device
        return cls(
            images.to(device),
            labels.to(device),
            ipc,
            k,
            meta=dataset_meta(data.info),
            factor=factor,
        )

    def use_addons(self, addons: Sequence[Any]) -> None:
        """Install the add-ons' batch transforms (in order) on the one door to networks."""
        chosen = [a for a in addons if a.has_transform]
        self.transforms = [a.transform for a in chosen]
        self.batch_multiplier = math.prod(a.batch_multiplier for a in chosen)

    # -- access ---------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.images.device

    @property
    def images_per_class(self) -> int:
        """Training images per class after decoding (IPC x factor**2)."""
        return self.ipc * self.factor**2

    def class_rows(self, c: int) -> slice:
        """Stored rows of class c."""
        return slice(c * self.ipc, (c + 1) * self.ipc)

    def decode(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Stored rows -> training images (identity unless factor > 1)."""
        if self.factor == 1:
            return x, y
        return decode_mosaic(x, y, self.factor)

    def batch(
        self, rows: Tensor | slice | None = None, decoded: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Synthetic images and labels (all, or stored `rows`), decoded, after every transform.

        Decoding keeps each stored image's decoded images together, so class-contiguous rows
        give class-contiguous batches (before transforms, which may append rows). `decoded`
        keeps only those decoded images (IDC subsamples decoded tiles) before the transforms.
        """
        if rows is None:
            x, y = self.images, self.labels
        else:
            x, y = self.images[rows], self.labels[rows]
        x, y = self.decode(x, y)
        if decoded is not None:
            x, y = x[decoded], y[decoded]
        for transform in self.transforms:
            x, y = transform(x, y)
        return x, y

    def training_set(self) -> tuple[Tensor, Tensor]:
        """Detached, decoded images and labels an evaluation model trains on.

        Add-on transforms (FYI) are not applied: evaluation trains on the stored images only.
        """
        with torch.no_grad():
            return self.decode(self.images.detach(), self.labels)

    def parameters(self) -> list[Tensor]:
        return [self.images]

    # -- persistence ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "images": self.images.detach().cpu(),
            "labels": self.labels.cpu(),
            "ipc": self.ipc,
            "num_classes": self.num_classes,
            "factor": self.factor,
            "meta": self.meta,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.images.copy_(state["images"].to(self.device))
        self.labels = state["labels"].to(self.device)

    def save(self, path: str | Path, **extra: Any) -> Path:
        return save_torch({**self.state_dict(), **extra}, path)

    @classmethod
    def load(
        cls, path: str | Path, device: str | torch.device = "cpu"
    ) -> tuple[SyntheticSet, dict]:
        """Load a saved set; returns the set and the whole saved dictionary (config, lr, ...)."""
        path = Path(path)
        state = load_torch(path, "synthetic-set file", weights_only=False)
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise InputError(f"{path}: not a distillkit synthetic set (missing format {FORMAT!r})")
        missing = [k for k in ("images", "labels", "ipc", "num_classes") if k not in state]
        if missing:
            raise InputError(f"{path}: incomplete synthetic set, missing {', '.join(missing)}")
        if not isinstance(state["images"], Tensor) or not isinstance(state["labels"], Tensor):
            raise InputError(f"{path}: the synthetic set's images or labels are not tensors")
        try:
            synthetic = cls(
                state["images"].to(device),
                state["labels"].to(device),
                state["ipc"],
                state["num_classes"],
                meta=state.get("meta"),
                factor=state.get("factor", 1),
            )
        except (TypeError, ValueError) as exc:
            raise InputError(f"{path}: inconsistent synthetic set ({exc})") from None
        return synthetic, state


def dataset_meta(info: Any) -> dict[str, Any]:
    """What a saved set needs to be shown and evaluated without the run's config."""
    meta = asdict(info) if hasattr(info, "__dataclass_fields__") else dict(info)
    return {
        k: list(v) if isinstance(v, Sequence) and not isinstance(v, str) else v
        for k, v in meta.items()
    }


def decode_mosaic(x: Tensor, y: Tensor, factor: int) -> tuple[Tensor, Tensor]:
    """Split each image into factor x factor tiles (row-major: top-left, top-right, ...) and
    upsample each tile back to the full size (bilinear); labels repeat per tile."""
    n, c, h, w = x.shape
    if h % factor or w % factor:
        raise ConfigError(f"image size {h}x{w} is not divisible by factor {factor}")
    th, tw = h // factor, w // factor
    tiles = x.reshape(n, c, factor, th, factor, tw).permute(0, 2, 4, 1, 3, 5)
    tiles = tiles.reshape(n * factor * factor, c, th, tw)
    upsampled = F.interpolate(tiles, size=(h, w), mode="bilinear", align_corners=False)
    return upsampled, y.repeat_interleave(factor * factor)


def encode_mosaic(x: Tensor, y: Tensor, factor: int) -> tuple[Tensor, Tensor]:
    """Tile consecutive groups of factor**2 images, each downscaled by 1/factor, into mosaics."""
    n, c, h, w = x.shape
    group = factor * factor
    if n % group:
        raise ValueError(f"{n} images cannot be grouped in mosaics of {group}")
    small = F.interpolate(x, size=(h // factor, w // factor), mode="bilinear", antialias=True)
    small = small.reshape(n // group, factor, factor, c, h // factor, w // factor)
    mosaics = small.permute(0, 3, 1, 4, 2, 5).reshape(n // group, c, h, w)
    return mosaics, y[::group]


def mosaic_factor(method_cfg: Mapping[str, Any], synthetic_cfg: Mapping[str, Any]) -> int:
    """IDM-style partition factor: the method's own `factor` when it sets one, else
    `synthetic.factor`."""
    return int(method_cfg.get("factor") or synthetic_cfg.get("factor", 1))


def check_initialisable(data: Any, ipc: int, init: str, factor: int) -> None:
    """The checks that need the loaded dataset: enough real images per class to initialise
    from, and a factor that divides the image size."""
    if factor < 1:
        raise ConfigError(f"synthetic.factor must be >= 1, got {factor}")
    smallest = int(data.class_counts().min())
    needed = ipc * factor**2
    if init == "real" and needed > smallest:
        raise ConfigError(
            f"ipc={ipc} needs {needed} real images per class to initialise from, more "
            f"than the {smallest} of the smallest class of {data.info.name}"
        )
    h, w = data.info.image_size
    if h % factor or w % factor:
        raise ConfigError(
            f"synthetic.factor={factor} does not divide the {h}x{w} images of {data.info.name}"
        )
