"""Train fresh networks on a synthetic set only, test them on the real test set.

Published protocol (methods.md): SGD momentum 0.9, wd 5e-4, lr 0.01, batch 256, E epochs with
per-sample DSA, lr x 0.1 once at E/2, accuracy of the final epoch, mean +- std over models.
IDC's protocol adds CutMix (`cutmix_p`, `cutmix_beta`) and a two-step schedule (`lr_milestones`,
`lr_gamma`); a wrapping optimiser with `set_closure` (GSAM, for FTD's experts) takes its steps.
`evaluate_in_turn` trains each model on several sets one after another (FTD's reference quirk).
`labels=soft` trains on a teacher's logits for each augmented batch instead (DD-Ranking's
soft-label evaluation, `soft_labels.py`); `labels=hard`, the default, is the published protocol.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillkit.augment import DSA
from distillkit.distributed import World, spread_blocks
from distillkit.errors import ConfigError
from distillkit.evaluation import soft_labels
from distillkit.evaluation.stacked import (
    MAX_STACK,
    stacking_requested,
    supports_stacking,
    train_and_test_stacked,
)
from distillkit.keys import check_keys
from distillkit.networks import NetworkFactory
from distillkit.progress import progress_bar


@dataclass(frozen=True)
class EvalSettings:
    models: tuple[str, ...] = ("ConvNet",)
    num_models: int = 5
    epochs: int = 1000
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    lr_decay_at: float = 0.5
    dsa: bool = True
    test_batch_size: int = 1024
    #: Train an architecture's models together (channel-grouped, or torch.func.vmap): same
    #: draws as one after another, same accuracies up to float rounding (`stacked.py`).
    #: True, False, or "auto" (`stacked.stacking_requested`: on CUDA, not on CPU).
    stacked: bool | str = False
    #: The references' schedule: range(epochs + 1) epochs, lr x 0.1 after epoch epochs//2 + 1
    #: (DatasetCondensation / mtt-distillation utils.py evaluate_synset). False: `epochs` epochs,
    #: decay at the start of epoch int(epochs * lr_decay_at) (pools and experts).
    extra_epoch: bool = False

    def schedule(self) -> tuple[int, int]:
        """(epochs trained, the epoch at whose start the lr drops x0.1)."""
        decay = int(self.epochs * self.lr_decay_at)
        if self.extra_epoch:
            return self.epochs + 1, decay + 2
        return self.epochs, decay

    #: Fractions of the epochs at which lr is multiplied by `lr_gamma` (IDC: 2/3 and 5/6, x0.2);
    #: empty: once at `lr_decay_at`.
    lr_milestones: tuple[float, ...] = ()
    lr_gamma: float = 0.1
    #: CutMix (IDC's evaluation): with probability `cutmix_p` per batch, a box of area about
    #: 1 - lam (lam ~ Beta(beta, beta)) is pasted from a shuffled batch; 0 = off.
    cutmix_p: float = 0.0
    cutmix_beta: float = 1.0
    #: How evaluation models are augmented (read by distillkit.assembly.evaluation_augment):
    #: dsa (per-sample DSA when `dsa`), dc (DC's get_daparam) or none; `always_flip` (FYI's
    #: flip-first), `dsa_strategy` / `dsa_mode` in place of the run's `dsa` block's.
    augment: str = "dsa"
    always_flip: bool = False
    dsa_strategy: str | None = None
    dsa_mode: str | None = None
    #: Iterations of distillation at which to also evaluate (the trainer's schedule).
    at: tuple[int, ...] = ()
    #: What the evaluation models learn from (soft_labels.py): hard (the set's class indices,
    #: the published protocol) or soft (a teacher's logits on every augmented batch, DD-Ranking's
    #: soft-label evaluation); the fields below matter only for soft.
    labels: str = "hard"
    #: kl (KL divergence of the T-softened distributions) or sce (soft cross-entropy).
    soft_loss: str = "kl"
    #: T > 0, dividing both sides' logits; `soft_scale` multiplies the loss by T^2.
    temperature: float = 1.0
    soft_scale: bool = True
    #: "train" (one network of the evaluation architecture trained on the whole real training
    #: split for `teacher_epochs` epochs) or the path of a saved state_dict ({model}: the
    #: architecture's name).
    teacher: str = soft_labels.TRAIN
    teacher_epochs: int = 200
    #: DD-Ranking's label- and augmentation-robust scores after the final evaluation
    #: (`fair_scores.py`): the random real subset of the same IPC under the same protocols and
    #: model seeds, the protocol without augmentation, hard labels, and the full real data.
    scores: bool = False
    #: Directory of the cached full-data accuracies (None: $XDG_CACHE_HOME/distillkit/full_data,
    #: else ~/.cache/distillkit/full_data); a cached file is read, never silently retrained.
    scores_cache: str | None = None
    #: Train the full-data model again and replace its cache file.
    scores_recompute: bool = False
    #: Epochs of the full-data model (DD-Ranking's CIFAR-10 ConvNet-3 recipe: 200, lr x0.1 at
    #: 100); the dataset's train_limit bounds its images.
    scores_full_epochs: int = 200
    #: lrs for the random subset, chosen by accuracy on `dataset.validation` (never on test);
    #: empty: the synthetic set's own evaluation lr for both sides.
    scores_lr_grid: tuple[float, ...] = ()
    #: DD-Ranking's lrs_lambda (weight of IOR against HLR) and ars_lambda (weight of the
    #: with-augmentation difference), both 0.5 there.
    scores_weight: float = 0.5
    scores_gamma: float = 0.5

    def __post_init__(self) -> None:
        """Bad soft-label and score options are a ConfigError at construction (one line each)."""
        object.__setattr__(self, "temperature", soft_labels.check_settings(self))
        self._check_scores()

    def _check_scores(self) -> None:
        """Range checks of the `scores*` fields; the lr grid is stored as a tuple of floats."""
        for key in ("scores", "scores_recompute"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"eval.{key} must be true or false, got {getattr(self, key)!r}")
        cache = self.scores_cache
        if cache is not None and (not isinstance(cache, str) or not cache.strip()):
            raise ConfigError(f"eval.scores_cache must be a directory path or null, got {cache!r}")
        epochs = self.scores_full_epochs
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ConfigError(f"eval.scores_full_epochs must be a positive integer, got {epochs!r}")
        grid = self.scores_lr_grid
        if isinstance(grid, str | bytes) or not isinstance(grid, Sequence):
            raise ConfigError(f"eval.scores_lr_grid must be a list of learning rates, got {grid!r}")
        for lr in grid:
            if isinstance(lr, bool) or not isinstance(lr, int | float) or not 0 < lr < math.inf:
                raise ConfigError(
                    f"eval.scores_lr_grid must hold finite learning rates > 0, got {lr!r}"
                )
        if len(set(grid)) != len(grid):
            raise ConfigError(f"eval.scores_lr_grid repeats a learning rate: {list(grid)!r}")
        object.__setattr__(self, "scores_lr_grid", tuple(float(lr) for lr in grid))
        for key in ("scores_weight", "scores_gamma"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ConfigError(f"eval.{key} must be a number in [0, 1], got {value!r}")
            object.__setattr__(self, key, float(value))
        if self.scores and self.num_models < 1:
            raise ConfigError("eval.scores needs eval.num_models >= 1 (scores compare evaluations)")

    @property
    def needs_plain_loop(self) -> bool:
        """Options only `train_network` implements (the stacked trainer does not)."""
        return self.cutmix_p > 0 or bool(self.lr_milestones) or self.labels == "soft"

    def lr_factor(self, epoch: int) -> float:
        """The multiple of the base lr used in (0-based) `epoch`."""
        if self.lr_milestones:
            passed = sum(epoch >= int(self.epochs * m) for m in self.lr_milestones)
            return self.lr_gamma**passed
        _, decay_epoch = self.schedule()
        return self.lr_gamma if epoch >= decay_epoch > 0 else 1.0

    @classmethod
    def keys(cls) -> frozenset[str]:
        """The keys of a run's `eval` block: the fields."""
        return frozenset(f.name for f in fields(cls))

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> EvalSettings:
        """The `eval` block; a key that names no field is a ConfigError (did you mean ...)."""
        known = {f.name for f in fields(cls)}
        check_keys(cfg, "eval", known)
        values = {k: v for k, v in dict(cfg).items() if k in known}
        if "at" in values:
            values["at"] = tuple(int(i) for i in values["at"] or ())
        if "models" in values:
            values["models"] = tuple(str(m) for m in values["models"])
        if "lr_milestones" in values:
            values["lr_milestones"] = tuple(float(m) for m in values["lr_milestones"] or ())
        if values.get("scores_lr_grid") is None:
            values.pop("scores_lr_grid", None)
        elif isinstance(values["scores_lr_grid"], Sequence) and not isinstance(
            values["scores_lr_grid"], str
        ):
            values["scores_lr_grid"] = tuple(values["scores_lr_grid"])
        return cls(**values)


@torch.no_grad()
def test_accuracy(net: nn.Module, images: Tensor, labels: Tensor, batch_size: int) -> float:
    """Top-1 accuracy in percent; one host sync at the end."""
    net.eval()
    correct = torch.zeros((), dtype=torch.long, device=images.device)
    for start in range(0, images.shape[0], batch_size):
        logits = net(images[start : start + batch_size])
        correct += (logits.argmax(1) == labels[start : start + batch_size]).sum()
    return 100.0 * correct.item() / images.shape[0]


def cutmix(
    x: Tensor, y: Tensor, beta: float, generator: torch.Generator
) -> tuple[Tensor, Tensor, float]:
    """CutMix as IDC's reference applies it: a box of side ~sqrt(1 - lam) around a uniform
    centre, copied from a shuffled batch; returns (mixed x, the pasted rows' labels, the kept
    area fraction). Every draw comes from `generator`."""
    h, w = x.shape[-2:]
    seed = int(torch.randint(2**62, (1,), generator=generator))
    lam = float(np.random.default_rng(seed).beta(beta, beta))
    index = torch.randperm(x.shape[0], generator=generator).to(x.device)
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = (int(torch.randint(s, (1,), generator=generator)) for s in (h, w))
    y1, y2 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x1, x2 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    mixed = x.clone()
    mixed[..., y1:y2, x1:x2] = x[index][..., y1:y2, x1:x2]
    return mixed, y[index], 1.0 - (y2 - y1) * (x2 - x1) / (h * w)


def batch_loss(
    net: nn.Module,
    x: Tensor,
    y: Tensor,
    settings: EvalSettings,
    generator: torch.Generator,
    teacher: nn.Module | None = None,
) -> Tensor:
    """Cross-entropy of one training batch, CutMix-ed with probability `settings.cutmix_p`.

    With a `teacher`, the soft-label loss against its logits on the (mixed) batch instead: the
    teacher relabels the image the student sees, so CutMix needs no label mixing."""
    if settings.cutmix_p > 0 and float(torch.rand((), generator=generator)) < settings.cutmix_p:
        x, y_b, ratio = cutmix(x, y, settings.cutmix_beta, generator)
        if teacher is not None:
            return soft_labels.batch_soft_loss(net, teacher, x, settings)
        out = net(x)
        return F.cross_entropy(out, y) * ratio + F.cross_entropy(out, y_b) * (1.0 - ratio)
    if teacher is not None:
        return soft_labels.batch_soft_loss(net, teacher, x, settings)
    return F.cross_entropy(net(x), y)


def train_network(
    factory: NetworkFactory,
    images: Tensor,
    labels: Tensor,
    settings: EvalSettings,
    augment: DSA | None,
    generator: torch.Generator,
    lr: float | None = None,
    on_epoch: Callable[[int, nn.Module], None] | None = None,
    wrap_optimiser: Callable[[nn.Module, torch.optim.Optimizer], Any] | None = None,
    net: nn.Module | None = None,
    teacher: nn.Module | None = None,
) -> nn.Module:
    """A fresh network trained on (images, labels) with the protocol's optimiser and schedule.

    `on_epoch(done, net)` sees the network before training (done=0) and after every epoch, so
    expert trajectories reuse this loop; it must not draw from `generator`. `wrap_optimiser`
    turns the SGD optimiser into another one (FTD's GSAM experts); a wrapper with `set_closure`
    computes its own gradients (two passes for GSAM) on the same augmented batch. `net`: train
    this network further instead of a fresh one (trained in place and returned; nothing drawn
    for an initialisation), with a new optimiser and the whole schedule from its start.
    `teacher`: soft labels, its logits on each augmented batch (`settings.soft_loss`); it draws
    nothing from `generator`, so the data order and augmentation match a hard-label run's.
    """
    net = factory(generator) if net is None else net
    base_lr = settings.lr if lr is None else float(lr)
    optimiser: Any = torch.optim.SGD(
        net.parameters(),
        lr=base_lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
    )
    if wrap_optimiser is not None:
        optimiser = wrap_optimiser(net, optimiser)
    closure = hasattr(optimiser, "set_closure")
    if closure and teacher is not None:
        raise ValueError("soft-label training has no closure (GSAM) path")
    epochs, _ = settings.schedule()
    n = images.shape[0]
    net.train()
    if on_epoch is not None:
        on_epoch(0, net)
    for epoch in range(epochs):
        factor = settings.lr_factor(epoch)
        if factor != 1.0:
            for group in optimiser.param_groups:
                group["lr"] = base_lr * factor
        order = torch.randperm(n, generator=generator).to(images.device)
        for start in range(0, n, settings.batch_size):
            rows = order[start : start + settings.batch_size]
            x, y = images[rows], labels[rows]
            if augment is not None and augment.enabled:
                x = augment(x, generator)
            if closure:
                optimiser.set_closure(F.cross_entropy, x, y)
                optimiser.step()
                continue
            loss = batch_loss(net, x, y, settings, generator, teacher)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        if on_epoch is not None:
            on_epoch(epoch + 1, net)
    return net


def train_and_test(
    factory: NetworkFactory,
    images: Tensor,
    labels: Tensor,
    test_images: Tensor,
    test_labels: Tensor,
    settings: EvalSettings,
    augment: DSA | None,
    generator: torch.Generator,
    lr: float | None = None,
    teacher: nn.Module | None = None,
) -> float:
    """One fresh network trained on (images, labels) for `settings.epochs`; final test accuracy."""
    net = train_network(factory, images, labels, settings, augment, generator, lr, teacher=teacher)
    return test_accuracy(net, test_images, test_labels, settings.test_batch_size)


def summarise(accuracies: Sequence[float]) -> dict[str, Any]:
    mean = statistics.fmean(accuracies)
    std = statistics.pstdev(accuracies) if len(accuracies) > 1 else 0.0
    return {"mean": mean, "std": std, "runs": list(accuracies), "n": len(accuracies)}


def skip_model_draws(
    factory: NetworkFactory,
    n: int,
    settings: EvalSettings,
    augment: DSA | None,
    generator: torch.Generator,
    image_size: tuple[int, int],
) -> None:
    """Advance `generator` past every draw `train_network` makes for one model on `n` images
    (its initialisation, each epoch's permutation, each mini-batch's DSA and CutMix draws)
    without training it: how a rank that trains models i.. of a spread starts model i from the
    state the single-process loop gives it (`distributed.spread_blocks`)."""
    factory(generator)
    h, w = image_size
    for _ in range(settings.schedule()[0]):
        torch.randperm(n, generator=generator)
        for start in range(0, n, settings.batch_size):
            rows = min(settings.batch_size, n - start)
            if augment is not None and augment.enabled:
                augment.sample(rows, generator, image_size)
            if settings.cutmix_p <= 0:
                continue
            if float(torch.rand((), generator=generator)) < settings.cutmix_p:
                torch.randint(2**62, (1,), generator=generator)  # cutmix's draws, in its order
                torch.randperm(rows, generator=generator)
                torch.randint(h, (1,), generator=generator)
                torch.randint(w, (1,), generator=generator)


def evaluate_set(
    images: Tensor,
    labels: Tensor,
    data: Any,
    factory: NetworkFactory,
    settings: EvalSettings,
    augment: DSA | None,
    generator: torch.Generator,
    lr: float | None = None,
    progress: bool = True,
    desc: str = "evaluate",
    world: World | None = None,
) -> dict[str, dict[str, Any]]:
    """Every architecture in `settings.models`, `settings.num_models` fresh models each.

    Returns {architecture: {mean, std, runs, n}} with accuracies in percent. With a `world` of
    several ranks, each architecture's models are spread over them (`spread_blocks`: every
    model starts from its single-process draws, the accuracies are gathered in model order on
    every rank, the generator ends where the single-process loop leaves it); an augmentation
    whose draws cannot be replayed (not DSA) keeps every model on every rank.
    """
    images, labels = images.detach(), labels.detach()
    world = world or World.single()
    stacked = (
        settings.num_models > 1
        and not settings.needs_plain_loop
        and stacking_requested(settings.stacked, images.device)
    )
    results: dict[str, dict[str, Any]] = {}
    plan = [(name, factory.for_architecture(name)) for name in settings.models]
    plan_augments = [_augment_for(augment, arch) for _, arch in plan]
    # Models are spread over the ranks only where the augmentation's draws can be replayed.
    spreads = [world if isinstance(a, DSA | None) else World.single() for a in plan_augments]
    total = sum(len(spread.shard(settings.num_models)) for spread in spreads)
    bar = progress_bar(total=total, desc=desc, disable=not progress, leave=False, unit="model")
    for (name, arch), model_augment, spread in zip(plan, plan_augments, spreads, strict=True):
        teacher = _teacher_for(arch, data, settings)
        # A throwaway network from its own generator: nothing is drawn from the run's streams.
        stack = (
            stacked
            and isinstance(model_augment, DSA | None)
            and supports_stacking(arch(torch.Generator().manual_seed(0)))
        )

        def run_block(models: range, arch=arch, model_augment=model_augment, teacher=teacher,
                      stack=stack, name=name) -> list[float]:  # fmt: skip
            accuracies: list[float] = []
            if stack:
                for start in range(0, len(models), MAX_STACK):
                    group = min(MAX_STACK, len(models) - start)
                    accuracies += train_and_test_stacked(
                        arch, images, labels, data.test_images, data.test_labels, settings,
                        model_augment, generator, group, lr,
                    )  # fmt: skip
                    bar.update(group)
                    bar.set_postfix({name: f"{accuracies[-1]:.1f}%"}, refresh=False)
            for _ in range(len(models) - len(accuracies)):
                acc = train_and_test(
                    arch, images, labels, data.test_images, data.test_labels, settings,
                    model_augment, generator, lr, teacher,
                )  # fmt: skip
                accuracies.append(acc)
                bar.update(1)
                bar.set_postfix({name: f"{acc:.1f}%"}, refresh=False)
            return accuracies

        def skip(i: int, arch=arch, model_augment=model_augment) -> None:
            del i
            skip_model_draws(
                arch, images.shape[0], settings, model_augment, generator,
                tuple(images.shape[-2:]),
            )  # fmt: skip

        accuracies = spread_blocks(spread, run_block, settings.num_models, skip)
        _check_finite(name, accuracies)
        results[name] = summarise(accuracies)
    bar.close()
    return results


def evaluate_in_turn(
    sets: Sequence[tuple[Tensor, Tensor]],
    data: Any,
    factory: NetworkFactory,
    settings: EvalSettings,
    augment: DSA | None,
    generator: torch.Generator,
    lr: float | None = None,
    progress: bool = True,
    desc: str = "evaluate",
) -> list[dict[str, dict[str, Any]]]:
    """Each model trained on the sets in turn: a fresh network is trained on sets[0] and
    tested, then trained further on sets[1] (a new optimiser, the whole schedule again) and
    tested, and so on; one {architecture: {mean, std, runs, n}} per set, in order.

    FTD's reference evaluates its EMA images this way, on the network it has just trained on
    the raw images (FTD-distillation distill/distill_FTD.py ~223-242 with
    utils/utils_baseline.py evaluate_synset ~352-389). Models are trained one after another
    (never stacked); draws come from `generator` in that order.
    """
    sets = [(images.detach(), labels.detach()) for images, labels in sets]
    results: list[dict[str, dict[str, Any]]] = [{} for _ in sets]
    total = len(settings.models) * settings.num_models
    bar = progress_bar(total=total, desc=desc, disable=not progress, leave=False, unit="model")
    for name in settings.models:
        arch = factory.for_architecture(name)
        model_augment = _augment_for(augment, arch)
        teacher = _teacher_for(arch, data, settings)
        accuracies: list[list[float]] = [[] for _ in sets]
        for _ in range(settings.num_models):
            net = None
            for (images, labels), accs in zip(sets, accuracies, strict=True):
                net = train_network(
                    arch,
                    images,
                    labels,
                    settings,
                    model_augment,
                    generator,
                    lr,
                    net=net,
                    teacher=teacher,
                )
                accs.append(
                    test_accuracy(net, data.test_images, data.test_labels, settings.test_batch_size)
                )
            bar.update(1)
            bar.set_postfix({name: f"{accuracies[-1][-1]:.1f}%"}, refresh=False)
        for result, accs in zip(results, accuracies, strict=True):
            _check_finite(name, accs)
            result[name] = summarise(accs)
    bar.close()
    return results


def _teacher_for(arch: NetworkFactory, data: Any, settings: EvalSettings) -> nn.Module | None:
    """The soft-label teacher of one architecture (None for hard labels)."""
    if settings.labels != "soft":
        return None
    return soft_labels.teacher_for(arch, data, settings, train_network)


def _augment_for(augment: Any, arch: NetworkFactory) -> Any:
    """The evaluation augmentation for one architecture (DC's evaluation: a strategy per
    architecture, read from a throwaway network that draws nothing from the run's streams)."""
    if hasattr(augment, "for_network"):
        return augment.for_network(arch(torch.Generator().manual_seed(0)))
    return augment


def _check_finite(name: str, accuracies: Sequence[float]) -> None:
    if not all(math.isfinite(acc) for acc in accuracies):
        raise FloatingPointError(f"evaluation of {name} produced a non-finite accuracy")
