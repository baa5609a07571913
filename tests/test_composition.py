"""A run's pieces are built once, in distillkit.assembly, and handed on: the method uses the
Runtime the bench built rather than parsing the `runtime` block again."""

from __future__ import annotations

from distillkit.runtime import Runtime
from distillkit.trainer import Trainer


def test_the_method_runs_under_the_runtime_the_assembly_built(tiny_config, tmp_path, monkeypatch):
    parsed = []
    original = Runtime.from_config.__func__

    def counting(cls, cfg, device="cpu"):
        parsed.append(cfg)
        return original(cls, cfg, device)

    monkeypatch.setattr(Runtime, "from_config", classmethod(counting))
    trainer = Trainer(tiny_config("method=dm", "runtime.channels_last=true"), tmp_path / "run")
    assert trainer.method.runtime is trainer.bench.runtime
    assert trainer.method.runtime.channels_last is True
    # Once for the start-up check (config.py, no data yet) and once for the run itself.
    assert len(parsed) == 2


def test_runtime_of_keeps_a_built_runtime_and_parses_a_block():
    built = Runtime.from_config({"channels_last": True}, "cpu")
    assert Runtime.of(built, "cpu") is built
    assert Runtime.of({"precision": "bf16"}, "cpu").precision == "bf16"
    assert Runtime.of(None, "cpu").precision == "fp32"
