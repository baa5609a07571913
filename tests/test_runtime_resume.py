"""A checkpoint written under one runtime resumes under another (issue 23: a long CPU run moves
between machines with and without native bf16), and results.json says which iterations ran
under which; any other difference in the config is still refused."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import crash_at

from distillkit.checkpoint import LoopState
from distillkit.trainer import Trainer

RUN = ("method.iterations=4", "checkpoint.every=2", "unequalness.enabled=false")


def test_a_bf16_checkpoint_continues_in_fp32_and_the_history_is_reported(tiny_config, tmp_path):
    fast = tiny_config(*RUN, "runtime.precision=bf16", "runtime.channels_last=true")
    crashed = Trainer(fast, tmp_path / "run")
    crash_at(crashed, 3, RuntimeError("killed"))
    with pytest.raises(RuntimeError, match="killed"):
        crashed.run()
    written = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert written["iteration"] == 2 and written["runtimes"][0]["runtime"]["precision"] == "bf16"

    plain = tiny_config(*RUN, "runtime.precision=fp32")
    resumed = Trainer(plain, tmp_path / "run")
    assert resumed.start_iteration == 2  # continued, not restarted
    resumed.run()
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    history = [(r["from_iteration"], r["runtime"]["precision"]) for r in results["runtimes"]]
    assert history == [(0, "bf16"), (2, "fp32")]
    assert results["runtimes"][0]["runtime"]["channels_last"] is True
    assert results["runtimes"][1]["runtime"]["channels_last"] == "auto"


def test_an_uninterrupted_run_reports_one_runtime(tiny_config, tmp_path):
    Trainer(tiny_config(*RUN), tmp_path / "run").run()
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [r["from_iteration"] for r in results["runtimes"]] == [0]


def test_other_differences_are_still_refused(tiny_config, tmp_path):
    crashed = Trainer(tiny_config(*RUN), tmp_path / "run")
    crash_at(crashed, 3, RuntimeError("killed"))
    with pytest.raises(RuntimeError):
        crashed.run()
    with pytest.raises(ValueError, match="differs in method.lr_img"):
        Trainer(tiny_config(*RUN, "method.lr_img=2.0"), tmp_path / "run")


def test_note_runtime_keeps_one_stretch_per_change():
    state = LoopState()
    assert state.note_runtime({"precision": "bf16"}) is False  # the first stretch
    state.iteration = 5
    assert state.note_runtime({"precision": "bf16"}) is False  # same switches: nothing new
    assert state.note_runtime({"precision": "fp32"}) is True
    assert state.note_runtime({"precision": "fp16"}) is True  # nothing ran under fp32: replaced
    assert [(r["from_iteration"], r["runtime"]["precision"]) for r in state.runtimes] == [
        (0, "bf16"),
        (5, "fp16"),
    ]


def test_cpu_time_is_counted_across_a_resume(tiny_config, tmp_path):
    """results.json's `timings.cpu_s` is the process CPU time of every iteration, kept in the
    checkpoint through a crash; wall time alone would count a stopped or waiting process."""
    crashed = Trainer(tiny_config(*RUN), tmp_path / "run")
    crash_at(crashed, 3, RuntimeError("killed"))
    with pytest.raises(RuntimeError, match="killed"):
        crashed.run()
    written = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert written["cpu_s"] > 0 and written["cpu_from_iteration"] == 0
    Trainer(tiny_config(*RUN), tmp_path / "run").run()
    timings = json.loads((tmp_path / "run" / "results.json").read_text())["timings"]
    assert timings["cpu_s"] > written["cpu_s"] and timings["cpu_from_iteration"] == 0
    assert timings["eval_cpu_s"] > 0


def test_a_checkpoint_from_before_cpu_time_counts_from_its_iteration(tiny_config, tmp_path):
    crashed = Trainer(tiny_config(*RUN), tmp_path / "run")
    crash_at(crashed, 3, RuntimeError("killed"))
    with pytest.raises(RuntimeError, match="killed"):
        crashed.run()
    path = tmp_path / "run" / "checkpoint.pt"
    old = torch.load(path, weights_only=False)
    del old["cpu_s"], old["cpu_from_iteration"]  # what an older distillkit wrote
    torch.save(old, path)
    Trainer(tiny_config(*RUN), tmp_path / "run").run()
    timings = json.loads((tmp_path / "run" / "results.json").read_text())["timings"]
    assert timings["cpu_from_iteration"] == 2 and timings["cpu_s"] > 0
