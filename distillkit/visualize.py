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


def flip_figure(
    images: Tensor,
    ipc: int,
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    class_names: Sequence[str],
    max_per_class: int = 4,
    title: str = "",
    max_classes: int = 20,
) -> Image.Image:
    """Per class (the first `max_classes`): up to `max_per_class` images beside their flips, then
    the class's mean |left half - mirrored right half| map (where images are not symmetric)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = min(ipc, max_per_class)
    pixels = denormalise(images.detach().float().cpu(), mean, std)
    width = pixels.shape[-1]
    cols = 2 * shown + 1
    num_classes = min(num_classes, max_classes)
    fig, axes = plt.subplots(
        num_classes, cols, figsize=(1.1 * cols, 1.15 * num_classes), dpi=100, squeeze=False
    )
    for c in range(num_classes):
        rows = pixels[c * ipc : (c + 1) * ipc]
        for i in range(shown):
            for j, picture in enumerate((rows[i], rows[i].flip(-1))):
                ax = axes[c, 2 * i + j]
                ax.imshow(_as_hwc(picture), cmap="gray" if picture.shape[0] == 1 else None)
                ax.set_title("flip" if j else (class_names[c] if i == 0 else ""), fontsize=6)
        left = rows[..., : width // 2]
        right_mirrored = rows.flip(-1)[..., : width // 2]
        difference = (left - right_mirrored).abs().mean((0, 1))
        axes[c, -1].imshow(difference.numpy(), cmap="magma", vmin=0)
        axes[c, -1].set_title(f"|L-R| {float(difference.mean()):.3f}", fontsize=6)
        for ax in axes[c]:
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return figure_to_image(fig)


def figure_to_image(fig) -> Image.Image:
    """Render a matplotlib figure to a PIL image and close it."""
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def _as_hwc(picture: Tensor):
    if picture.shape[0] == 1:
        return picture[0].numpy()
    return picture.permute(1, 2, 0).numpy()


def save_line_plot(fig, ax, path, title: str) -> None:
    """The common tail of the line plots (continual, unequalness curves): title, grid, legend,
    written to `path` and closed."""
    import matplotlib.pyplot as plt

    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
