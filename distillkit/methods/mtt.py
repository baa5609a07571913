"""MTT: matching training trajectories (Cazenavette et al., 2022), with a constant-memory mode.

Each iteration picks a random expert and start epoch t, sets W_0 = θ_t and the target
W_T = θ_{t+M}, takes N SGD steps of a functional student (one flat parameter vector) on
DSA-augmented synthetic mini-batches with the learnable step size α, and minimises
L = ‖W_N − W_T‖² / ‖W_0 − W_T‖² over the images (SGD lr_img, momentum 0.5) and α (SGD lr_lr,
momentum 0.5). Every student batch comes from `SyntheticSet.batch`, so FYI's doubling applies.

`mode=unrolled` back-propagates through the N unrolled steps (memory grows with N).
`mode=constant_memory` is the TESLA-style first-order variant (methods.md): roll out without a
graph keeping G = Σ g_i, then revisit the steps one at a time and back-propagate each step's
gradient g_i against the same upstream vector ∂L/∂g_i = 2α(αG − W_0 + W_T)/‖W_0 − W_T‖². That is
exactly the gradient of the surrogate s_i of methods.md (whose derivative in g_i, at g_i = ḡ_i, is
this vector), written as a dot product. The revisit walks the trajectory forward again from W_0
with the same batches and DSA draws instead of storing every W_i, so memory holds one step's
graph and a few parameter vectors whatever N is. dL/dα comes from ‖W_0 − αG − W_T‖² with G fixed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from distillkit.augment.dsa import DSAParams
from distillkit.errors import ConfigError
from distillkit.experts import ExpertBuffer, ExpertBufferError, buffer_meta, flatten_parameters
from distillkit.methods.base import Method, MethodContext, MethodSettings, check_rows_independent
from distillkit.settings import ranged

MODES = ("unrolled", "constant_memory")


class FunctionalNetwork:
    """`net`'s forward at any flat parameter vector, through `torch.func.functional_call`.

    The flat layout is `net.parameters()` order, the same as the expert buffer's.
    Buffers (BatchNorm statistics) are the module's own.
    """

    def __init__(self, net: nn.Module) -> None:
        self.net = net
        named = list(net.named_parameters())
        self.names = [name for name, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.numels = [p.numel() for _, p in named]
        self.num_params = sum(self.numels)
        for _, p in named:
            p.requires_grad_(False)

    def flatten(self) -> Tensor:
        return flatten_parameters(self.net)

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        if flat.shape != (self.num_params,):
            raise ValueError(
                f"expected a flat vector of {self.num_params}, got {tuple(flat.shape)}"
            )
        pieces = torch.split(flat, self.numels)
        return {n: p.view(s) for n, p, s in zip(self.names, pieces, self.shapes, strict=True)}

    def __call__(self, flat: Tensor, x: Tensor) -> Tensor:
        state = {**self.unflatten(flat), **dict(self.net.named_buffers())}
        return functional_call(self.net, state, (x,))


@dataclass(frozen=True)
class MTTSettings(MethodSettings):
    """Defaults are conf/method/mtt.yaml's; per-setting values come from conf/tuned/mtt_*."""

    syn_steps: int = ranged(20, minimum=1)
    expert_epochs: int = ranged(2, minimum=1)
    max_start_epoch: int = ranged(20, minimum=1)
    lr_img: float = ranged(1000.0, above=0)
    lr_lr: float = ranged(1e-5, above=0)
    lr_teacher: float = ranged(0.01, above=0)
    momentum: float = ranged(0.5, minimum=0)
    #: Synthetic rows per student step: None or "all" (every stored row) or a count.
    batch_syn: Any = None
    mode: str = "unrolled"
    #: The expert buffer directory (distillkit-experts).
    buffer: str | None = None

    def check(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"method.mode must be one of {MODES}, got {self.mode!r}")
        ok = self.batch_syn in (None, "all") or (
            isinstance(self.batch_syn, int) and not isinstance(self.batch_syn, bool)
            and self.batch_syn >= 1
        )  # fmt: skip
        if not ok:
            raise ConfigError(f"method.batch_syn must be all, null or >= 1, got {self.batch_syn!r}")


class TrajectoryMatching(Method):
    name = "mtt"
    smoke_overrides = ("method.syn_steps=2", "method.expert_epochs=1", "method.max_start_epoch=1")
    #: Plain SGD experts (distillkit-experts with its defaults).
    expert_options = ()
    Settings = MTTSettings
    #: Every rank runs the same student from the same draws and takes its share of each step's
    #: batch: the step's gradient is all-reduced (inside the graph when unrolled), then the
    #: images' and the learned lr's gradients, so every rank takes the same optimiser steps.
    distributed_split = "batch"
    #: The matching loss and the learned lr are the same on every rank.
    replicated_losses = ("loss", "lr")

    @classmethod
    def check_resources(cls, settings: MTTSettings) -> None:
        """The expert buffer must exist before minutes of data loading (shards are checked
        one by one when the method opens them)."""
        if not settings.buffer:
            raise ConfigError("method.buffer: MTT needs an expert buffer directory")
        path = Path(settings.buffer)
        if not path.is_dir() or not any(path.glob("experts_*.pt")):
            raise ConfigError(
                f"{path}: no expert buffer for MTT here (method.buffer); train one with "
                "distillkit-experts for this dataset and model, or point method.buffer at it"
            )

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        s = self.settings
        self.mode = s.mode
        self.syn_steps, self.expert_epochs = s.syn_steps, s.expert_epochs
        self.max_start_epoch = s.max_start_epoch
        net = ctx.networks.frozen(self.generator)
        net.train()
        if self.world.is_distributed:
            check_rows_independent(ctx.networks, self.name)
        self.student = FunctionalNetwork(net)
        if not s.buffer:
            raise ConfigError("method.buffer: the expert buffer directory is not set")
        # The experts' DSA kind must be the run's (dsa.always_flip); no matching DSA: either.
        augment = ctx.augment
        flip = augment.always_flip if augment is not None and augment.enabled else None
        expected = buffer_meta(self.data.info, ctx.networks, net, always_flip=flip)
        self.buffer = ExpertBuffer.open(s.buffer, expected)
        needed = self.max_start_epoch - 1 + self.expert_epochs
        if needed > self.buffer.epochs:
            raise ExpertBufferError(
                f"{self.buffer.directory}: experts have {self.buffer.epochs} epochs, but "
                f"max_start_epoch={self.max_start_epoch} and expert_epochs={self.expert_epochs} "
                f"need {needed}"
            )
        images = self.synthetic.images
        self.syn_lr = torch.tensor(
            s.lr_teacher, device=images.device, dtype=images.dtype, requires_grad=True
        )
        self.optimiser_img = torch.optim.SGD(
            self.synthetic.parameters(), lr=s.lr_img, momentum=s.momentum
        )
        self.optimiser_lr = torch.optim.SGD([self.syn_lr], lr=s.lr_lr, momentum=s.momentum)
        stored = self.synthetic.images.shape[0]
        batch_syn = s.batch_syn
        total = stored if batch_syn in (None, "all") else min(int(batch_syn), stored)
        # FYI (multiplier 2) samples half the usual batch before doubling: same compute.
        self.rows_per_step = max(1, total // self.synthetic.batch_multiplier)
        self._chunks: list[Tensor] = []

    # -- batches --------------------------------------------------------------------------------
    def _next_rows(self) -> Tensor:
        """The next chunk of a random permutation of the stored rows (reference MTT's order)."""
        if not self._chunks:
            order = torch.randperm(self.synthetic.images.shape[0], generator=self.generator)
            self._chunks = list(torch.split(order, self.rows_per_step))
        return self._chunks.pop(0)

    def _draw(self) -> tuple[Tensor, DSAParams | None]:
        """Rows and per-sample DSA parameters of one student step (kept for a replay)."""
        rows = self._next_rows()
        augment = self.ctx.augment
        if augment is None or not augment.enabled:
            return rows, None
        n = len(rows) * self.synthetic.batch_multiplier * self.synthetic.factor**2
        size = tuple(self.synthetic.images.shape[-2:])
        return rows, augment.sample(n, self.generator, size, self.synthetic.device)

    def _batch(self, rows: Tensor, params: DSAParams | None) -> tuple[Tensor, Tensor]:
        """The student's batch: the one synthetic door (FYI), then per-sample DSA."""
        x, y = self.synthetic.batch(rows.to(self.synthetic.device))
        if params is not None:
            x = self.ctx.augment.apply(x, params)
        return x, y

    def _step_gradient(
        self, w: Tensor, x: Tensor, y: Tensor, graph: bool, summed: bool = True
    ) -> Tensor:
        """The student's batch-mean gradient at `w` (with its graph to the images: `graph`).
        Over several ranks, this rank's share of it unless `summed`."""
        if self.world.is_distributed:
            return self._shared_step_gradient(w, x, y, graph, summed)
        loss = F.cross_entropy(self.student(w, x), y)
        return torch.autograd.grad(loss, w, create_graph=graph)[0]

    def _shared_step_gradient(
        self, w: Tensor, x: Tensor, y: Tensor, graph: bool, summed: bool
    ) -> Tensor:
        """The batch-mean gradient from this rank's share of the batch's rows (augmented
        whole, so every row has its single-process draw), summed over the ranks (`summed`;
        inside the graph when it has one)."""
        mine = self.world.shard(x.shape[0])
        if len(mine):
            out = self.student(w, x[mine.start : mine.stop])
            loss = F.cross_entropy(out, y[mine.start : mine.stop], reduction="sum") / x.shape[0]
            part = torch.autograd.grad(loss, w, create_graph=graph)[0]
        else:
            part = torch.zeros_like(w)
        if not summed:
            return part
        if graph:
            return self.world.all_reduce_sum_differentiable(part)
        return self.world.all_reduce_sum(part)

    def _reduce_gradients(self, lr_too: bool) -> None:
        """Sum the images' gradients (and, with `lr_too`, the learned lr's) over the ranks."""
        images = self.synthetic.images
        if images.grad is None:
            images.grad = torch.zeros_like(images)
        images.grad.copy_(self.world.all_reduce_sum(images.grad))
        if lr_too and self.syn_lr.grad is not None:
            self.syn_lr.grad.copy_(self.world.all_reduce_sum(self.syn_lr.grad))

    # -- one iteration --------------------------------------------------------------------------
    def step(self, iteration: int) -> dict[str, Tensor]:
        start, target, _, _ = self.buffer.sample(
            self.generator, self.max_start_epoch, self.expert_epochs
        )
        images = self.synthetic.images
        start = start.to(images.device, images.dtype)
        target = target.to(images.device, images.dtype)
        self.optimiser_img.zero_grad(set_to_none=True)
        self.optimiser_lr.zero_grad(set_to_none=True)
        if self.mode == "unrolled":
            loss = self.unrolled(start, target)
        else:
            loss = self.constant_memory(start, target)
        if self.world.is_distributed:  # the unrolled lr's gradient is a share too
            self._reduce_gradients(lr_too=self.mode == "unrolled")
        self.optimiser_img.step()
        self.optimiser_lr.step()
        return {"loss": loss.detach(), "lr": self.syn_lr.detach().clone()}

    def unrolled(self, start: Tensor, target: Tensor) -> Tensor:
        """Back-propagate L through all N steps; leaves gradients on the images and α."""
        w = start.clone().requires_grad_(True)
        for _ in range(self.syn_steps):
            x, y = self._batch(*self._draw())
            w = w - self.syn_lr * self._step_gradient(w, x, y, graph=True)
        loss = (w - target).pow(2).sum() / (start - target).pow(2).sum()
        # Over N ranks each computes L alike; the all-reduces' backward sums their upstream
        # gradients, so each backpropagates L / N and the shares are summed after.
        shared = loss / self.world.size if self.world.is_distributed else loss
        shared.backward(inputs=[*self.synthetic.parameters(), self.syn_lr])
        return loss

    def constant_memory(self, start: Tensor, target: Tensor) -> Tensor:
        """First-order (TESLA-style) gradients with memory independent of N; returns the exact L."""
        alpha = self.syn_lr.detach()
        distance = (start - target).pow(2).sum()
        plan = [self._draw() for _ in range(self.syn_steps)]
        w, total = start.clone(), torch.zeros_like(start)
        for rows, params in plan:  # 1) roll out without a graph to the images
            with torch.no_grad():
                x, y = self._batch(rows, params)
            g = self._step_gradient(w.requires_grad_(True), x, y, graph=False)
            total += g
            w = (w.detach() - alpha * g).detach()
        loss = (w - target).pow(2).sum() / distance
        # 2) dL/dα with G fixed: L(α) = ‖W_0 − αG − W_T‖² / ‖W_0 − W_T‖².
        alpha_loss = (start - self.syn_lr * total - target).pow(2).sum() / distance
        alpha_loss.backward(inputs=[self.syn_lr])
        # 3) revisit each step: back-propagate g_i against ∂L/∂g_i (the same for every i).
        upstream = 2 * alpha * (alpha * total - start + target) / distance
        images = self.synthetic.parameters()
        w = start.clone()
        for rows, params in plan:
            x, y = self._batch(rows, params)
            # Over several ranks: this rank's share, backpropagated here and summed after.
            g = self._step_gradient(w.requires_grad_(True), x, y, graph=True, summed=False)
            (g * upstream).sum().backward(inputs=images)
            w = (w.detach() - alpha * self.world.all_reduce_sum(g.detach())).detach()
        return loss

    # -- evaluation and resume ------------------------------------------------------------------
    @property
    def eval_lr(self) -> float:
        """The learned step size: evaluation trains with it (one host sync, at evaluation)."""
        return float(self.syn_lr.detach())

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimiser_img": self.optimiser_img.state_dict(),
            "optimiser_lr": self.optimiser_lr.state_dict(),
            "syn_lr": self.syn_lr.detach().cpu().clone(),
            "chunks": [c.clone() for c in self._chunks],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.syn_lr.copy_(state["syn_lr"].to(self.syn_lr.device))
        self.optimiser_img.load_state_dict(state["optimiser_img"])
        self.optimiser_lr.load_state_dict(state["optimiser_lr"])
        self._chunks = [c.clone() for c in state.get("chunks", [])]
