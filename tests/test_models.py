"""Network factory: every name builds, shapes agree, and the ConvNet facts from methods.md hold."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distillkit.models import DistillNet, available_models, build_model

INPUTS = [(3, 32), (1, 28), (1, 16)]
# ConvNetD5 pools a 16x16 input below 1x1; that combination is rejected by design.
TOO_SMALL = {("ConvNetD5", 16)}


def _opts(name: str) -> dict:
    """Tiny ConvNets keep the test fast; other models have no width option."""
    return {"width": 8} if name.lower().startswith("convnet") else {}


CASES = [
    (name, ch, side)
    for name in available_models()
    for ch, side in INPUTS
    if (name, side) not in TOO_SMALL
]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize(("name", "channels", "side"), CASES)
def test_every_model_builds_and_shapes(name: str, channels: int, side: int) -> None:
    net = build_model(name, channels, 7, (side, side), **_opts(name))
    assert isinstance(net, DistillNet)
    assert isinstance(net.classifier, nn.Linear)
    x = torch.randn(2, channels, side, side)
    logits, emb, fmap = net(x), net.embed(x), net.feature_map(x)
    assert logits.shape == (2, 7)
    assert emb.ndim == 2 and emb.shape[0] == 2
    assert emb.shape[1] == net.classifier.in_features == net.embed_dim
    assert fmap.ndim == 4 and fmap.shape[0] == 2
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", ["ConvNet", "AlexNet", "VGG11", "ResNet18", "LeNet", "MLP"])
def test_forward_is_classifier_of_embed(name: str) -> None:
    net = build_model(name, 1, 5, (16, 16), **_opts(name)).eval()
    x = torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(net(x), net.classifier(net.embed(x)))


@pytest.mark.parametrize("name", ["ConvNet", "ResNet18", "LeNet", "MLP"])
def test_forward_runs_features_once(name: str) -> None:
    net = build_model(name, 1, 5, (16, 16), **_opts(name))
    first = next(m for m in net.modules() if isinstance(m, nn.Conv2d | nn.Linear))
    calls = []
    first.register_forward_hook(lambda *_: calls.append(1))
    net(torch.randn(2, 1, 16, 16))
    assert len(calls) == 1


@pytest.mark.parametrize(("channels", "side"), [(3, 32), (3, 64), (1, 28), (3, 16)])
def test_convnet_auto_depth_gives_4x4(channels: int, side: int) -> None:
    net = build_model("ConvNet", channels, 10, (side, side), width=8)
    fmap = net.feature_map(torch.randn(1, channels, side, side))
    assert fmap.shape == (1, 8, 4, 4)
    assert net.classifier.in_features == 8 * 4 * 4


def test_convnet_default_is_the_papers_network() -> None:
    net = build_model("convnet", 3, 10, (32, 32))
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3 and all(c.out_channels == 128 and c.kernel_size == (3, 3) for c in convs)
    assert net.classifier.in_features == 2048
    assert any(isinstance(m, nn.AvgPool2d) for m in net.modules())


def test_convnet_mnist_first_conv_pads_3() -> None:
    net = build_model("ConvNet", 1, 10, (28, 28), width=8)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].padding == (3, 3) and all(c.padding == (1, 1) for c in convs[1:])


def test_convnet_embed_is_flattened_feature_map() -> None:
    net = build_model("ConvNet", 3, 10, (32, 32), width=8).eval()
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(net.embed(x), net.feature_map(x).flatten(1))


def test_instancenorm_is_groupnorm_per_channel() -> None:
    for name in ("ConvNet", "VGG11", "ResNet18"):
        net = build_model(name, 3, 10, (16, 16), **_opts(name))
        norms = [m for m in net.modules() if isinstance(m, nn.GroupNorm)]
        assert norms and all(n.num_groups == n.num_channels and n.affine for n in norms)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ConvNetBN", nn.BatchNorm2d),
        ("VGG11BN", nn.BatchNorm2d),
        ("ResNet18BN", nn.BatchNorm2d),
        ("AlexNetBN", nn.BatchNorm2d),
        ("ConvNetMP", nn.MaxPool2d),
        ("ResNet18_AP", nn.AvgPool2d),
    ],
)
def test_variants_use_their_layers(name: str, expected: type) -> None:
    net = build_model(name, 3, 10, (16, 16), **_opts(name))
    assert any(isinstance(m, expected) for m in net.modules())


@pytest.mark.parametrize(("name", "strided"), [("ResNet18", True), ("ResNet18BN_AP", False)])
def test_resnet_downsampling_style(name: str, strided: bool) -> None:
    net = build_model(name, 3, 10, (16, 16))
    strides = {m.stride for m in net.modules() if isinstance(m, nn.Conv2d)}
    assert ((2, 2) in strides) is strided
    assert net.embed(torch.randn(2, 3, 16, 16)).shape == (2, 512)


def test_alexnet_has_no_norm() -> None:
    net = build_model("AlexNet", 3, 10, (32, 32))
    assert not any(isinstance(m, nn.BatchNorm2d | nn.GroupNorm) for m in net.modules())
    assert net.classifier.in_features == 192 * 4 * 4


def test_convnet_norm_options() -> None:
    ln = build_model("ConvNetLN", 3, 10, (16, 16), width=8)
    assert all(m.num_groups == 1 for m in ln.modules() if isinstance(m, nn.GroupNorm))
    nn_net = build_model("ConvNetNN", 3, 10, (16, 16), width=8)
    assert not any(isinstance(m, nn.GroupNorm | nn.BatchNorm2d) for m in nn_net.modules())


def test_convnet_aliases_and_overrides() -> None:
    assert build_model("ConvNetW32", 3, 10, 16).classifier.in_features == 32 * 4 * 4
    d1 = build_model("ConvNetD1", 3, 10, (32, 32), width=8)
    assert d1.feature_map(torch.randn(1, 3, 32, 32)).shape == (1, 8, 16, 16)
    # explicit options win over alias defaults
    d1_bn = build_model("ConvNetBN", 3, 10, (32, 32), width=8, depth=1, norm="none")
    assert d1_bn.classifier.in_features == 8 * 16 * 16
    assert not any(isinstance(m, nn.BatchNorm2d) for m in d1_bn.modules())


def test_convnet_without_pooling_sizes_classifier() -> None:
    net = build_model("ConvNet", 3, 4, (16, 16), width=8, depth=2, pool="none")
    x = torch.randn(2, 3, 16, 16)
    assert net.classifier.in_features == 8 * 16 * 16
    assert net(x).shape == (2, 4)


@pytest.mark.parametrize("act", ["relu", "sigmoid", "leakyrelu", "swish", "silu", "gelu"])
def test_convnet_activations(act: str) -> None:
    net = build_model("ConvNet", 3, 4, (16, 16), width=8, act=act)
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 4)


def test_gradient_reaches_input_pixels() -> None:
    net = build_model("ConvNet", 3, 4, (16, 16), width=8)
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    net(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_too_small_input_raises_clearly() -> None:
    with pytest.raises(ValueError, match="too small"):
        build_model("ConvNetD5", 1, 10, (16, 16), width=8)


def test_bad_name_lists_available_models() -> None:
    with pytest.raises(ValueError, match="ResNet18") as info:
        build_model("ResNet1000", 3, 10, (32, 32))
    assert "ConvNet" in str(info.value)


@pytest.mark.parametrize(
    ("option", "value", "allowed"),
    [
        ("norm", "weirdnorm", "instancenorm"),
        ("act", "tanh", "leakyrelu"),
        ("pool", "lp", "maxpool"),
    ],
)
def test_bad_option_value_raises(option: str, value: str, allowed: str) -> None:
    with pytest.raises(ValueError, match=allowed):
        build_model("ConvNet", 3, 10, (16, 16), width=8, **{option: value})


def test_bad_norm_on_other_models_raises() -> None:
    with pytest.raises(ValueError, match="batchnorm"):
        build_model("VGG11", 3, 10, (16, 16), norm="weirdnorm")


def test_unknown_option_name_raises() -> None:
    with pytest.raises(TypeError, match="depth"):
        build_model("ResNet18", 3, 10, (16, 16), depth=3)


def test_names_are_case_insensitive() -> None:
    assert type(build_model("resnet18bn_ap", 3, 10, (16, 16))).__name__ == "ResNet18"
    assert "ConvNet" in available_models() and "ResNet18BN_AP" in available_models()


def test_resnet18_width_scales_every_stage_and_the_embedding():
    """A narrow ResNet-18 (CPU-affordable IID pools) keeps the shape contract at 8 x width."""
    narrow = build_model("ResNet18", 3, 10, 16, width=8)
    x = torch.randn(2, 3, 16, 16)
    assert narrow.embed(x).shape == (2, 64)
    assert narrow(x).shape == (2, 10)
    default = build_model("ResNet18", 3, 10, 16)
    assert default.embed(x).shape == (2, 512)
    narrow_params = sum(p.numel() for p in narrow.parameters())
    assert narrow_params < sum(p.numel() for p in default.parameters()) / 30
    with pytest.raises(ValueError, match="width"):
        build_model("ResNet18", 3, 10, 16, width=0)
