"""ResNet18 in the CIFAR style of dataset distillation: 3x3 stride-1 stem, no max-pool.

torchvision's BasicBlock cannot express the _AP variant (stride-1 conv followed by an average
pool, also in the shortcut), so a small block covers both downsampling styles.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from distillkit.errors import ConfigError

from .base import DistillNet, Size, check_choice, make_norm

DOWNSAMPLES = ("stride", "avgpool")


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual; downsampling by stride-2 conv or by AvgPool2d(2)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, norm: str, downsample: str) -> None:
        super().__init__()
        by_pool = downsample == "avgpool" and stride != 1
        conv_stride = 1 if by_pool else stride
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=conv_stride, padding=1, bias=False)
        self.bn1 = make_norm(norm, out_ch)
        self.pool = nn.AvgPool2d(2, 2) if by_pool else nn.Identity()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = make_norm(norm, out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            if by_pool:
                proj = [nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.AvgPool2d(2, 2)]
            else:
                proj = [nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)]
            self.shortcut = nn.Sequential(*proj, make_norm(norm, out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pool(F.relu(self.bn1(self.conv1(x))))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(DistillNet):
    """BasicBlock [2, 2, 2, 2], widths 64-512, global average pool to a 512-d embedding.

    `width` scales the four stages (width, 2w, 4w, 8w; 64 is the published network): a narrow
    ResNet makes IID's pre-trained pool affordable on a CPU (the embedding is then 8w-d).

    The reference's avg_pool(4) on 32x32 is a 1x1 global pool; the adaptive pool here is the same
    there and works for any input size.
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        image_size: int | Size,
        *,
        norm: str = "instancenorm",
        downsample: str = "stride",
        width: int = 64,
    ) -> None:
        super().__init__()
        downsample = check_choice("downsample", downsample, DOWNSAMPLES)
        if int(width) < 1:
            raise ConfigError(f"ResNet18 width must be >= 1, got {width}")
        width = int(width)
        self.conv1 = nn.Conv2d(channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = make_norm(norm, width)
        stages: list[nn.Module] = []
        in_ch = width
        for i, out_ch in enumerate((width, 2 * width, 4 * width, 8 * width)):
            stride = 1 if i == 0 else 2
            stages.append(
                nn.Sequential(
                    BasicBlock(in_ch, out_ch, stride, norm, downsample),
                    BasicBlock(out_ch, out_ch, 1, norm, downsample),
                )
            )
            in_ch = out_ch
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(8 * width, num_classes)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(out))))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.avgpool(self.feature_map(x)).flatten(1)

    def embed_from_map(self, fmap: torch.Tensor) -> torch.Tensor | None:
        return self.avgpool(fmap).flatten(1)
