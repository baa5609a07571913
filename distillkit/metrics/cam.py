"""Class-activation-map analysis of FYI (paper Fig. 2): where a classifier looks, per class.

For each image, the class-activation map of its true class is upsampled to the image size and its
top-10% pixels form the image's discriminative region. Counting, per pixel, how often it falls
in that region over a class's images gives a frequency map; bilateral equivalence shows up as a
map that is (nearly) its own mirror image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillkit.errors import ConfigError


def class_activation_maps(net: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
    """(N, H, W) maps of each image's true-class logit, spread over the last feature map.

    For a linear classifier on the flattened map (ConvNet), the logit is exactly the sum over
    positions of sum_channels W[y, ch, h, w] * A[ch, h, w]; for global-average-pooled networks
    (ResNet) it is the classic CAM, sum_channels W[y, ch] * A[ch, h, w].
    """
    maps = net.feature_map(images)
    n, ch, h, w = maps.shape
    weight = net.classifier.weight[labels]
    if weight.shape[1] == ch * h * w:
        contribution = (weight.view(n, ch, h, w) * maps).sum(1)
    elif weight.shape[1] == ch:
        contribution = torch.einsum("nc,nchw->nhw", weight, maps)
    else:
        raise ConfigError(
            f"cannot form CAMs: classifier takes {weight.shape[1]} features, map is {ch}x{h}x{w}"
        )
    size = images.shape[-2:]
    return F.interpolate(contribution[:, None], size=size, mode="bilinear", align_corners=False)[
        :, 0
    ]


def top_region(maps: Tensor, fraction: float = 0.1) -> Tensor:
    """Boolean (N, H, W): each map's top `fraction` of pixels."""
    flat = maps.flatten(1)
    k = max(1, int(round(fraction * flat.shape[1])))
    threshold = flat.topk(k, dim=1).values[:, -1:]
    return (flat >= threshold).view_as(maps)


@torch.no_grad()
def region_frequency(
    net: nn.Module,
    images: Tensor,
    labels: Tensor,
    num_classes: int,
    fraction: float = 0.1,
    batch_size: int = 512,
) -> Tensor:
    """(K, H, W): per class, the share of its images whose top region holds each pixel."""
    net.eval()
    counts = torch.zeros(num_classes, *images.shape[-2:], device=images.device)
    for start in range(0, len(images), batch_size):
        x, y = images[start : start + batch_size], labels[start : start + batch_size]
        region = top_region(class_activation_maps(net, x, y), fraction).float()
        counts.index_add_(0, y, region)
    totals = torch.bincount(labels, minlength=num_classes).clamp_min(1)
    return counts / totals[:, None, None]


def mirror_symmetry(frequency: Tensor) -> Tensor:
    """(K,) Pearson correlation of each class's map with its mirror image (1 = symmetric)."""
    a = frequency.flatten(1)
    b = frequency.flip(-1).flatten(1)
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)


def plot_frequency(
    frequency: Tensor, class_names: Sequence[str], symmetry: Tensor, path, title: str
) -> None:
    """Per class: the frequency map, its mirror, and the left-minus-mirrored-right difference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = frequency.shape[0]
    fig, axes = plt.subplots(k, 3, figsize=(6, 1.9 * k), dpi=100, squeeze=False)
    freq = frequency.cpu()
    for c in range(k):
        panels = [
            (freq[c], f"{class_names[c]}  (mirror r = {float(symmetry[c]):.2f})", "inferno"),
            (freq[c].flip(-1), "mirrored", "inferno"),
            (freq[c] - freq[c].flip(-1), "map − mirror", "coolwarm"),
        ]
        for ax, (panel, label, cmap) in zip(axes[c], panels, strict=True):
            limit = float(panel.abs().max()) or 1.0
            vmin = -limit if cmap == "coolwarm" else 0.0
            ax.imshow(panel.numpy(), cmap=cmap, vmin=vmin, vmax=limit)
            ax.set_title(label, fontsize=7)
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
