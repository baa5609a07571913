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


# -- one composition root -------------------------------------------------------------------------
class Spy:
    """Counts the calls of a function while still calling it."""

    def __init__(self, function):
        self.function, self.calls = function, []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.function(*args, **kwargs)


def test_the_trainer_validates_once_and_assembles_once(tiny_config, tmp_path, monkeypatch):
    import distillkit.trainer as trainer_module

    checked = Spy(trainer_module.checked_config)
    assembled = Spy(trainer_module.assemble_run)
    monkeypatch.setattr(trainer_module, "checked_config", checked)
    monkeypatch.setattr(trainer_module, "assemble_run", assembled)
    trainer = Trainer(tiny_config("method=dm"), tmp_path / "run")
    assert len(checked.calls) == 1 and len(assembled.calls) == 1
    assert trainer.cfg["method"]["name"] == "dm"  # the one name, derived from the class


def test_distillkit_eval_builds_through_the_root(tiny_config, tmp_path, monkeypatch):
    """distillkit-eval takes its bench, evaluation settings and augmentation from assemble_run
    (a hand-built bootstrap would not call it), with the command's options in the config."""
    import distillkit.assembly as assembly
    from distillkit.cli.evaluate import main as evaluate_main

    Trainer(tiny_config("method=random", "eval.num_models=0"), tmp_path / "run").run()
    assembled = Spy(assembly.assemble_run)
    monkeypatch.setattr(assembly, "assemble_run", assembled)
    evaluate_main([str(tmp_path / "run" / "synthetic_set.pt"), "--num-models", "1",
                   "--epochs", "1", "--device", "cpu"])  # fmt: skip
    ((args, kwargs),) = assembled.calls
    assert kwargs == {"distil": False} and args[0]["eval"]["epochs"] == 1
