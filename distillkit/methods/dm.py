"""DM: distribution matching (Zhao & Bilen, 2023).

Each iteration draws a fresh random frozen ConvNet and matches, per class, the mean embedding of
Siamese-augmented real images with that of the synthetic images. All classes go through one
forward pass; per-class means come from one scatter. Loss add-ons (IID's CC and CM) see the same
augmented batches and, when they ask for it, the feature maps of that same forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from distillkit.classwise import class_means
from distillkit.methods.base import Method, MethodContext, MethodSettings
from distillkit.models import VGG11, AlexNet, ConvNet, ResNet18
from distillkit.runtime import Runtime
from distillkit.settings import ranged

#: Networks whose `embed` is the flattened `feature_map` (one pass gives both).
_FLAT_EMBED = (ConvNet, AlexNet, VGG11)


def embed_and_map(net: nn.Module, x: Tensor, with_map: bool) -> tuple[Tensor, Tensor | None]:
    """`net.embed(x)` and, if asked, the last feature map, from one forward pass where the
    architecture allows it (ConvNet, AlexNet, VGG: flatten; ResNet: global average pool)."""
    if not with_map:
        return net.embed(x), None
    fmap = net.feature_map(x)
    if isinstance(net, _FLAT_EMBED):
        return fmap.flatten(1), fmap
    if isinstance(net, ResNet18):
        return net.avgpool(fmap).flatten(1), fmap
    return net.embed(x), fmap  # embed is not a function of the map: a second pass


@dataclass(frozen=True)
class DMSettings(MethodSettings):
    """Defaults are the paper's (conf/method/dm.yaml says where each comes from)."""

    lr_img: float = ranged(1.0, above=0)
    momentum: float = ranged(0.5, minimum=0)
    batch_real: int = ranged(256, minimum=1)


class DistributionMatching(Method):
    name = "dm"
    takes_loss_addons = True
    Settings = DMSettings

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        s = self.settings
        self.optimiser = self.image_optimiser(s.lr_img, s.momentum)
        self.batch_real = self.real_per_class(s.batch_real)
        self.iteration = 0
        # Speed switches (the run's runtime block): autocast, channels-last and torch.compile of
        # the network work only; features go back to fp32 before any mean.
        self.runtime = Runtime.from_config(ctx.runtime, self.data.device)
        with_map = self.with_map

        def embed(net: nn.Module, x: Tensor) -> tuple[Tensor, Tensor | None]:
            return embed_and_map(net, x, with_map)

        self.embed = self.runtime.compiled(embed, "the DM embedding")

    def network_pass(self, net: nn.Module, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(features, map) of `x` under the runtime's precision and memory format, as fp32."""
        with self.runtime.autocast():
            features, fmap = self.embed(net, self.runtime.input(x))
        if self.runtime.mixed:
            features = features.float()
            fmap = None if fmap is None else fmap.float()
        return features, fmap

    def matching_terms(self, net: nn.Module) -> dict[str, Tensor]:
        """{"match": the DM term, plus each loss add-on's unweighted term and "regularizers":
        their weighted sum} for one network and one DSA draw."""
        k = self.synthetic.num_classes
        real, real_labels = self.real_view(
            *self.data.sample_per_class(self.batch_real, self.generator)
        )
        syn, syn_labels = self.synthetic.batch()
        real, syn = self.siamese_augment(real, real_labels, syn, syn_labels, k)
        with torch.no_grad():
            real_features, real_map = self.network_pass(net, real)
            real_means = class_means(real_features, real_labels, k)
        syn_features, syn_map = self.network_pass(net, syn)
        syn_means = class_means(syn_features, syn_labels, k)
        terms = {"match": (real_means - syn_means).pow(2).sum()}
        terms.update(
            self.addon_terms(
                iteration=self.iteration,
                net=net,
                real=real,
                real_labels=real_labels,
                syn=syn,
                syn_labels=syn_labels,
                num_classes=k,
                real_map=real_map,
                syn_map=syn_map,
            )
        )
        return terms

    def matching_loss(self, net: nn.Module) -> Tensor:
        """sum_c || mean embed(A(R_c)) - mean embed(A(S_c)) ||^2 for one network and DSA draw."""
        return self.matching_terms(net)["match"]

    def step(self, iteration: int) -> dict[str, Tensor]:
        self.iteration = iteration
        net = self.runtime.module(self.ctx.networks.frozen(self.generator))
        net.train()
        terms = self.matching_terms(net)
        loss = terms["match"] + terms.pop("regularizers", 0.0)
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.optimiser.step()
        if not self.loss_addons:
            return {"loss": loss.detach()}
        return {"loss": loss.detach(), **{k: v.detach() for k, v in terms.items()}}
