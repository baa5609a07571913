"""Train several evaluation models at once: stacked parameters, one vmapped forward/backward.

`train_stacked` gives every model exactly what `protocol.train_network` would give it when the
models are trained one after another from one generator: the same initial weights, the same
epoch permutations and the same per-sample DSA draws. Model m's generator state is recovered by
replaying model m-1's draws (network init, then per epoch one permutation and one DSA draw per
mini-batch) without training, so the draws match the sequential order exactly and the caller's
generator ends where the sequential loop would leave it.

The networks' parameters (and buffers) are stacked along a new leading dimension and run through
`torch.func.functional_call` under `torch.func.vmap`, which turns each layer into one batched
kernel (convolutions become one grouped convolution). Each model's loss is its own batch mean and
the summed loss gives each model exactly its own gradient; SGD with momentum and weight decay is
elementwise, so one optimiser over the stacked tensors updates every model as its own optimiser
would. Results equal sequential training up to floating-point rounding: a grouped convolution
and a batched matmul may sum in another order than the per-model kernels, and such last-bit
differences can grow over many epochs of training (tests compare per-model accuracies).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from distillkit.augment import DSA
from distillkit.errors import ConfigError
from distillkit.networks import NetworkFactory

#: Most models trained in one stack (bounds the activation memory: M times one model's).
MAX_STACK = 10


def supports_stacking(net: nn.Module) -> bool:
    """True when `net` can be trained stacked. Every network of distillkit's zoo can (convs,
    norms, BatchNorm's running statistics as stacked buffers, linear layers); dropout cannot
    (vmap would need per-model randomness, which would not match sequential draws)."""
    return all(not isinstance(m, nn.modules.dropout._DropoutNd) for m in net.modules())


def stacking_requested(setting: bool | str, device: torch.device) -> bool:
    """Whether `eval.stacked` (true | false | auto) asks for stacking on `device`.

    auto: on CUDA (many tiny kernels become few). Not on CPU: there the work is compute-bound
    and oneDNN's grouped-convolution backward is slower than M plain ones, so stacking measured
    0.93-0.99x of sequential on a quiet 2-core CPU (0.87-1.43x under load; benchmarks/README.md),
    and sequential keeps CPU results bit-identical to earlier runs. `true` stacks on any device.
    """
    if setting is False or setting is True:
        return setting
    if str(setting).lower() != "auto":
        raise ConfigError(f"eval.stacked must be true, false or auto, got {setting!r}")
    return torch.device(device).type == "cuda"


def use_stacked(net: nn.Module, setting: bool | str, device: torch.device) -> bool:
    """Whether `eval.stacked` stacks models like `net` on `device` (requested and supported)."""
    return stacking_requested(setting, device) and supports_stacking(net)


def _clone(generator: torch.Generator) -> torch.Generator:
    copy = torch.Generator(device=generator.device)
    copy.set_state(generator.get_state())
    return copy


def _epoch_draws(
    n: int,
    batch_size: int,
    augment: DSA | None,
    generator: torch.Generator,
    image_size: tuple[int, int],
) -> Tensor:
    """Advance `generator` through one epoch's draws of `train_network` (nothing is trained)."""
    order = torch.randperm(n, generator=generator)
    if augment is not None and augment.enabled:
        for start in range(0, n, batch_size):
            augment.sample(min(batch_size, n - start), generator, image_size)
    return order


_ELEMENTWISE = (
    nn.Identity, nn.ReLU, nn.Sigmoid, nn.LeakyReLU, nn.SiLU, nn.GELU, nn.AvgPool2d, nn.MaxPool2d,
)  # fmt: skip
_GROUPED_LEAVES = (nn.Conv2d, nn.GroupNorm, nn.BatchNorm2d, *_ELEMENTWISE)


def _grouped_layers(net: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """The feature layers of `net` in order, when every one has a channel-grouped form."""
    if not getattr(type(net), "flat_features", False):
        return None
    leaves = [
        (f"features.{n}.", m) for n, m in net.features.named_modules() if not list(m.children())
    ]
    if not all(isinstance(m, _GROUPED_LEAVES) for _, m in leaves):
        return None
    return leaves


class StackedModels:
    """M networks of one architecture held as stacked parameters, called as one function.

    ConvNet, AlexNet and VGG11 run channel-grouped: the M models' activations live side by side
    as (B, M*C, H, W), every convolution is one grouped convolution, every norm one call with
    M times the groups, pools and activations act on the wide tensor directly, and the
    classifier is one batched matmul; no layout changes between layers. Other networks run
    through `torch.func.vmap` over `functional_call`.
    """

    def __init__(self, nets: Sequence[nn.Module]) -> None:
        if not nets:
            raise ValueError("need at least one network to stack")
        self.template = nets[0]
        self.num_models = len(nets)
        params, buffers = stack_module_state(list(nets))
        self.params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        self.buffers = {k: v.detach() for k, v in buffers.items()}

        def one(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor) -> Tensor:
            return functional_call(self.template, (p, b), (x,))

        self._per_model_inputs = vmap(one, in_dims=(0, 0, 0))
        self._shared_input = vmap(one, in_dims=(0, 0, None))
        self.layers = _grouped_layers(self.template)

    def _grouped(self, h: Tensor, shared: bool) -> Tensor:
        """Channel-grouped forward; h is (B, C, H, W) when shared, else (B, M*C, H, W)."""
        m, p, b = self.num_models, self.params, self.buffers
        training = self.template.training
        for prefix, layer in self.layers or ():
            if isinstance(layer, nn.Conv2d):
                weight = p[prefix + "weight"]
                bias = p.get(prefix + "bias")
                h = F.conv2d(
                    h,
                    weight.flatten(0, 1),
                    None if bias is None else bias.flatten(),
                    layer.stride,
                    layer.padding,
                    layer.dilation,
                    1 if shared else m,
                )
                shared = False
            elif isinstance(layer, nn.GroupNorm):
                h = F.group_norm(
                    h,
                    m * layer.num_groups,
                    p[prefix + "weight"].flatten() if layer.affine else None,
                    p[prefix + "bias"].flatten() if layer.affine else None,
                    layer.eps,
                )
            elif isinstance(layer, nn.BatchNorm2d):
                running = layer.track_running_stats
                use_batch = training or not running
                if running and training:
                    b[prefix + "num_batches_tracked"].add_(1)
                h = F.batch_norm(
                    h,
                    b[prefix + "running_mean"].view(-1) if running else None,
                    b[prefix + "running_var"].view(-1) if running else None,
                    p[prefix + "weight"].flatten() if layer.affine else None,
                    p[prefix + "bias"].flatten() if layer.affine else None,
                    use_batch,
                    layer.momentum if layer.momentum is not None else 0.0,
                    layer.eps,
                )
            else:
                h = layer(h)
        features = h.reshape(h.shape[0], m, -1).transpose(0, 1)  # (M, B, D)
        weight, bias = p["classifier.weight"], p["classifier.bias"]
        return torch.baddbmm(bias.unsqueeze(1), features, weight.transpose(1, 2))

    def train(self, mode: bool = True) -> StackedModels:
        self.template.train(mode)
        return self

    def eval(self) -> StackedModels:
        return self.train(False)

    def __call__(self, x: Tensor) -> Tensor:
        """x (M, B, C, H, W), one batch per model -> logits (M, B, K)."""
        if self.layers is not None:
            return self._grouped(x.transpose(0, 1).flatten(1, 2), shared=False)
        return self._per_model_inputs(self.params, self.buffers, x)

    def shared(self, x: Tensor) -> Tensor:
        """x (B, C, H, W), the same batch for every model -> logits (M, B, K)."""
        if self.layers is not None:
            return self._grouped(x, shared=True)
        return self._shared_input(self.params, self.buffers, x)


def train_stacked(
    factory: NetworkFactory,
    images: Tensor,
    labels: Tensor,
    settings: object,
    augment: DSA | None,
    generator: torch.Generator,
    num_models: int,
    lr: float | None = None,
    autocast: Callable[[], object] | None = None,
) -> StackedModels:
    """`num_models` fresh networks trained together as `train_network` trains each one.

    `settings` is an `EvalSettings`; `autocast` an optional context factory for the forward pass
    (see `distillkit.runtime`).
    """
    n = images.shape[0]
    image_size = (int(images.shape[-2]), int(images.shape[-1]))
    batch_size = int(settings.batch_size)
    nets, gens = [], []
    for _ in range(num_models):
        nets.append(factory(generator))
        gens.append(_clone(generator))  # this model's training draws start here
        for _ in range(settings.schedule()[0]):  # replay them to reach the next model's start
            _epoch_draws(n, batch_size, augment, generator, image_size)
    models = StackedModels(nets).train()
    del nets
    base_lr = settings.lr if lr is None else float(lr)
    optimiser = torch.optim.SGD(
        list(models.params.values()),
        lr=base_lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
    )
    epochs, decay_epoch = settings.schedule()
    augmenting = augment is not None and augment.enabled
    for epoch in range(epochs):
        if epoch == decay_epoch and epoch > 0:
            for group in optimiser.param_groups:
                group["lr"] = base_lr * 0.1
        orders = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(images.device)
        for start in range(0, n, batch_size):
            rows = orders[:, start : start + batch_size]  # (M, B)
            x, y = images[rows], labels[rows]
            if augmenting:
                x = torch.stack([augment(x[m], g) for m, g in enumerate(gens)])
            with autocast() if autocast is not None else _null():
                logits = models(x)
            per_model = F.cross_entropy(
                logits.flatten(0, 1).float(), y.flatten(), reduction="none"
            ).view(y.shape)
            loss = per_model.mean(1).sum()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    return models


@torch.no_grad()
def stacked_accuracies(
    models: StackedModels,
    images: Tensor,
    labels: Tensor,
    batch_size: int,
    autocast: Callable[[], object] | None = None,
) -> list[float]:
    """Top-1 accuracy in percent of every stacked model (one host sync at the end).

    Chunks hold `batch_size // M` test images, so the activations are as large as one model's
    at `batch_size`.
    """
    models.eval()
    chunk = max(1, batch_size // models.num_models)
    correct = torch.zeros(models.num_models, dtype=torch.long, device=images.device)
    for start in range(0, images.shape[0], chunk):
        with autocast() if autocast is not None else _null():
            logits = models.shared(images[start : start + chunk])
        correct += (logits.argmax(-1) == labels[start : start + chunk]).sum(1)
    return [100.0 * c / images.shape[0] for c in correct.tolist()]


def train_and_test_stacked(
    factory: NetworkFactory,
    images: Tensor,
    labels: Tensor,
    test_images: Tensor,
    test_labels: Tensor,
    settings: object,
    augment: DSA | None,
    generator: torch.Generator,
    num_models: int,
    lr: float | None = None,
    autocast: Callable[[], object] | None = None,
) -> list[float]:
    """Final test accuracies of `num_models` networks trained together (see `train_stacked`)."""
    models = train_stacked(
        factory, images, labels, settings, augment, generator, num_models, lr, autocast
    )
    return stacked_accuracies(
        models, test_images, test_labels, int(settings.test_batch_size), autocast
    )


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
