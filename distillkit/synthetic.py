"""The learnable synthetic set, and the one path every synthetic batch takes to a network."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from distillkit.io import save_torch

BatchTransform = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]

FORMAT = "distillkit.synthetic_set/1"


class SyntheticSet:
    """IPC learnable images per class, stored class-contiguously (class 0's rows first).

    `batch()` is the single door to networks during distillation: regularizer transforms (such as
    FYI's flip-and-concatenate) are applied there, so they hold for every method at once.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        ipc: int,
        num_classes: int,
        meta: dict[str, Any] | None = None,
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
        self.transforms: list[BatchTransform] = []

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def initialise(cls, data: Any, ipc: int, init: str, generator: torch.Generator) -> SyntheticSet:
        """Random real images of each class (`real`) or standard normal noise (`noise`)."""
        k = data.info.num_classes
        if init == "real":
            images, labels = data.sample_per_class(ipc, generator)
        elif init == "noise":
            c, (h, w) = data.info.channels, data.info.image_size
            images = torch.randn((k * ipc, c, h, w), generator=generator)
            labels = torch.arange(k).repeat_interleave(ipc)
        else:
            raise ValueError(f"synthetic.init must be 'real' or 'noise', got {init!r}")
        device = data.train_images.device
        return cls(images.to(device), labels.to(device), ipc, k, meta=dataset_meta(data.info))

    # -- access ---------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.images.device

    def class_rows(self, c: int) -> slice:
        return slice(c * self.ipc, (c + 1) * self.ipc)

    def batch(self, rows: Tensor | slice | None = None) -> tuple[Tensor, Tensor]:
        """Synthetic images and labels (all, or `rows`) after every registered transform."""
        x, y = (
            (self.images, self.labels) if rows is None else (self.images[rows], self.labels[rows])
        )
        for transform in self.transforms:
            x, y = transform(x, y)
        return x, y

    def training_set(self) -> tuple[Tensor, Tensor]:
        """Detached images and labels an evaluation model trains on (stored images only)."""
        return self.images.detach(), self.labels

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
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
            raise ValueError(f"{path}: not a readable synthetic-set file ({exc})") from None
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError(f"{path}: not a distillkit synthetic set (missing format {FORMAT!r})")
        synthetic = cls(
            state["images"].to(device),
            state["labels"].to(device),
            state["ipc"],
            state["num_classes"],
            meta=state.get("meta"),
        )
        return synthetic, state


def dataset_meta(info: Any) -> dict[str, Any]:
    """What a saved set needs to be shown and evaluated without the run's config."""
    meta = asdict(info) if hasattr(info, "__dataclass_fields__") else dict(info)
    return {
        k: list(v) if isinstance(v, Sequence) and not isinstance(v, str) else v
        for k, v in meta.items()
    }
