"""IID covariance matching (CM): match the inter-feature relations of each class.

DM matches only the mean embedding of a class; CM also matches how the channels of the matching
network's last feature map vary together. Each image gives Z in R^{C x P} (C channels, P = h*w
positions); per class, Sigma = (1/m) sum_k (Z_k - Zbar)(Z_k - Zbar)^T (C x C, biased, Zbar the
class's mean map), and L_CM = sum_c ||Sigma(real_c) - Sigma(syn_c)||_F^2 with the real side
detached and the DSA draw of the DM term. A class with fewer than two synthetic rows has a
degenerate covariance (identically 0, no gradient): it contributes 0, which is why the term
vanishes for DM at IPC 1 (the paper's remark).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from distillkit.addons.base import AddOn, LossContext, SetupContext
from distillkit.errors import ConfigError
from distillkit.settings import Settings

#: How a feature map (C, h, w) becomes the matrix whose rows are correlated: `channels` C x hw
#: (IID's "local cifar"), `channel_rows` C*h x w (its "local tiny", IDM+ours/dc_networks.py
#: embed_channel_avg); `auto` = channel_rows on Tiny-ImageNet, channels elsewhere.
LAYOUTS = ("auto", "channels", "channel_rows")

#: Rows per batched outer product: bounds memory at chunk x C x C floats (real batches are big).
CHUNK = 256


def class_covariances(
    maps: Tensor, labels: Tensor, num_classes: int, layout: str = "channels"
) -> tuple[Tensor, Tensor]:
    """Per-class biased C x C covariances of feature maps (N, C, h, w) -> ((K, C, C), counts (K,))
    (`channel_rows`: C*h x C*h over the w columns).

    All classes at once: per-class mean maps by one scatter, centred maps, batched outer products
    scattered back into their class (chunked, so any row order and class sizes work).
    """
    z = maps.flatten(1, 2) if layout == "channel_rows" else maps.flatten(2)  # (N, D, P)
    n, c, p = z.shape
    chunk = max(1, CHUNK * 128 * 128 // (c * c))  # about CHUNK x 128 x 128 floats at a time
    counts = torch.bincount(labels, minlength=num_classes)
    denom = counts.clamp_min(1).to(z.dtype)
    means = z.new_zeros((num_classes, c, p)).index_add(0, labels, z) / denom[:, None, None]
    centred = z - means[labels]
    cov = z.new_zeros((num_classes, c, c))
    for rows, group in zip(centred.split(chunk), labels.split(chunk), strict=True):
        cov = cov.index_add(0, group, torch.bmm(rows, rows.transpose(1, 2)))
    return cov / denom[:, None, None], counts


def covariance_matching(
    real_maps: Tensor,
    real_labels: Tensor,
    syn_maps: Tensor,
    syn_labels: Tensor,
    num_classes: int,
    layout: str = "channels",
) -> Tensor:
    """sum_c ||Sigma(real_c) - Sigma(syn_c)||_F^2 over classes with >= 2 synthetic rows."""
    with torch.no_grad():
        real_cov, _ = class_covariances(real_maps.detach(), real_labels, num_classes, layout)
    syn_cov, syn_counts = class_covariances(syn_maps, syn_labels, num_classes, layout)
    per_class = (real_cov - syn_cov).pow(2).flatten(1).sum(1)
    return (per_class * (syn_counts >= 2).to(per_class.dtype)).sum()


@dataclass(frozen=True)
class CMSettings(Settings):
    #: A number, or {base method: number} (conf/regularizer/cm.yaml has the published ones).
    weight: Any = 1.0
    layout: str = "auto"

    def check(self) -> None:
        if self.layout not in LAYOUTS:
            raise ConfigError(
                f"regularizer cm: layout must be one of {LAYOUTS}, got {self.layout!r}"
            )


class CovarianceMatching(AddOn):
    name: ClassVar[str] = "cm"
    has_loss: ClassVar[bool] = True
    needs_feature_map: ClassVar[bool] = True
    Settings = CMSettings
    layout = "channels"

    def setup(self, method: str | Sequence[str], ctx: SetupContext) -> None:
        super().setup(method, ctx)
        layout = self.settings.layout
        if layout == "auto":
            layout = "channel_rows" if str(ctx.info.name) == "tinyimagenet" else "channels"
        self.layout = layout

    def loss(self, ctx: LossContext) -> Tensor:
        if ctx.real_map is None or ctx.syn_map is None:
            raise ValueError("covariance matching needs the matching network's feature maps")
        return covariance_matching(
            ctx.real_map, ctx.real_labels, ctx.syn_map, ctx.syn_labels, ctx.num_classes, self.layout
        )

    def vanishes(self, rows_per_class: int) -> bool:
        return rows_per_class < 2
