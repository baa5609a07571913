"""Class centralisation made visible: a 2-D t-SNE of real and synthetic features per class.

The IID paper shows that DM's synthetic images lie spread around their class in the feature
space of a trained network, and that class centralisation pulls them toward the class centre.
This embeds, with one network of the pre-trained pool, a sample of real images and the stored
synthetic images of one or more saved sets (one panel each, the same real sample everywhere),
and reports the numeric counterpart: the synthetic images' mean squared distance to their class
mean, relative to the real images' (the CC term per image, lower = more centralised).

    distillkit-tsne outputs/.../dm/synthetic_set.pt outputs/.../dm_iid/synthetic_set.pt \
        --labels DM DM+IID --pool pools/digits/ResNet18 --output tsne.png
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from distillkit.classwise import class_means


@torch.no_grad()
def features(net: nn.Module, images: Tensor, batch_size: int = 512) -> Tensor:
    """`net.embed` of `images` in batches, on the CPU."""
    net.eval()
    return torch.cat([net.embed(x).cpu() for x in images.split(batch_size)])


def spread(feats: Tensor, labels: Tensor, num_classes: int) -> float:
    """Mean over images of the squared distance to their class mean (the CC term per image)."""
    means = class_means(feats, labels, num_classes)
    return float((feats - means[labels]).pow(2).sum(1).mean())


def embed_2d(feats: Tensor, seed: int, perplexity: float = 30.0) -> np.ndarray:
    """scikit-learn's t-SNE of the rows of `feats` (perplexity capped for small sets)."""
    from sklearn.manifold import TSNE

    n = feats.shape[0]
    perplexity = max(1.0, min(perplexity, (n - 1) / 3))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return tsne.fit_transform(feats.double().numpy())


def plot_panels(panels: list[dict[str, Any]], class_names: Sequence[str], path: Path) -> None:
    """One scatter per panel: real features as small dots, synthetic as large outlined marks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(class_names)
    colours = plt.get_cmap("tab10" if k <= 10 else "tab20")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.6), dpi=120)
    for ax, panel in zip(np.atleast_1d(axes), panels, strict=True):
        for c in range(k):
            colour = colours(c % colours.N)
            real = panel["real_xy"][panel["real_labels"] == c]
            syn = panel["syn_xy"][panel["syn_labels"] == c]
            ax.scatter(real[:, 0], real[:, 1], s=8, color=colour, alpha=0.4, linewidths=0)
            ax.scatter(syn[:, 0], syn[:, 1], s=45, color=colour, marker="*",
                       edgecolors="black", linewidths=0.6, label=str(class_names[c]))  # fmt: skip
        ax.set_title(f"{panel['title']}\nsynthetic spread / real = {panel['ratio']:.2f}")
        ax.set_xticks([])
        ax.set_yticks([])
    handles, labels = np.atleast_1d(axes)[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(k, 10), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path)
    plt.close(fig)


def tsne_panels(
    sets: Sequence[tuple[str, Tensor, Tensor]],
    real: Tensor,
    real_labels: Tensor,
    net: nn.Module,
    num_classes: int,
    seed: int,
) -> list[dict[str, Any]]:
    """Per (title, images, labels): a joint t-SNE of the real sample and that set's images."""
    real_feats = features(net, real)
    real_labels = real_labels.cpu()
    real_spread = spread(real_feats, real_labels, num_classes)
    panels = []
    for title, images, labels in sets:
        syn_feats = features(net, images)
        labels = labels.cpu()
        xy = embed_2d(torch.cat([real_feats, syn_feats]), seed)
        n = real_feats.shape[0]
        syn_spread = spread(syn_feats, labels, num_classes)
        panels.append(
            {
                "title": title,
                "real_xy": xy[:n],
                "real_labels": real_labels.numpy(),
                "syn_xy": xy[n:],
                "syn_labels": labels.numpy(),
                "real_spread": real_spread,
                "syn_spread": syn_spread,
                "ratio": syn_spread / real_spread if real_spread > 0 else float("nan"),
            }
        )
    return panels
