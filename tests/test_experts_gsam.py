"""distillkit's GSAM step for FTD's experts, against the reference FTD-distillation/gsam.py
(AngusDujw/FTD-distillation, buffer/gsam/gsam.py: `GSAM.step` with `perturb_weights`,
`gradient_decompose`, `unperturb`; called from buffer/buffer_FTD.py with a constant rho,
adaptive=True and the table's alpha, 1.0 in 6 of FTD's 8 cells).

pytorch-optimizer's GSAM refuses alpha >= 1; distillkit's takes it. Checked three ways: one step
against the formula written by hand (projection form), a few steps against a restatement of
FTD's gsam.py procedure (its order of operations, BatchNorm statistics frozen in the second
pass), and `distillkit-experts optimizer=gsam gsam.alpha=1.0` end to end on digits.
"""

from __future__ import annotations

import copy
import sys
import time

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from distillkit.evaluation.protocol import EvalSettings, train_network
from distillkit.experts import GSAM, ExpertBuffer, ExpertSettings, buffer_meta, gsam_wrapper
from distillkit.networks import NetworkFactory


# -- 1. one step against the formula --------------------------------------------------------------
def _grads(net: nn.Module, params: list[Tensor], x: Tensor, y: Tensor) -> list[Tensor]:
    names = [n for n, _ in net.named_parameters()]
    params = [p.detach().requires_grad_(True) for p in params]
    loss = F.cross_entropy(functional_call(net, dict(zip(names, params, strict=True)), (x,)), y)
    return list(torch.autograd.grad(loss, params))


def _dot(a: list[Tensor], b: list[Tensor]) -> Tensor:
    return sum((u * v).sum() for u, v in zip(a, b, strict=True))


def _gsam_by_hand(net, w, x, y, lr, rho, alpha, adaptive):
    """One GSAM step from the formula (Zhuang et al. 2022, as FTD's gsam.py computes it), written
    with the projection of g on g' rather than FTD's cosine:

    e = rho w^2 g / || |w| g || (adaptive) or rho g / ||g||;  g' = the gradient at w + e;
    g_perp = g - (<g, g'> / ||g'||^2) g';  w <- w - lr (g' - alpha g_perp).
    """
    g = _grads(net, w, x, y)
    if adaptive:
        weighted = [p.abs() * gi for p, gi in zip(w, g, strict=True)]
        scale = rho / _dot(weighted, weighted).sqrt()
        e = [p * p * gi * scale for p, gi in zip(w, g, strict=True)]
    else:
        e = [gi * (rho / _dot(g, g).sqrt()) for gi in g]
    g2 = _grads(net, [p + ei for p, ei in zip(w, e, strict=True)], x, y)
    along = _dot(g, g2) / _dot(g2, g2)
    perp = [gi - along * g2i for gi, g2i in zip(g, g2, strict=True)]
    return [p - lr * (g2i - alpha * pi) for p, g2i, pi in zip(w, g2, perp, strict=True)], g, g2


def _one_step(alpha: float, adaptive: bool = True):
    factory = NetworkFactory("MLP", 1, 3, (4, 4), {}, "cpu")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 1, 4, 4, generator=gen)
    y = torch.randint(3, (8,), generator=gen)
    settings = ExpertSettings(optimiser="gsam", rho=0.05, gsam_alpha=alpha, adaptive=adaptive)
    recipe = EvalSettings(epochs=1, lr=0.1, momentum=0.0, weight_decay=0.0, batch_size=8)
    seen = []

    def keep(_done, net):
        seen.append([p.detach().clone() for p in net.parameters()])

    net = train_network(
        factory, x, y, recipe, None, torch.Generator().manual_seed(1), on_epoch=keep,
        wrap_optimiser=gsam_wrapper(settings),
    )  # fmt: skip
    start, after = seen
    return net, start, after, x, y


@pytest.mark.parametrize("adaptive", [True, False])
@pytest.mark.parametrize("alpha", [0.4, 1.0])
def test_one_gsam_step_equals_the_formula_by_hand(alpha, adaptive):
    net, start, after, x, y = _one_step(alpha, adaptive)
    expected, g, g2 = _gsam_by_hand(net, start, x, y, 0.1, 0.05, alpha, adaptive)
    for got, want in zip(after, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    # Neither plain SGD (g) nor SAM (g', alpha 0): the surrogate-gap term moved the weights.
    for direction in (g, g2):
        plain = [p - 0.1 * d for p, d in zip(start, direction, strict=True)]
        assert any(not torch.allclose(a, s, atol=1e-7) for a, s in zip(after, plain, strict=True))


def test_alpha_one_removes_the_whole_orthogonal_component():
    """alpha = 1 (FTD's table, refused by pytorch-optimizer): the step is g' - g_perp, i.e. g'
    plus the part of g along g' minus g; its component orthogonal to g' is -g_perp."""
    net, start, after, x, y = _one_step(1.0)
    _, g, g2 = _gsam_by_hand(net, start, x, y, 0.1, 0.05, 1.0, True)
    step = [(s - a) / 0.1 for s, a in zip(start, after, strict=True)]
    along = _dot(g, g2) / _dot(g2, g2)
    perp = [gi - along * g2i for gi, g2i in zip(g, g2, strict=True)]
    step_along = _dot(step, g2) / _dot(g2, g2)
    step_perp = [si - step_along * g2i for si, g2i in zip(step, g2, strict=True)]
    for got, want in zip(step_perp, perp, strict=True):
        torch.testing.assert_close(got, -want, rtol=1e-3, atol=1e-6)


# -- 2. a few steps against FTD's gsam.py, restated -----------------------------------------------
class _FTDGSAMRestated:
    """FTD-distillation/gsam.py's GSAM.step restated from its formula and order of operations
    (single process): gradient at w; perturb_weights (e_w = g rho / (grad_norm + eps), then
    e_w *= w^2 when adaptive, grad_norm = || |w| g || over all parameters); BatchNorm momentum 0;
    gradient at w + e_w; gradient_decompose (vertical = old_g - cosine ||old_g|| g / (||g|| + eps),
    cosine = <old_g, g> / (||g|| ||old_g|| + eps); g -= alpha vertical); unperturb (w -= e_w);
    the base SGD step; BatchNorm momentum restored."""

    def __init__(self, net, lr, rho, alpha, adaptive=True, eps=1e-12):
        self.net, self.rho, self.alpha, self.adaptive, self.eps = net, rho, alpha, adaptive, eps
        self.sgd = torch.optim.SGD(net.parameters(), lr=lr)

    def _backward(self, x, y):
        self.sgd.zero_grad()
        F.cross_entropy(self.net(x), y).backward()

    @staticmethod
    def _global_norm(tensors):
        return torch.norm(torch.stack([t.norm(p=2) for t in tensors]), p=2)

    def step(self, x, y):
        params = list(self.net.parameters())
        self._backward(x, y)
        with torch.no_grad():
            old_g = [p.grad.clone() for p in params]
            weighted = [(torch.abs(p) if self.adaptive else 1.0) * p.grad for p in params]
            scale = self.rho / (self._global_norm(weighted) + self.eps)
            e_w = []
            for p in params:
                e = p.grad * scale
                if self.adaptive:
                    e = e * p**2
                p.add_(e)
                e_w.append(e)
        momenta = {}
        for m in self.net.modules():
            if isinstance(m, nn.BatchNorm2d):
                momenta[m], m.momentum = m.momentum, 0
        self._backward(x, y)
        with torch.no_grad():
            grads = [p.grad for p in params]
            inner = 0.0
            for a, b in zip(old_g, grads, strict=True):
                inner = inner + torch.sum(a * b)
            new_norm, old_norm = self._global_norm(grads), self._global_norm(old_g)
            cosine = inner / (new_norm * old_norm + self.eps)
            for gp, go in zip(grads, old_g, strict=True):
                vertical = go - cosine * old_norm * gp / (new_norm + self.eps)
                gp.add_(vertical, alpha=-self.alpha)
            for p, e in zip(params, e_w, strict=True):
                p.sub_(e)
        self.sgd.step()
        for m, momentum in momenta.items():
            m.momentum = momentum


def _tiny_bn_net() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
        nn.Linear(64, 3),
    )  # fmt: skip


@pytest.mark.parametrize("alpha", [0.4, 1.0])
def test_steps_equal_a_restatement_of_ftds_gsam_py(alpha):
    ours_net = _tiny_bn_net()
    ref_net = copy.deepcopy(ours_net)
    ours = GSAM(ours_net, torch.optim.SGD(ours_net.parameters(), lr=0.1), 0.05, alpha)
    ref = _FTDGSAMRestated(ref_net, lr=0.1, rho=0.05, alpha=alpha)
    gen = torch.Generator().manual_seed(2)
    start = copy.deepcopy(ours_net.state_dict())
    for _ in range(5):
        x = torch.randn(16, 1, 4, 4, generator=gen)
        y = torch.randint(3, (16,), generator=gen)
        ours.set_closure(F.cross_entropy, x, y)
        ours.step()
        ref.step(x, y)
    reference = ref_net.state_dict()
    for name, value in ours_net.state_dict().items():
        torch.testing.assert_close(value, reference[name], rtol=0, atol=1e-6, msg=name)
    # BatchNorm statistics moved once per step (first pass only), and the weights moved.
    bn = ours_net[1]
    assert int(bn.num_batches_tracked) == 10 and bn.momentum == 0.1
    assert not torch.allclose(ours_net[0].weight, start["0.weight"])


def test_gsam_refuses_negative_settings_and_a_step_without_a_batch():
    net = _tiny_bn_net()
    with pytest.raises(ValueError, match="alpha >= 0"):
        GSAM(net, torch.optim.SGD(net.parameters(), lr=0.1), 0.05, -0.1)
    with pytest.raises(ValueError, match="gsam.alpha must be >= 0"):
        ExpertSettings(optimiser="gsam", gsam_alpha=float("nan"))
    with pytest.raises(RuntimeError, match="set_closure"):
        GSAM(net, torch.optim.SGD(net.parameters(), lr=0.1), 0.05, 1.0).step()


# -- 3. the command line, alpha 1.0 ---------------------------------------------------------------
def test_distillkit_experts_trains_gsam_alpha_one_experts_in_seconds(tmp_path, capsys, digits):
    from distillkit.cli.experts import main as cli

    out = tmp_path / "buffers" / "gsam-a1.0"
    began = time.perf_counter()
    cli(
        [
            "optimizer=gsam", "gsam.alpha=1.0", "dataset.image_size=8", "dataset.train_limit=16",
            "model.width=8", "num_experts=1", "epochs=2", "batch=32", "device=cpu",
            "progress=false", f"buffer_dir={out}", f"hydra.run.dir={tmp_path / 'hydra'}",
        ]
    )  # fmt: skip
    assert time.perf_counter() - began < 60
    assert "1 experts trained" in capsys.readouterr().out
    data = digits
    factory = NetworkFactory.from_config(
        {"name": "ConvNet", "width": 8, "depth": None, "norm": "instancenorm"}, data.info, "cpu"
    )
    buffer = ExpertBuffer.open(out, buffer_meta(data.info, factory))
    assert buffer.num_experts == 1 and buffer.epochs == 2
    assert buffer.training["optimiser"] == "gsam" and buffer.training["gsam_alpha"] == 1.0
    trajectory = buffer.trajectory(0)
    assert torch.isfinite(trajectory).all() and not torch.equal(trajectory[0], trajectory[2])


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
