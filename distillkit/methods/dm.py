"""DM: distribution matching (Zhao & Bilen, 2023).

Each iteration draws a fresh random frozen ConvNet and matches, per class, the mean embedding of
Siamese-augmented real images with that of the synthetic images. Real images go through the
network under no_grad in row chunks sized by `runtime.memory_budget` (augmented chunk by chunk;
per-class means from running sums), so a step's memory does not grow with the number of classes;
the synthetic side keeps its graph (that is what the loss needs), built in row chunks under half
the budget so that no activation block is much larger than the real side's (a 1,000-row pass left
the retained host heap fragmented 1.2 GB above the memory in use; `synthetic_side`). With a
budget that holds the whole batch it is one pass, and on the CPU the chunked step is
bit-identical to it.
Loss add-ons (IID's CC and CM) see the same augmented batches and, when they ask for it, the
feature maps of the same forward passes. `pair_distance`, the distance FYI's unequalness score
uses, is the matching term between two batches: the same class means and distance functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from distillkit.augment import DSA, DSAParams
from distillkit.classwise import class_means
from distillkit.memory import BACKWARD_FACTOR, row_slices
from distillkit.methods.base import Method, MethodContext, MethodSettings, check_rows_independent
from distillkit.runtime import Runtime
from distillkit.settings import ranged


def embed_and_map(net: nn.Module, x: Tensor, with_map: bool) -> tuple[Tensor, Tensor | None]:
    """`net.embed(x)` and, if asked, the last feature map, from one forward pass where the
    network can give its embedding from its map (`embed_from_map`), else two."""
    if not with_map:
        return net.embed(x), None
    fmap = net.feature_map(x)
    embedded = net.embed_from_map(fmap)
    return (net.embed(x) if embedded is None else embedded), fmap


def mean_embedding_distance(means: Tensor, other: Tensor) -> Tensor:
    """DM's distance per class: || mean_c - other_c ||^2 of two (K, D) tables, shape (K,)."""
    return (means - other).pow(2).sum(1)


def chunked_class_means(
    net: nn.Module,
    x: Tensor,
    labels: Tensor,
    k: int,
    budget: int,
    network_pass: Callable[[nn.Module, Tensor], tuple[Tensor, Tensor | None]],
    *,
    augment: DSA | None = None,
    params: DSAParams | None = None,
    dtype: torch.dtype | None = None,
    keep: bool = False,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """(per-class mean features (k, D), the batch as it went through `network_pass`, its feature
    maps or None) under no_grad, in row chunks under `budget` bytes (`dtype`: the pass's
    precision), each chunk DSA-augmented with `params` first when given. Sums run over rows in
    order, as one scatter over the whole batch does, so the means do not depend on the chunking.
    The augmented batch is kept (`keep`) only for add-ons that read it."""
    sums: Tensor | None = None
    kept: list[Tensor] = []
    maps: list[Tensor] = []
    with torch.no_grad():
        for rows in row_slices(net, x, budget, dtype):
            chunk = x[rows]
            if params is not None:
                chunk = augment.apply(chunk, params, labels[rows])
            features, fmap = network_pass(net, chunk)
            if sums is None:
                sums = features.new_zeros((k, features.shape[1]))
            sums.index_add_(0, labels[rows], features)
            if keep:
                kept.append(chunk)
            if fmap is not None:
                maps.append(fmap)
    counts = torch.bincount(labels, minlength=k).clamp_min(1).to(sums.dtype)
    augmented = torch.cat(kept) if keep else x
    return sums / counts[:, None], augmented, torch.cat(maps) if maps else None


def _embedding(net: nn.Module, x: Tensor) -> tuple[Tensor, Tensor | None]:
    return embed_and_map(net, x, False)


@dataclass(frozen=True)
class DMSettings(MethodSettings):
    """Defaults are the paper's (conf/method/dm.yaml says where each comes from)."""

    lr_img: float = ranged(1.0, above=0)
    momentum: float = ranged(0.5, minimum=0)
    batch_real: int = ranged(256, minimum=1)


class DistributionMatching(Method):
    name = "dm"
    takes_loss_addons = True
    smoke_overrides = ("method.batch_real=16",)
    Settings = DMSettings
    #: Every class's term needs only that class's rows (IID's CC and CM too), so a rank matches
    #: its own classes from the draws every rank makes alike (distillkit.distributed).
    distributed_split = "classes"

    @classmethod
    def pair_distance(
        cls,
        net: nn.Module,
        x: Tensor,
        x_other: Tensor,
        labels: Tensor,
        num_classes: int,
        *,
        augment: DSA | None = None,
        generator: torch.Generator | None = None,
        budget: int = 0,
    ) -> Tensor:
        """|| mean embed(X_c) - mean embed(X'_c) ||^2 per class, shape (K,): the matching term's
        distance and class means, both sides under no_grad in row chunks under `budget` bytes
        (no augmentation: DM's DSA is the run's choice, not part of its distance)."""
        del augment, generator
        means = [
            chunked_class_means(net, batch, labels, num_classes, budget, _embedding)[0]
            for batch in (x, x_other)
        ]
        return mean_embedding_distance(*means)

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        s = self.settings
        self.optimiser = self.image_optimiser(s.lr_img, s.momentum)
        self.batch_real = self.real_per_class(s.batch_real)
        self.iteration = 0
        # Speed switches (the run's runtime block): autocast, channels-last and torch.compile of
        # the network work only; features go back to fp32 before any mean.
        self.runtime = Runtime.of(ctx.runtime, self.data.device)
        with_map = self.with_map

        def embed(net: nn.Module, x: Tensor) -> tuple[Tensor, Tensor | None]:
            return embed_and_map(net, x, with_map)

        self.embed = self.runtime.compiled(embed, "the DM embedding")
        if self.world.is_distributed:
            check_rows_independent(ctx.networks, self.name)

    def network_pass(self, net: nn.Module, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(features, map) of `x` under the runtime's precision and memory format, as fp32."""
        with self.runtime.autocast():
            features, fmap = self.embed(net, self.runtime.input(x))
        if self.runtime.mixed:
            features = features.float()
            fmap = None if fmap is None else fmap.float()
        return features, fmap

    def real_side(
        self, net: nn.Module, real: Tensor, labels: Tensor, params: DSAParams | None, k: int
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """(per-class mean features, the augmented real batch, its feature maps or None) under
        no_grad, in row chunks under the memory budget (`chunked_class_means`)."""
        return chunked_class_means(
            net,
            real,
            labels,
            k,
            self.runtime.memory_budget,
            self.network_pass,
            augment=self.ctx.augment,
            params=params,
            dtype=self.runtime.dtype if self.runtime.mixed else None,
            keep=bool(self.loss_addons),
        )

    def synthetic_side(self, net: nn.Module, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(features, map) of the synthetic batch with their graph (`network_pass`), in row
        chunks under the memory budget's share for a differentiated pass (budget /
        BACKWARD_FACTOR), concatenated. The graph still holds every chunk's saved activations,
        as the published per-class loop's does; chunking bounds the size of each activation and
        gradient block, which the host allocator's retained heap (distillkit/allocator.py)
        otherwise fragments: one 1,000-row pass at 100 classes left it 1.2 GB above the memory in
        use (benchmarks/results/dm_memory_100_classes.md). Rows do not interact (one slice when
        they do), so the features and the images' gradients do not depend on the chunking."""
        budget = self.runtime.memory_budget // BACKWARD_FACTOR
        dtype = self.runtime.dtype if self.runtime.mixed else None
        slices = row_slices(net, x, budget, dtype)
        if len(slices) == 1:
            return self.network_pass(net, x)
        parts = [self.network_pass(net, x[rows]) for rows in slices]
        features = torch.cat([f for f, _ in parts])
        maps = None if parts[0][1] is None else torch.cat([m for _, m in parts])
        return features, maps

    def matching_terms(self, net: nn.Module) -> dict[str, Tensor]:
        """{"match": the DM term, plus each loss add-on's unweighted term and "regularizers":
        their weighted sum} for one network and one DSA draw."""
        k = self.synthetic.num_classes
        real, real_labels = self.real_view(*self.sample_own_classes(self.batch_real))
        syn, syn_labels = self.synthetic.batch(self.own_rows)
        augment = self.ctx.augment
        params = None
        if augment is not None and augment.enabled:  # one Siamese draw per class
            params = augment.sample(k, self.generator, tuple(real.shape[-2:]), real.device)
            syn = augment.apply(syn, params, syn_labels)
        real_means, real, real_map = self.real_side(net, real, real_labels, params, k)
        syn_features, syn_map = self.synthetic_side(net, syn)
        syn_means = class_means(syn_features, syn_labels, k)
        terms = {"match": mean_embedding_distance(real_means, syn_means).sum()}
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
