"""What a source-family loader returns before normalisation, and the shared per-class limit.

Loaders keep pixels as uint8 where the source is uint8, so limiting (`train_limit`/`test_limit`)
and the move to the target device happen before the 4x larger float32 copy is made.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from distillkit.data.real import DatasetInfo, RealData
from distillkit.data.zca import ZCAState, fit_zca
from distillkit.errors import ConfigError


def first_n_per_class(labels: Tensor, n: int | None) -> Tensor | None:
    """Indices (in dataset order) keeping the first `n` items of every class; None = keep all."""
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"a per-class limit must be a positive int or None, got {n!r}")
    labels = labels.to("cpu", torch.int64)
    if labels.numel() == 0:
        return torch.zeros(0, dtype=torch.int64)
    order = torch.sort(labels, stable=True).indices
    counts = torch.bincount(labels)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(labels.numel()) - starts[labels[order]]
    return torch.sort(order[rank < n]).values


@dataclass(frozen=True)
class RawSplits:
    """Train/test images as uint8 in [0, 255] or float in [0, 1], NCHW, with int64 labels."""

    info: DatasetInfo
    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor

    def limited(self, train_limit: int | None, test_limit: int | None) -> RawSplits:
        """Keep only the first `train_limit` / `test_limit` images of each class."""
        train_x, train_y = _select(self.train_images, self.train_labels, train_limit)
        test_x, test_y = _select(self.test_images, self.test_labels, test_limit)
        return RawSplits(self.info, train_x, train_y, test_x, test_y)

    def to_real(
        self, device: str | torch.device, zca: bool = False, zca_state: ZCAState | None = None
    ) -> RealData:
        """Move to `device`, convert to float32 and normalise with the info's mean/std.

        With `zca` (or a given `zca_state`) the [0, 1] pixels are ZCA-whitened instead: fitted on
        this training split unless a saved state is given, and no mean/std normalisation.
        """
        if zca or zca_state is not None:
            return self._whitened(device, zca_state)
        return RealData(
            self.info,
            _normalise(self.train_images, self.info, device),
            self.train_labels.to(device, torch.int64),
            _normalise(self.test_images, self.info, device),
            self.test_labels.to(device, torch.int64),
        )

    def _whitened(self, device: str | torch.device, state: ZCAState | None) -> RealData:
        train = _pixels(self.train_images, device)
        state = fit_zca(train) if state is None else state
        state = state.to(train.device)
        channels = self.info.channels
        info = replace(self.info, mean=(0.0,) * channels, std=(1.0,) * channels, zca=True)
        return RealData(
            info,
            state.apply(train).contiguous(),
            self.train_labels.to(device, torch.int64),
            state.apply(_pixels(self.test_images, device)).contiguous(),
            self.test_labels.to(device, torch.int64),
            zca=state,
        )


def _select(images: Tensor, labels: Tensor, n: int | None) -> tuple[Tensor, Tensor]:
    keep = first_n_per_class(labels, n)
    if keep is None:
        return images, labels
    return images[keep], labels[keep]


def _pixels(images: Tensor, device: str | torch.device) -> Tensor:
    """float32 pixels in [0, 1] on `device` (always a fresh tensor, safe to modify in place)."""
    x = images.to(device)
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    return x.to(torch.float32, copy=True)


def _normalise(images: Tensor, info: DatasetInfo, device: str | torch.device) -> Tensor:
    x = _pixels(images, device)
    mean = torch.tensor(info.mean, dtype=torch.float32, device=x.device).view(-1, 1, 1)
    std = torch.tensor(info.std, dtype=torch.float32, device=x.device).view(-1, 1, 1)
    return x.sub_(mean).div_(std).contiguous()
