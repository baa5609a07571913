"""IDC: dataset condensation via efficient synthetic-data parameterization (Kim et al., ICML 2022).

Gradient matching over multi-formation data: each stored image is a factor x factor mosaic that
decodes into factor**2 upsampled images (`SyntheticSet.decode`, IDM's mosaics). As the reference
(snu-mllab/Efficient-Dataset-Condensation, condense.py with misc/reproduce.py) does it, each outer
iteration draws a fresh network and runs `inner_loop` rounds of:

1. matching, class by class in class order (`class_steps: sequential`, the reference's
   condense.py ~526-542): a real batch of the class and its decoded synthetic images (a random
   `batch_syn_max` of them when there are more: IPC 50 keeps 128 of 200 tiles, as the
   reference's `synset.sample` subsamples decoded tiles) share one augmentation draw; the
   distance between their gradients (conv weights only: biases, norm parameters and the
   classifier are skipped) is 'mse' (sum of squares) or 'l1' (sum of absolute values); one
   image step on the shared momentum buffer, so class c's gradient is taken after the steps of
   the classes before it, as in the reference;
2. a network update on REAL data: `net_epochs` passes over `n_data` real images in batches of
   `net_batch`, per-sample augmentation (`net_strategy`) and CutMix (p `net_cutmix_p`, beta 1),
   SGD lr 0.01, momentum 0.9, wd 5e-4 (skipped after the last round: the network is discarded).

Augmentation is IDC's own DiffAug composition (`augment_mode: IDC`, misc/augment.py): every
family of the strategy each call (colour, then crop, then cutout for `color_crop_cutout`),
Siamese in matching (one draw per class for its real and synthetic rows: DiffAug batch=True on
their concatenation) and per sample in the network updates (condense.py ~356-369).

The reference optimises images in pixel space ([0, 1], normalised inside its augmentation) and
clamps them to [0, 1] every outer iteration; here images are stored normalised, so the gradient of
channel c is scaled by 1/std_c**2 (SGD with momentum is linear: the same steps in pixel space) and
the clamp is to the normalised image of [0, 1]. lr_img is the reference's value at IPC 10, scaled
by ipc/10 as its `tune_lr_img` does. `class_steps: round_start` is a faster approximation: every
class's gradient from one vectorised pass at the round's start, then the per-class steps.
Every synthetic batch comes through `SyntheticSet.batch()`, so FYI doubles the decoded batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from distillkit.augment import DSA
from distillkit.augment.dsa import MODES
from distillkit.errors import ConfigError
from distillkit.evaluation.protocol import EvalSettings, batch_loss
from distillkit.methods.base import Method, MethodContext, MethodSettings
from distillkit.methods.gradient_matching import GRADIENT_MODES, class_gradients
from distillkit.settings import ranged

METRICS = ("mse", "l1")
CLASS_STEPS = ("sequential", "round_start")


def idc_distance(g_syn: Sequence[Tensor], g_real: Sequence[Tensor], metric: str) -> Tensor:
    """Per-class distances (K,) between gradients stacked on a leading class axis (K, *shape):
    summed over every tensor of a weight with more than two dimensions (convolutions), as the
    reference's defaults (bias=False, fc=False) do; 'mse' sums squares, 'l1' absolute values."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    total = g_syn[0].new_zeros(g_syn[0].shape[0])
    for gs, gr in zip(g_syn, g_real, strict=True):
        if gs.dim() > 3:  # class axis + a weight of more than two dimensions
            diff = (gs - gr).flatten(1)
            total = total + (diff.pow(2) if metric == "mse" else diff.abs()).sum(1)
    return total


@dataclass(frozen=True)
class IDCSettings(MethodSettings):
    """Defaults are the reference's CIFAR settings (conf/method/idc.yaml says where from)."""

    inner_loop: int = ranged(100, minimum=1)
    lr_img: float = ranged(5e-3, above=0)
    lr_img_per_ipc: bool = True
    momentum: float = ranged(0.5, minimum=0)
    metric: str = "mse"
    batch_real: int = ranged(64, minimum=1)
    batch_syn_max: int = ranged(128, minimum=1)
    factor: int = ranged(2, minimum=1)
    matching_strategy: str | None = "color_crop_cutout"
    net_strategy: str | None = "color_crop"
    augment_mode: str = "IDC"
    class_steps: str = "sequential"
    lr_net: float = ranged(0.01, above=0)
    net_momentum: float = ranged(0.9, minimum=0)
    net_weight_decay: float = ranged(5e-4, minimum=0)
    net_batch: int = ranged(64, minimum=1)
    n_data: int = ranged(500, minimum=0)
    net_epochs: int = ranged(1, minimum=0)
    net_cutmix_p: float = ranged(0.5, minimum=0)
    net_cutmix_beta: float = ranged(1.0, above=0)
    pixel_space: bool = True
    clamp: bool = True
    real_gradients: str = "vmap"
    syn_gradients: str = "vmap"

    def check(self) -> None:
        if self.metric not in METRICS:
            raise ConfigError(f"method.metric must be one of {METRICS}, got {self.metric!r}")
        for key in ("real_gradients", "syn_gradients"):
            if getattr(self, key) not in GRADIENT_MODES:
                raise ConfigError(f"method.{key} must be one of {GRADIENT_MODES}")
        if str(self.augment_mode).upper() not in MODES:
            raise ConfigError(
                f"method.augment_mode must be one of {MODES}, got {self.augment_mode!r}"
            )
        if self.class_steps not in CLASS_STEPS:
            raise ConfigError(
                f"method.class_steps must be one of {CLASS_STEPS}, got {self.class_steps!r}"
            )
        if self.net_cutmix_p > 1:
            raise ConfigError(f"method.net_cutmix_p must be <= 1, got {self.net_cutmix_p}")


def _augment(strategy: str | None, mode: str) -> DSA | None:
    return DSA.from_config({"strategy": strategy, "mode": mode}) if strategy else None


class EfficientCondensation(Method):
    name = "idc"
    smoke_overrides = ("method.batch_real=16", "method.inner_loop=2", "method.n_data=32")
    Settings = IDCSettings
    #: A class's distance needs only its rows and the network, which trains on real data: a
    #: rank matches its own classes, makes every other class's draws and takes its image step
    #: with a zero gradient (the shared momentum moves every row), so each row follows its
    #: one-process trajectory.
    distributed_split = "classes"

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        s = self.settings
        lr = s.lr_img * (self.synthetic.ipc / 10 if s.lr_img_per_ipc else 1.0)
        self.optimiser = self.image_optimiser(lr, s.momentum)
        self.batch_real = self.real_per_class(s.batch_real)
        self.match_augment = _augment(s.matching_strategy, s.augment_mode)
        self.net_augment = _augment(s.net_strategy, s.augment_mode)
        self.net_recipe = EvalSettings(cutmix_p=s.net_cutmix_p, cutmix_beta=s.net_cutmix_beta)
        info, images = self.data.info, self.synthetic.images
        std = torch.tensor(info.std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        mean = torch.tensor(info.mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        whitened = self.data.zca_state is not None
        #: Per-channel gradient scale that makes lr_img a pixel-space rate (1/std**2).
        self.grad_scale = std.pow(-2) if s.pixel_space and not whitened else None
        #: The normalised image of the pixel range [0, 1], per channel.
        self.bounds = ((0 - mean) / std, (1 - mean) / std) if s.clamp and not whitened else None
        #: Network updates done in this run (tests read the schedule from it).
        self.net_updates = 0

    # -- one round -----------------------------------------------------------------------------
    def decoded_subsample(self, classes: int = 1) -> Tensor | None:
        """Decoded images kept per class (the first `classes` classes' decoded rows, class-
        contiguous): all (None), or a random `batch_syn_max` of each class's, as the reference
        subsamples the decoded tiles of a class (condense.py ~94-100, 183-193)."""
        per_class = self.synthetic.images_per_class
        keep = self.settings.batch_syn_max
        if keep >= per_class:
            return None
        rows = [
            c * per_class + torch.randperm(per_class, generator=self.generator)[:keep]
            for c in range(classes)
        ]
        return torch.cat(rows).to(self.synthetic.device)

    def _distances(
        self,
        net: nn.Module,
        real: Tensor,
        real_labels: Tensor,
        syn: Tensor,
        syn_labels: Tensor,
        k: int,
        first_class: int = 0,
        draws: int | None = None,
    ) -> Tensor:
        """Per-class distances (k,) of classes first_class.. after one Siamese draw per class
        (`draws`: that many drawn for classes 0.., of which these use theirs: a rank's share
        of a round that draws for every class)."""
        s = self.settings
        if self.match_augment is not None:
            offset = first_class if draws is None else 0
            real, syn = self.siamese_augment(
                real, real_labels - offset, syn, syn_labels - offset, draws or k,
                self.match_augment,
            )  # fmt: skip
        with torch.no_grad():
            g_real = class_gradients(
                net, real, real_labels, k, mode=s.real_gradients, first_class=first_class
            )
        g_syn = class_gradients(
            net, syn, syn_labels, k, create_graph=True, mode=s.syn_gradients,
            first_class=first_class,
        )  # fmt: skip
        return idc_distance(g_syn, g_real, s.metric)

    def matching_losses(self, net: nn.Module) -> Tensor:
        """Per-class distances (K,) for one network at the current images (`round_start`)."""
        k = self.synthetic.num_classes
        if self.world.is_distributed:
            return self.own_matching_losses(net)
        real, real_labels = self.data.sample_per_class(self.batch_real, self.generator)
        real, real_labels = self.real_view(real, real_labels)
        syn, syn_labels = self.synthetic.batch(None, self.decoded_subsample(k))
        return self._distances(net, real, real_labels, syn, syn_labels, k)

    def own_matching_losses(self, net: nn.Module) -> Tensor:
        """`matching_losses` of this rank's classes, from the draws made for every class."""
        k, mine = self.synthetic.num_classes, self.own_classes
        real, real_labels = self.sample_own_classes(self.batch_real)
        real, real_labels = self.real_view(real, real_labels)
        decoded = self.decoded_subsample(k)
        per_class = self.synthetic.images_per_class
        if decoded is not None:  # this rank's decoded rows, counted from its first class
            own = (decoded >= mine.start * per_class) & (decoded < mine.stop * per_class)
            decoded = decoded[own] - mine.start * per_class
        syn, syn_labels = self.synthetic.batch(self.own_rows, decoded)
        return self._distances(
            net, real, real_labels, syn, syn_labels, len(mine), first_class=mine.start, draws=k
        )

    def class_loss(self, net: nn.Module, c: int) -> Tensor:
        """Class c's distance (1,) at the current images: its own real batch, decoded images
        and augmentation draw (the reference's loop body, condense.py ~527-537)."""
        real = self.data.sample_class(c, self.batch_real, self.generator)
        real_labels = torch.full(
            (real.shape[0],), c, dtype=self.data.train_labels.dtype, device=real.device
        )
        real, real_labels = self.real_view(real, real_labels)
        rows = self.synthetic.class_rows(c)
        syn, syn_labels = self.synthetic.batch(rows, self.decoded_subsample())
        return self._distances(net, real, real_labels, syn, syn_labels, 1, first_class=c)

    def _step_images(self, grad: Tensor) -> None:
        if self.grad_scale is not None:
            grad = grad * self.grad_scale
        self.synthetic.images.grad = grad
        self.optimiser.step()
        self.synthetic.images.grad = None

    def sequential_steps(self, net: nn.Module) -> Tensor:
        """The reference's round: per class in order, its distance at the images the earlier
        classes' steps (and the shared momentum) left, then one image step. Returns (K,)."""
        losses = []
        mine = self.own_classes
        for c in range(self.synthetic.num_classes):
            if c not in mine:  # another rank's class: its draws, and a zero-gradient step
                self.skip_class(c)
                continue
            loss = self.class_loss(net, c)
            self._step_images(torch.autograd.grad(loss.sum(), self.synthetic.images)[0])
            losses.append(loss.detach())
        return torch.cat(losses)

    def skip_class(self, c: int) -> None:
        """The draws `class_loss(net, c)` makes (its real batch, decoded subsample, Siamese
        DSA), then the image step with a zero gradient, without the network work."""
        real = self.data.sample_class(c, self.batch_real, self.generator)
        self.decoded_subsample()
        if self.match_augment is not None:
            size = tuple(real.shape[-2:])
            self.match_augment.sample(1, self.generator, size, real.device)
        self._step_images(torch.zeros_like(self.synthetic.images))

    def image_steps(self, losses: Tensor) -> None:
        """`round_start`: one SGD step per class, in class order, on the shared momentum buffer,
        every class's gradient taken from `losses` (computed before any of the steps)."""
        images = self.synthetic.images
        grad = torch.autograd.grad(losses.sum(), images)[0]
        for c in range(self.synthetic.num_classes):
            rows = self.synthetic.class_rows(c)
            step = torch.zeros_like(grad)
            step[rows] = grad[rows]
            self._step_images(step)

    def update_network(self, net: nn.Module, optimiser: torch.optim.Optimizer) -> None:
        """`net_epochs` passes over `n_data` random real images (the reference's train_epoch
        with n_data: batches until at least n_data images were seen)."""
        s = self.settings
        n = self.data.train_images.shape[0]
        batches = -(-min(s.n_data, n) // s.net_batch)
        net.train()
        for _ in range(s.net_epochs):
            order = torch.randperm(n, generator=self.generator)[: batches * s.net_batch]
            for rows in torch.split(order.to(self.data.train_images.device), s.net_batch):
                x, y = self.data.train_images[rows], self.data.train_labels[rows]
                if self.net_augment is not None:
                    x = self.net_augment(x, self.generator)
                loss = batch_loss(net, x, y, self.net_recipe, self.generator)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
        self.net_updates += 1

    def clamp_images(self) -> None:
        if self.bounds is not None:
            with torch.no_grad():
                low, high = self.bounds
                self.synthetic.images.copy_(
                    torch.maximum(torch.minimum(self.synthetic.images, high), low)
                )

    def step(self, iteration: int) -> dict[str, Tensor]:
        s = self.settings
        net = self.ctx.networks(self.generator)
        net.train()
        net_optimiser = torch.optim.SGD(
            net.parameters(), lr=s.lr_net, momentum=s.net_momentum, weight_decay=s.net_weight_decay
        )
        self.clamp_images()
        total = []
        for round_ in range(s.inner_loop):
            if s.class_steps == "sequential":
                losses = self.sequential_steps(net)
            else:
                losses = self.matching_losses(net)
                self.image_steps(losses)
            total.append(losses.detach().sum())
            if round_ < s.inner_loop - 1 and s.n_data > 0:
                self.update_network(net, net_optimiser)
        # As the reference logs it: the mean distance per class and round.
        return {"loss": torch.stack(total).mean() / self.synthetic.num_classes}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "net_updates": self.net_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.net_updates = int(state.get("net_updates", 0))
