"""Pictures of synthetic sets: de-normalised grids, one row per class."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from torch import Tensor
from torchvision.utils import make_grid


def denormalise(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Back to [0, 1] pixel space (clamped for display only)."""
    mean_t = torch.tensor(mean, dtype=images.dtype, device=images.device)[None, :, None, None]
    std_t = torch.tensor(std, dtype=images.dtype, device=images.device)[None, :, None, None]
    return (images * std_t + mean_t).clamp(0, 1)


def class_grid(
    images: Tensor,
    ipc: int,
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    max_per_class: int = 10,
    min_cell: int = 32,
) -> Image.Image:
    """A PIL image with one row per class and up to `max_per_class` images of it.

    `images` is class-contiguous (IPC rows per class). Small images are enlarged (nearest) so a
    cell is at least `min_cell` pixels wide, which keeps 8x8 or 16x16 sets readable.
    """
    shown = min(ipc, max_per_class)
    rows = torch.arange(num_classes)[:, None] * ipc + torch.arange(shown)[None, :]
    picked = denormalise(images.detach().float().cpu()[rows.flatten()], mean, std)
    scale = max(1, -(-min_cell // picked.shape[-1]))
    if scale > 1:
        picked = picked.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    grid = make_grid(picked, nrow=shown, padding=2, pad_value=1.0)
    array = (grid.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    return Image.fromarray(array)
