"""DC and DSA: gradient matching (Zhao et al., ICLR 2021; Zhao & Bilen, ICML 2021).

Each outer iteration draws a fresh random network and runs `outer_loop` rounds of: match, per
class, the gradient of the loss on real images with the gradient on synthetic images (one SGD step
on the images), then, unless it is the last round, train the network for `inner_loop` epochs on
the detached synthetic set. DSA adds one Siamese augmentation draw per class in the matching step
and per-sample augmentation in the inner loop.

The distance and the per-class gradients are standalone functions; `class_distances` is the
matching step's per-class distance, and the methods' `pair_distance` (what FYI's unequalness score
calls) is the same function between two batches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from distillkit.augment import DSA
from distillkit.errors import ConfigError
from distillkit.memory import BACKWARD_FACTOR, bytes_per_row, has_batch_coupling
from distillkit.methods.base import Method, MethodContext, MethodSettings
from distillkit.runtime import Runtime
from distillkit.settings import ranged

#: Added to the product of the norms in the cosine (the reference's 0.000001).
EPS = 1e-6
GRADIENT_MODES = ("vmap", "loop")
#: A synthetic pass differentiated twice (its gradient keeps a graph, then the distance is
#: backpropagated through it) holds about three times its activation estimate.
DOUBLE_BACKWARD_FACTOR = 3
#: Per matched class: the real gradient, the synthetic gradient, its graph, the distance's grad.
GRADIENT_COPIES = 4


# -- the distance ---------------------------------------------------------------------------------
def _unit_distance(g_syn: Tensor, g_real: Tensor) -> Tensor:
    """1 - cos between matching rows (last axis), summed over rows; leading axes stay."""
    dot = (g_syn * g_real).sum(-1)
    norms = g_syn.norm(dim=-1) * g_real.norm(dim=-1)
    return (1.0 - dot / (norms + EPS)).sum(-1)


def gradient_distance(g_syn: Sequence[Tensor], g_real: Sequence[Tensor]) -> Tensor:
    """D(g_S, g_R): for every parameter gradient with more than one dimension, one row per output
    unit, summed (1 - cos) over rows and tensors. 1-D tensors (biases, norm affine parameters)
    contribute nothing, as in the reference."""
    if len(g_syn) != len(g_real):
        raise ValueError(f"{len(g_syn)} synthetic vs {len(g_real)} real gradient tensors")
    total = g_syn[0].new_zeros(()) if g_syn else torch.zeros(())
    for gs, gr in zip(g_syn, g_real, strict=True):
        if gs.shape != gr.shape:
            raise ValueError(f"gradient shapes differ: {tuple(gs.shape)} vs {tuple(gr.shape)}")
        if gs.dim() > 1:
            total = total + _unit_distance(gs.flatten(1), gr.flatten(1))
    return total


def class_gradient_distance(g_syn: Sequence[Tensor], g_real: Sequence[Tensor]) -> Tensor:
    """Per-class distances (K,) from gradients stacked on a leading class axis (K, *shape):
    row c equals `gradient_distance` of class c's tensors."""
    total = g_syn[0].new_zeros(g_syn[0].shape[0])
    for gs, gr in zip(g_syn, g_real, strict=True):
        if gs.dim() > 2:
            total = total + _unit_distance(gs.flatten(2), gr.flatten(2))
    return total


# -- per-class gradients ---------------------------------------------------------------------------
def matched_parameters(net: nn.Module) -> dict[str, Tensor]:
    """The parameters the distance looks at (more than one dimension), by name."""
    return {n: p for n, p in net.named_parameters() if p.dim() > 1}


def _group_by_class(x: Tensor, y: Tensor, num_classes: int) -> Tensor | None:
    """(K, m, ...) with class c's rows in slot c, or None when classes differ in size."""
    counts = torch.bincount(y, minlength=num_classes)
    m = x.shape[0] // num_classes
    if x.shape[0] != m * num_classes or bool((counts != m).any()):
        return None
    order = torch.argsort(y, stable=True)
    return x[order].reshape(num_classes, m, *x.shape[1:])


def _loop_gradients(
    net: nn.Module, x: Tensor, y: Tensor, num_classes: int, create_graph: bool, first: int = 0
) -> list[Tensor]:
    """The reference: one forward and one backward per class."""
    params = list(matched_parameters(net).values())
    order = torch.argsort(y, stable=True)
    counts = torch.bincount(y - first, minlength=num_classes).tolist()  # one host sync
    per_class: list[list[Tensor]] = []
    with torch.enable_grad():
        for c, xc in enumerate(torch.split(x[order], counts), start=first):
            target = torch.full((xc.shape[0],), c, dtype=torch.long, device=x.device)
            loss = F.cross_entropy(net(xc), target)
            grads = torch.autograd.grad(loss, params, create_graph=create_graph)
            per_class.append([g if create_graph else g.detach() for g in grads])
    return [torch.stack(gs) for gs in zip(*per_class, strict=True)]


def _vmap_gradients(
    net: nn.Module, grouped: Tensor, create_graph: bool, first: int = 0
) -> list[Tensor]:
    """All classes at once: vmap over classes of the gradient of a functional network.

    The network's own tensors enter detached, so a graph (when kept) reaches the inputs only.
    """
    matched = {n: p.detach() for n, p in matched_parameters(net).items()}
    fixed = {n: p.detach() for n, p in net.named_parameters() if n not in matched}
    fixed.update(dict(net.named_buffers()))

    def class_loss(weights: dict[str, Tensor], xc: Tensor, c: Tensor) -> Tensor:
        logits = functional_call(net, {**weights, **fixed}, (xc,))
        return F.cross_entropy(logits, c.expand(xc.shape[0]))

    per_class = vmap(grad(class_loss), in_dims=(None, 0, 0))
    k = grouped.shape[0]
    classes = torch.arange(first, first + k, device=grouped.device)
    with torch.set_grad_enabled(create_graph):
        per_name = per_class(matched, grouped, classes)
    return [per_name[name] for name in matched]


def class_gradients(
    net: nn.Module,
    x: Tensor,
    y: Tensor,
    num_classes: int,
    *,
    create_graph: bool = False,
    mode: str = "vmap",
    first_class: int = 0,
) -> list[Tensor]:
    """Per-class gradients of CE(net(x_c), c) for the matched parameters, each (K, *shape).

    Rows may come in any order; every class needs at least one row. `create_graph` keeps the
    graph to `x` (the synthetic side). Mode "vmap" computes all classes in one vectorised pass
    where the maths allows: rows must not interact (no BatchNorm
    in training mode) and classes must have equal row counts; otherwise, or with mode "loop",
    one backward pass per class. `first_class`: the rows hold classes first_class ..
    first_class + num_classes - 1 only (a slice of the classes; targets keep their labels).
    """
    if mode not in GRADIENT_MODES:
        raise ValueError(f"gradient mode must be one of {GRADIENT_MODES}, got {mode!r}")
    if mode == "vmap" and not has_batch_coupling(net):
        grouped = _group_by_class(x, y - first_class, num_classes)
        if grouped is not None:
            return _vmap_gradients(net, grouped, create_graph, first_class)
    return _loop_gradients(net, x, y, num_classes, create_graph, first_class)


def class_distances(
    net: nn.Module,
    real: Tensor,
    real_labels: Tensor,
    syn: Tensor,
    syn_labels: Tensor,
    num_classes: int,
    *,
    real_mode: str = "vmap",
    syn_mode: str = "vmap",
    create_graph: bool = True,
    first_class: int = 0,
) -> Tensor:
    """The matching distance D(g_S,c, g_R,c) of classes first_class .. first_class + num_classes
    - 1, shape (num_classes,): the real rows' gradients without a graph, the synthetic rows'
    with their graph to `syn` (`create_graph`), each by `class_gradients` in its mode."""
    with torch.no_grad():
        g_real = class_gradients(
            net, real, real_labels, num_classes, mode=real_mode, first_class=first_class
        )
    g_syn = class_gradients(
        net,
        syn,
        syn_labels,
        num_classes,
        create_graph=create_graph,
        mode=syn_mode,
        first_class=first_class,
    )
    return class_gradient_distance(g_syn, g_real)


def _class_rows(labels: Tensor, first: int, n: int, k: int) -> Tensor | slice:
    """The rows of classes first .. first + n - 1 (every row when that is all k classes)."""
    if first == 0 and n == k:
        return slice(None)
    return ((labels >= first) & (labels < first + n)).nonzero().squeeze(1)


# -- BatchNorm -------------------------------------------------------------------------------------
def batchnorm_layers(net: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def freeze_batchnorm(net: nn.Module, images: Tensor) -> None:
    """Set every BatchNorm layer's running statistics to those of `images` (one forward in train
    mode, cumulative average), then put the layers in eval mode so later forwards use them.

    Matching then normalises real and synthetic batches alike, and classes do not interact.
    (The reference takes one momentum-0.1 update instead of an exact estimate.)
    """
    layers = batchnorm_layers(net)
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    net(images)
    for m, momentum in zip(layers, momenta, strict=True):
        m.momentum = momentum
        m.eval()


# -- configuration ---------------------------------------------------------------------------------
def resolve_loops(cfg: Mapping[str, Any], ipc: int, name: str = "dc") -> tuple[int, int]:
    """(outer_loop, inner_loop): explicit values win, else the published mapping by IPC
    (`name`: the method's, for the error)."""
    outer, inner = cfg.get("outer_loop"), cfg.get("inner_loop")
    if outer is None or inner is None:
        loops = {int(k): v for k, v in dict(cfg.get("loops") or {}).items()}
        if ipc not in loops:
            raise ConfigError(
                f"method {name!r} has no published outer/inner loops for ipc={ipc} "
                f"(known: {sorted(loops)}); set method.outer_loop and method.inner_loop"
            )
        default_outer, default_inner = (int(v) for v in loops[ipc])
        outer = default_outer if outer is None else outer
        inner = default_inner if inner is None else inner
    outer, inner = int(outer), int(inner)
    if outer < 1 or inner < 0:
        raise ConfigError(f"need outer_loop >= 1 and inner_loop >= 0, got {outer}, {inner}")
    return outer, inner


# -- the methods -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DCSettings(MethodSettings):
    """Defaults are the paper's (conf/method/dc.yaml says where each comes from)."""

    lr_img: float = ranged(0.1, above=0)
    momentum: float = ranged(0.5, minimum=0)
    lr_net: float = ranged(0.01, above=0)
    batch_real: int = ranged(256, minimum=1)
    batch_train: int = ranged(256, minimum=1)
    bn_images_per_class: int = ranged(16, minimum=1)
    real_gradients: str = "vmap"
    syn_gradients: str = "vmap"
    #: Classes matched per pass (None or 0: as many as `runtime.memory_budget` allows; each
    #: pass's distance is backpropagated before the next, so only one pass's graph is held).
    class_chunk: int | None = ranged(None, minimum=0)
    #: {ipc: [outer_loop, inner_loop]} as published; explicit loops below override it.
    loops: Any = None
    outer_loop: int | None = None
    inner_loop: int | None = None

    def check(self) -> None:
        for key in ("real_gradients", "syn_gradients"):
            mode = getattr(self, key)
            if mode not in GRADIENT_MODES:
                raise ConfigError(f"method.{key} must be one of {GRADIENT_MODES}, got {mode!r}")


class DatasetCondensation(Method):
    """DC. Uses the context's augmentation in matching (Siamese) and inner loop (per sample)
    when one is given (`method.dsa: true`); `dc.yaml` gives none."""

    name = "dc"
    smoke_overrides = ("method.batch_real=16", "method.outer_loop=2", "method.inner_loop=1")
    Settings = DCSettings
    #: A class's distance needs only its rows, so a rank matches its own classes; the inner
    #: loop trains on the whole set, gathered from the ranks after every matching step, so
    #: every rank trains the same network from the same draws.
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
        """The matching distance D(g_X,c, g_X',c) per class, shape (K,), by `class_distances`
        one class at a time (the reference's loop; 0 for a class without rows), without graphs.
        DSA (`requires_augment`) first applies one Siamese draw of `augment` (from `generator`)
        to both batches alike, as its matching does; DC matches without one."""
        del budget  # one class at a time
        if cls.requires_augment:
            if augment is None or not augment.enabled:
                raise ConfigError(f"the {cls.name!r} distance needs an enabled DSA augmentation")
            params = augment.sample(num_classes, generator, tuple(x.shape[-2:]), x.device)
            x, x_other = augment.apply(x, params, labels), augment.apply(x_other, params, labels)
        out = torch.zeros(num_classes, device=x.device)
        for c in range(num_classes):
            rows = labels == c
            if rows.any():
                out[c] = class_distances(
                    net,
                    x[rows],
                    labels[rows],
                    x_other[rows],
                    labels[rows],
                    1,
                    real_mode="loop",
                    syn_mode="loop",
                    create_graph=False,
                    first_class=c,
                )[0]
        return out

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        augment = ctx.augment
        if self.requires_augment and (augment is None or not augment.enabled):
            raise ConfigError(
                f"method {self.name!r} needs DSA: set method.dsa=true and a dsa.strategy"
            )
        self.augment = augment if augment is not None and augment.enabled else None
        s = self.settings
        self.optimiser = self.image_optimiser(s.lr_img, s.momentum)
        self.outer_loop, self.inner_loop = resolve_loops(self.cfg, self.synthetic.ipc, self.name)
        self.batch_real = self.real_per_class(s.batch_real)
        self.batch_train = s.batch_train
        self.lr_net = s.lr_net
        self.bn_images = self.real_per_class(s.bn_images_per_class)
        self.real_mode, self.syn_mode = s.real_gradients, s.syn_gradients
        self.class_chunk = s.class_chunk or None
        self.memory_budget = Runtime.of(ctx.runtime, self.data.device).memory_budget

    def class_chunk_size(self, net: nn.Module, real: Tensor, syn: Tensor, k: int) -> int | None:
        """Classes matched per pass: `class_chunk` when set, else as many as the memory budget
        holds (None: all). Per class a pass holds the real rows' activations and their
        gradients, the synthetic rows' activations differentiated twice, and a few copies of the
        matched gradients (whose classifier rows grow with the number of classes)."""
        if self.class_chunk or self.memory_budget <= 0:
            return self.class_chunk
        gradient_bytes = sum(p.numel() * p.element_size() for p in matched_parameters(net).values())
        # The loop takes the real side one class at a time, whatever the chunk.
        real_rows = 0 if self.real_mode == "loop" else max(real.shape[0] // k, 1)
        per_class = (
            BACKWARD_FACTOR * bytes_per_row(net, real) * real_rows
            + DOUBLE_BACKWARD_FACTOR * bytes_per_row(net, syn) * max(syn.shape[0] // k, 1)
            + GRADIENT_COPIES * gradient_bytes
        )
        chunk = max(1, self.memory_budget // per_class)
        return None if chunk >= k else chunk

    # -- one round of matching -----------------------------------------------------------------
    def match(self, net: nn.Module) -> Tensor:
        """One round: L = sum_c D(g_S,c, g_R,c) for one network, real batch and Siamese draw,
        backpropagated into the synthetic set's parameters; returns L, detached.

        Classes go through in chunks under the memory budget, and each chunk's distance is
        backpropagated before the next chunk's graph is built, so a round holds one chunk's
        graph rather than every class's. The chunks' image gradients meet on a detached copy of
        the synthetic batch; one backward then carries their sum through the augmentation and
        the add-on transforms. Classes never share synthetic rows, so this is the one-pass
        gradient (up to the order of float sums inside a vectorised pass).
        """
        k = self.synthetic.num_classes
        mine = self.own_classes  # all of them in one process
        real, real_labels = self.sample_own_classes(self.batch_real)
        syn, syn_labels = self.synthetic.batch(self.own_rows)
        real, syn = self.siamese_augment(real, real_labels, syn, syn_labels, k)
        leaf = syn.detach().requires_grad_(True)
        step = self.class_chunk_size(net, real, syn, len(mine)) or k
        total = syn.new_zeros(())
        for first in range(mine.start, mine.stop, step):
            n = min(step, mine.stop - first)
            real_rows = _class_rows(real_labels, first, n, k)
            syn_rows = _class_rows(syn_labels, first, n, k)
            loss = class_distances(
                net,
                real[real_rows],
                real_labels[real_rows],
                leaf[syn_rows],
                syn_labels[syn_rows],
                n,
                real_mode=self.real_mode,
                syn_mode=self.syn_mode,
                first_class=first,
            ).sum()
            loss.backward(inputs=[leaf])
            total = total + loss.detach()
        if leaf.grad is not None and syn.requires_grad:
            syn.backward(leaf.grad, inputs=list(self.synthetic.parameters()))
        return total

    def prepare_network(self, net: nn.Module) -> None:
        """Before matching: BatchNorm layers get running statistics of real data, then freeze."""
        if batchnorm_layers(net):
            images, _ = self.data.sample_per_class(self.bn_images, self.generator)
            freeze_batchnorm(net, images)

    # -- the inner loop ------------------------------------------------------------------------
    def train_network(self, net: nn.Module, optimiser: torch.optim.Optimizer) -> None:
        """`inner_loop` epochs on the detached synthetic set; batches come through
        `SyntheticSet.batch`, so add-on transforms (FYI) apply here too."""
        net.train()
        n = self.synthetic.images.shape[0]
        device = self.synthetic.device
        for _ in range(self.inner_loop):
            order = torch.randperm(n, generator=self.generator).to(device)
            for start in range(0, n, self.batch_train):
                with torch.no_grad():
                    x, y = self.synthetic.batch(order[start : start + self.batch_train])
                x = x.detach()
                if self.augment is not None:
                    x = self.augment(x, self.generator)
                loss = F.cross_entropy(net(x), y)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()

    def step(self, iteration: int) -> dict[str, Tensor]:
        net = self.ctx.networks(self.generator)
        net.train()
        net_optimiser = torch.optim.SGD(net.parameters(), lr=self.lr_net)
        losses = []
        for round_ in range(self.outer_loop):
            self.prepare_network(net)
            self.optimiser.zero_grad(set_to_none=True)
            loss = self.match(net)
            self.optimiser.step()
            losses.append(loss.detach())
            if round_ < self.outer_loop - 1:
                self.sync_images()  # the inner loop trains on every class's rows
                self.train_network(net, net_optimiser)
        # As the reference logs it: the mean distance per class and round.
        return {"loss": torch.stack(losses).mean() / self.synthetic.num_classes}


class SiameseGradientMatching(DatasetCondensation):
    """DSA: DC with one Siamese DSA draw per class in matching, per-sample DSA in the inner loop."""

    name = "dsa"
    requires_augment = True
