"""DSA: Siamese consistency, per-group randomness, exact op semantics, gradients, config."""

from __future__ import annotations

import pytest
import torch

from distillkit.augment import DSA, FAMILIES, DSAParams

SIZE = (16, 16)
FULL = "color_crop_cutout_flip_scale_rotate"


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int, seed: int = 0, lo: float = -2.0, hi: float = 2.0) -> torch.Tensor:
    x = torch.rand(n, 3, *SIZE, generator=gen(1000 + seed))
    return lo + (hi - lo) * x


def params_for(family: str, values: dict[str, torch.Tensor]) -> DSAParams:
    n = len(next(iter(values.values())))
    return DSAParams((family,), {family: values}, n, SIZE, family)


@pytest.mark.parametrize("family", FAMILIES)
def test_siamese_rows_in_same_group_match_across_batches(family: str) -> None:
    dsa = DSA(family)
    real, syn = images(5, seed=1), images(3, seed=2)
    syn[1] = real[2]
    real_groups = torch.tensor([0, 1, 2, 2, 1])
    syn_groups = torch.tensor([1, 2, 0])
    changed = False
    for seed in range(8):
        p = dsa.sample(3, gen(seed), SIZE)
        assert p.families == (family,) and p.family == family
        out_real = dsa.apply(real, p, real_groups)
        out_syn = dsa.apply(syn, p, syn_groups)
        assert out_real.shape == real.shape and out_syn.shape == syn.shape
        torch.testing.assert_close(out_real[2], out_syn[1], rtol=0, atol=0)
        # Two real rows in group 2 hold different images: the transform, not the data, is shared.
        changed |= not torch.equal(out_real[2], real[2])
    assert changed, f"{family} never changed the image"


@pytest.mark.parametrize("family", FAMILIES)
def test_different_groups_draw_different_params(family: str) -> None:
    dsa = DSA(family)
    x = images(1).expand(2, -1, -1, -1)
    differs = False
    for seed in range(8):
        p = dsa.sample(2, gen(seed), SIZE)
        y = dsa.apply(x, p, torch.tensor([0, 1]))
        differs |= not torch.equal(y[0], y[1])
    assert differs


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_is_differentiable(family: str) -> None:
    dsa = DSA(family)
    x = images(4).requires_grad_(True)
    y = dsa(x, gen(3))
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_gradient_reaches_every_pixel_over_draws_in_mode_s() -> None:
    dsa = DSA(FULL)
    syn = images(3).requires_grad_(True)
    drawn = set()
    total = torch.zeros_like(syn)
    for seed in range(24):
        p = dsa.sample(2, gen(seed), SIZE)
        drawn.add(p.family)
        y = dsa.apply(syn, p, torch.tensor([0, 1, 0]))
        (g,) = torch.autograd.grad((y * torch.randn(y.shape, generator=gen(seed))).sum(), syn)
        total += g.abs()
    assert drawn == set(FAMILIES)
    assert (total > 0).all()


def test_crop_is_integer_shift_with_zero_fill() -> None:
    dsa = DSA("crop")
    x = images(2)
    p = params_for("crop", {"shift_y": torch.tensor([2, -3]), "shift_x": torch.tensor([-3, 0])})
    y = dsa.apply(x, p)
    expected0 = torch.roll(x[0], shifts=(2, -3), dims=(-2, -1))
    expected0[:, :2, :] = 0
    expected0[:, :, -3:] = 0
    expected1 = torch.roll(x[1], shifts=-3, dims=-2)
    expected1[:, -3:, :] = 0
    torch.testing.assert_close(y[0], expected0, rtol=0, atol=0)
    torch.testing.assert_close(y[1], expected1, rtol=0, atol=0)


def test_crop_draws_stay_within_ratio() -> None:
    p = DSA("crop").sample(500, gen(0), SIZE)
    limit = round(0.125 * SIZE[0])
    for key in ("shift_y", "shift_x"):
        v = p.values["crop"][key]
        assert v.abs().max() == limit and v.min() == -limit


def test_cutout_zeroes_one_clipped_square() -> None:
    dsa = DSA("cutout")
    x = images(2)
    p = params_for("cutout", {"centre_y": torch.tensor([8, 1]), "centre_x": torch.tensor([5, 15])})
    y = dsa.apply(x, p)
    mask = torch.ones(2, 1, *SIZE)
    mask[0, :, 4:12, 1:9] = 0  # side 8 centred at (8, 5)
    mask[1, :, 0:5, 11:16] = 0  # clipped at the top and right borders
    torch.testing.assert_close(y, x * mask, rtol=0, atol=0)


def test_flip_matches_torch_flip_for_flipped_groups() -> None:
    dsa = DSA("flip")
    x = images(64)
    p = dsa.sample(64, gen(0), SIZE)
    y = dsa.apply(x, p)
    flipped = p.values["flip"]["flip"]
    assert 0 < flipped.sum() < 64
    for i in range(64):
        expected = torch.flip(x[i], dims=[-1]) if flipped[i] else x[i]
        torch.testing.assert_close(y[i], expected, rtol=0, atol=0)
    rate = dsa.sample(2000, gen(1), SIZE).values["flip"]["flip"].float().mean()
    assert 0.45 < rate < 0.55


def test_color_follows_formula_without_clamping() -> None:
    dsa = DSA("color")
    x = images(3)
    u = torch.tensor([0.9, 0.1, 0.5])
    p = params_for("color", {"u_brightness": u, "u_saturation": u.flip(0), "u_contrast": u})
    y = dsa.apply(x, p)
    e = x + (u.view(-1, 1, 1, 1) - 0.5) * 1.0
    m = e.mean(dim=1, keepdim=True)
    e = (e - m) * (u.flip(0).view(-1, 1, 1, 1) * 2.0) + m
    m = e.mean(dim=(1, 2, 3), keepdim=True)
    e = (e - m) * (u.view(-1, 1, 1, 1) + 0.5) + m
    torch.testing.assert_close(y, e)
    assert y.min() < -1.0 and y.max() > 2.0  # far outside [0, 1]: nothing was clamped


def test_color_gradient_equals_the_step_by_step_form() -> None:
    """The fused colour op must pass the same gradient back as brightness, saturation, contrast."""
    dsa = DSA("color")
    u = torch.tensor([0.9, 0.1, 0.5, 0.3])
    p = params_for("color", {"u_brightness": u, "u_saturation": u.flip(0), "u_contrast": u})
    weights = torch.randn(4, 3, *SIZE, generator=gen(3))

    def grad(apply) -> torch.Tensor:
        x = images(4).clone().requires_grad_(True)
        (apply(x) * weights).sum().backward()
        return x.grad

    def steps(x: torch.Tensor) -> torch.Tensor:
        e = x + (u.view(-1, 1, 1, 1) - 0.5) * 1.0
        m = e.mean(dim=1, keepdim=True)
        e = (e - m) * (u.flip(0).view(-1, 1, 1, 1) * 2.0) + m
        m = e.mean(dim=(1, 2, 3), keepdim=True)
        return (e - m) * (u.view(-1, 1, 1, 1) + 0.5) + m

    torch.testing.assert_close(grad(lambda x: dsa.apply(x, p)), grad(steps))


def test_scale_and_rotate_geometry() -> None:
    x = torch.arange(81.0).view(1, 1, 9, 9).expand(1, 3, 9, 9)
    dsa_scale, dsa_rot = DSA("scale"), DSA("rotate")
    ident = DSAParams(("scale",), {"scale": {"sx": torch.ones(1), "sy": torch.ones(1)}}, 1, (9, 9))
    torch.testing.assert_close(dsa_scale.apply(x, ident), x)
    # sx scales the sampling grid (reference semantics): output offset d reads input at 2 * d.
    zoom = DSAParams(
        ("scale",), {"scale": {"sx": torch.tensor([2.0]), "sy": torch.ones(1)}}, 1, (9, 9)
    )
    y = dsa_scale.apply(x, zoom)
    torch.testing.assert_close(y[..., 4, 4:7], x[..., 4, [4, 6, 8]])
    assert (y[..., 7:] == 0).all()
    quarter = DSAParams(("rotate",), {"rotate": {"angle_deg": torch.tensor([90.0])}}, 1, (9, 9))
    y = dsa_rot.apply(x, quarter)
    torch.testing.assert_close(y, torch.rot90(x, 1, dims=(-2, -1)), atol=1e-4, rtol=0)
    p = dsa_rot.sample(1000, gen(0), (9, 9))
    angle = p.values["rotate"]["angle_deg"]
    assert angle.abs().max() <= 15.0 and angle.min() < -14 and angle.max() > 14
    s = dsa_scale.sample(1000, gen(0), (9, 9)).values["scale"]["sx"]
    assert s.min() >= 1 / 1.2 and s.max() <= 1.2


def test_same_seed_same_output_and_no_global_rng() -> None:
    dsa = DSA(FULL)
    x = images(6)
    torch.manual_seed(0)
    a = dsa(x, gen(5))
    torch.manual_seed(123)
    b = dsa(x, gen(5))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    outs = {dsa(x, gen(s)).sum().item() for s in range(6)}
    assert len(outs) > 1


def test_mode_s_draws_each_family_uniformly() -> None:
    dsa = DSA(FULL)
    g = gen(0)
    counts = dict.fromkeys(FAMILIES, 0)
    for _ in range(600):
        counts[dsa.sample(1, g, SIZE).family] += 1
    assert all(60 < c < 140 for c in counts.values()), counts


@pytest.mark.parametrize("strategy", ["none", "", "None", None])
def test_disabled_returns_input(strategy: str | None) -> None:
    dsa = DSA(strategy)
    assert not dsa.enabled
    x = images(3)
    p = dsa.sample(3, gen(0), SIZE)
    assert p.families == ()
    assert dsa.apply(x, p) is x and dsa(x, gen(0)) is x
    assert DSA().enabled


def test_mode_m_applies_all_families_in_order() -> None:
    dsa = DSA(FULL, mode="M")
    x = images(4)
    groups = torch.tensor([1, 0, 2, 1])
    p = dsa.sample(3, gen(7), SIZE)
    assert p.families == FAMILIES and p.family is None
    y = dsa.apply(x, p, groups)
    expected = x
    for family in FAMILIES:
        single = DSAParams((family,), {family: p.values[family]}, 3, SIZE, family)
        expected = DSA(family).apply(expected, single, groups)
    torch.testing.assert_close(y, expected, rtol=0, atol=0)


def test_always_flip_flips_then_applies_another_family() -> None:
    dsa = DSA(FULL, always_flip=True)
    x = images(8)
    others = set()
    flips = []
    for seed in range(40):
        p = dsa.sample(8, gen(seed), SIZE)
        assert p.families[0] == "flip" and len(p.families) == 2
        assert p.family == p.families[1] != "flip"
        others.add(p.family)
        flips.append(p.values["flip"]["flip"])
        flipped = DSA("flip").apply(x, DSAParams(("flip",), {"flip": p.values["flip"]}, 8, SIZE))
        rest = DSAParams((p.family,), {p.family: p.values[p.family]}, 8, SIZE, p.family)
        torch.testing.assert_close(dsa.apply(x, p), DSA(p.family).apply(flipped, rest))
    assert others == set(FAMILIES) - {"flip"}
    rate = torch.cat(flips).float().mean()
    assert 0.4 < rate < 0.6


def test_from_config_and_validation() -> None:
    omegaconf = pytest.importorskip("omegaconf")
    cfg = omegaconf.OmegaConf.create({"strategy": "crop_flip", "mode": "M", "scale": 1.5})
    dsa = DSA.from_config(cfg)
    assert dsa.families == ("crop", "flip") and dsa.mode == "M" and dsa.scale == 1.5
    assert DSA.from_config({}).families == FAMILIES
    with pytest.raises(ValueError, match=r"dsa.prob: unknown key"):
        DSA.from_config({"strategy": "flip", "prob": 0.5})
    with pytest.raises(ValueError, match="unknown DSA families"):
        DSA("color_blur")
    with pytest.raises(ValueError, match="mode"):
        DSA(mode="X")
    with pytest.raises(ValueError, match="always_flip"):
        DSA("color_crop", always_flip=True)
    dsa = DSA()
    p = dsa.sample(2, gen(0), SIZE)
    with pytest.raises(ValueError, match="group ids"):
        dsa.apply(images(2), p, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="n_groups"):
        dsa.apply(images(3), p)
    with pytest.raises(ValueError, match="as sampled"):
        dsa.apply(torch.zeros(2, 3, 8, 8), p)


def test_params_device_and_dtype_follow_x() -> None:
    dsa = DSA(FULL, mode="M")
    p = dsa.sample(2, gen(0), SIZE, device="cpu").to("cpu")
    x = images(2).double().requires_grad_(True)
    y = dsa.apply(x, p)
    assert y.dtype == torch.float64
    y.sum().backward()
    assert x.grad is not None
    if torch.cuda.is_available():
        dev = dsa.apply(x.detach().cuda(), p, torch.tensor([1, 0]).cuda())
        torch.testing.assert_close(dev.cpu(), dsa.apply(x.detach(), p, torch.tensor([1, 0])))
