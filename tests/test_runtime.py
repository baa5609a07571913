"""Runtime switches: auto resolution per device, autocast, channels-last, compile fallback."""

from __future__ import annotations

import pytest
import torch
from helpers import build_method

from distillkit.data import load_dataset
from distillkit.methods import MethodContext
from distillkit.networks import NetworkFactory
from distillkit.runtime import Runtime, compile_or_eager
from distillkit.seeding import RunGenerators
from distillkit.synthetic import SyntheticSet


def test_auto_resolves_per_device():
    cpu = Runtime.from_config({"precision": "auto", "compile": "auto", "channels_last": "auto"})
    assert (cpu.precision, cpu.compile, cpu.channels_last) == ("fp32", False, False)
    assert Runtime.from_config(None) == cpu
    assert cpu.memory_budget == 256 << 20


def test_auto_is_fp32_eager_on_cuda_too(monkeypatch):
    """auto follows the reference implementations on CUDA (fp32 with PyTorch's default TF32
    convolutions, eager, NCHW); bf16 is only the explicit fast preset. A GPU that offers bf16
    is faked, so the test fails if auto ever reverts to bf16 there."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr("distillkit.runtime.auto_budget", lambda device: 123 << 20)
    for device in ("cuda", "cuda:0"):
        rt = Runtime.from_config({"precision": "auto", "compile": "auto"}, device)
        assert (rt.precision, rt.compile, rt.channels_last) == ("fp32", False, False)
        assert rt.memory_budget == 123 << 20


def test_fast_preset_is_bf16_channels_last_compile():
    from pathlib import Path

    import yaml

    conf = Path(__file__).resolve().parents[1] / "conf" / "runtime"
    fast = Runtime.from_config(yaml.safe_load((conf / "fast.yaml").read_text()), "cuda")
    assert (fast.precision, fast.compile, fast.channels_last) == ("bf16", True, True)
    default = Runtime.from_config(yaml.safe_load((conf / "default.yaml").read_text()), "cpu")
    assert default == Runtime.from_config({}, "cpu")


def test_memory_budget_values():
    assert Runtime.from_config({"memory_budget": "512MiB"}).memory_budget == 512 << 20
    assert Runtime.from_config({"memory_budget": "2g"}).memory_budget == 2 << 30
    assert Runtime.from_config({"memory_budget": 0}).memory_budget == 0
    assert Runtime.from_config({"memory_budget": 4096}).memory_budget == 4096
    for bad in ("lots", -1, True):
        with pytest.raises(ValueError, match="memory_budget"):
            Runtime.from_config({"memory_budget": bad})


def test_explicit_values_and_errors():
    rt = Runtime.from_config({"precision": "BF16", "compile": False, "channels_last": "true"})
    assert (rt.precision, rt.compile, rt.channels_last) == ("bf16", False, True)
    assert rt.dtype == torch.bfloat16 and rt.mixed
    with pytest.raises(ValueError, match="precision"):
        Runtime.from_config({"precision": "fp8"})
    with pytest.raises(ValueError, match="compile"):
        Runtime.from_config({"compile": "sometimes"})
    with pytest.raises(ValueError, match=r"runtime.precison: unknown key \(did you mean precision"):
        Runtime.from_config({"precison": "fp32"})


def test_autocast_and_memory_format():
    rt = Runtime.from_config({"precision": "bf16", "channels_last": True})
    conv = rt.module(torch.nn.Conv2d(3, 4, 3))
    x = rt.input(torch.randn(2, 3, 8, 8))
    assert x.is_contiguous(memory_format=torch.channels_last)
    with rt.autocast():
        assert conv(x).dtype == torch.bfloat16
    with Runtime.from_config({}).autocast():
        assert conv(x).dtype == torch.float32


def test_compile_failure_falls_back_to_eager_with_one_message(capsys, monkeypatch):
    def broken_compile(fn, **kwargs):
        def run(*args, **kw):
            raise RuntimeError("no C++ compiler")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    calls = []

    def double(x):
        calls.append(1)
        return 2 * x

    fn = compile_or_eager(double, "double")
    assert fn(3) == 6 and fn(4) == 8
    err = capsys.readouterr().err
    assert err.count("torch.compile of double failed") == 1 and "runtime.compile=false" in err
    assert len(calls) == 2
    assert Runtime.from_config({"compile": False}).compiled(double) is double


def dm(runtime, seed=0):
    data = load_dataset("digits", image_size=8)
    gens = RunGenerators(seed)
    synthetic = SyntheticSet.initialise(data, 2, "real", gens["init"])
    cfg = {"lr_img": 1.0, "momentum": 0.5, "batch_real": 16}
    networks = NetworkFactory("ConvNet", 1, 10, (8, 8), {"width": 8, "depth": 2})
    ctx = MethodContext(cfg, data, synthetic, networks, None, gens, runtime=runtime)
    return build_method("dm", ctx)


def test_dm_default_runtime_is_plain_fp32():
    """auto on CPU changes nothing: the same images as a method built without the block."""
    a, b = dm({"precision": "auto", "compile": "auto", "channels_last": "auto"}), dm(None)
    for i in range(2):
        a.step(i), b.step(i)
    assert torch.equal(a.synthetic.images, b.synthetic.images)


def test_dm_under_bf16_and_channels_last_stays_close_to_fp32():
    fp32 = dm({"precision": "fp32"})
    mixed = dm({"precision": "bf16", "channels_last": True})
    assert mixed.runtime.mixed
    l32, lmx = fp32.step(0)["loss"], mixed.step(0)["loss"]
    assert lmx.dtype == torch.float32 and mixed.synthetic.images.dtype == torch.float32
    assert float(lmx) == pytest.approx(float(l32), rel=0.1)


@pytest.mark.slow
def test_dm_compiled_matches_eager():
    eager, compiled = dm({"compile": False}), dm({"compile": True})
    for i in range(2):
        le, lc = eager.step(i)["loss"], compiled.step(i)["loss"]
        assert float(lc) == pytest.approx(float(le), rel=1e-4)
    assert getattr(compiled.embed, "compiled_fallback", {}).get("eager") is False
