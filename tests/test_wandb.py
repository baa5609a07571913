"""The W&B mirror, checked in the offline run files W&B would sync (WANDB_MODE=offline, no
network): group per sweep, job type, flat addons/setting keys, tags, define_metric summaries,
stable image keys, the artifact, exit codes, W&B's own run id and the offline resume."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import TINY, compose_config, crash_at

from distillkit.logging.wandb_logger import artifact_name, media_key
from distillkit.report import addons_label
from distillkit.trainer import Trainer

pytest.importorskip("wandb")

BLOCK = 32768  # W&B's run file: a ":W&B" header, then LevelDB-style log blocks of records


def run_records(run_file: Path) -> list:
    """Every record of an offline `run-<id>.wandb` file (what `wandb sync` uploads)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    out, pos, chunk = [], 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (length == 0 and kind == 0):
            pos += left
            continue
        if pos + 7 + length > len(data):  # a record still being written: not read yet
            break
        chunk += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(chunk)
            out.append(record)
            chunk = b""
    return out


class OfflineRun:
    """The parts of one offline run a dashboard uses."""

    def __init__(self, run_file: Path) -> None:
        self.records = run_records(run_file)

        def kind(name: str) -> list:
            return [getattr(r, name) for r in self.records if r.WhichOneof("record_type") == name]

        (self.run,) = kind("run")[:1]
        self.config = {i.key: json.loads(i.value_json) for i in self.run.config.update}
        self.exit_code = kind("exit")[-1].exit_code
        self.artifacts = {
            (a.name, a.type): [m.path for m in a.manifest.contents] for a in kind("artifact")
        }
        self.metrics = {m.name: str(m.summary) for m in kind("metric")}
        self.history = {
            r.step.num: {i.key or "/".join(i.nested_key) for i in r.item} for r in kind("history")
        }
        self.summary = {}
        for s in kind("summary"):
            for i in s.update:
                self.summary[i.key or "/".join(i.nested_key)] = json.loads(i.value_json)


def complete(run_file: Path) -> OfflineRun:
    """The run once W&B's service has flushed it (it writes the file asynchronously, so a read
    may meet a record half written: that counts as not flushed yet)."""
    from google.protobuf.message import DecodeError

    for _ in range(300):
        try:
            kinds = {r.WhichOneof("record_type") for r in run_records(run_file)}
        except DecodeError:
            kinds = set()
        if {"run", "exit"} <= kinds:
            break
        time.sleep(0.1)
    return OfflineRun(run_file)


def offline_runs(run_dir: Path) -> dict[str, OfflineRun]:
    return {
        p.stem.removeprefix("run-"): complete(p)
        for p in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    }


TINY_CLI = [
    "logger=wandb", "method.iterations=3", "dataset.image_size=8", "model.width=8",
    "eval.num_models=1", "eval.epochs=1", "progress=false", "device=cpu",
    "unequalness.enabled=false", "ipc=1",
]  # fmt: skip


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    code = "import sys; from distillkit.cli.distill import main; main(sys.argv[1:])"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, env=env
    )


def test_sweep_runs_carry_group_job_type_addons_and_an_artifact(tmp_path):
    sweep = tmp_path / "sweep"
    out = run_cli(
        "-m", *TINY_CLI, "regularizer=[fyi],none", f"hydra.sweep.dir={sweep}", cwd=tmp_path
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "dm digits ipc=1: ConvNet" in (sweep / "1" / "distill.log").read_text()  # logging
    (fyi,) = offline_runs(sweep / "0").values()
    assert fyi.config["addons"] == "fyi" and fyi.config["setting"] == "dm+fyi/digits/ipc1"
    ((run_id, run),) = offline_runs(sweep / "1").items()
    assert run.run.run_group == fyi.run.run_group == "distill-sweep"  # one group per sweep
    assert run.run.job_type == "distill"
    assert run.config["addons"] == "none" and run.config["setting"] == "dm/digits/ipc1"
    assert {"dm", "none", "digits", "ipc1"} <= set(run.run.tags)
    assert run.exit_code == 0
    assert run.artifacts[("synset-dm-none-digits-ipc1-s0", "synthetic-dataset")] == [
        "results.json", "synthetic_set.pt",
    ]  # fmt: skip
    assert "max" in run.metrics["eval/ConvNet/mean"] and "min" in run.metrics["train/loss"]
    for step in (0, 3):  # the same keys at every step: one media panel with a slider
        assert {"synthetic/grid/_type", "synthetic/pixels/_type"} <= run.history[step]
    assert "synthetic/flips/_type" in run.history[3]
    stored = torch.load(sweep / "1" / "checkpoint.pt", weights_only=True)["wandb_run_id"]
    assert stored == run_id  # W&B's own id, as a resume needs it


def test_failed_run_finishes_with_exit_code_1_and_the_error(tmp_path):
    trainer = Trainer(compose_config([*TINY, "ipc=1", "logger=wandb"]), tmp_path)
    crash_at(trainer, 1, RuntimeError("boom"))
    with pytest.raises(RuntimeError):
        trainer.run()
    (run,) = offline_runs(tmp_path).values()
    assert run.exit_code == 1
    assert run.summary["error"] == "RuntimeError: boom"
    assert not run.artifacts


def test_offline_resume_starts_a_complete_new_run(tmp_path):
    """`wandb sync` cannot merge two offline folders of one id: the resumed run is a new one in
    the same group that replays every scalar up to the checkpoint and names the old run."""
    overrides = [*TINY, "ipc=1", "logger=wandb", "log_every=1", "checkpoint.every=1",
                 "method.iterations=5", "eval.num_models=0", "logger.wandb.group=g"]  # fmt: skip
    trainer = Trainer(compose_config(overrides), tmp_path)
    crash_at(trainer, 3, KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    first = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["wandb_run_id"]
    resumed = Trainer(compose_config(overrides), tmp_path)
    assert resumed.start_iteration == 3
    resumed.run()
    runs = offline_runs(tmp_path)
    second = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["wandb_run_id"]
    assert set(runs) == {first, second} and first != second
    new = runs[second]
    assert new.config["supersedes"] == first and new.run.run_group == "g"
    assert {s for s, keys in new.history.items() if "train/loss" in keys} == {1, 2, 3, 4, 5}
    assert new.exit_code == 0 and runs[first].exit_code == 1


def test_labels():
    assert addons_label({"regularizer": {"cc": {}, "cm": {}, "fyi": {}}}) == "fyi+iid"
    assert addons_label({"regularizer": {}}) == "none"
    assert addons_label({"regularizer": {"cc": {}}}) == "cc"
    cfg = {"regularizer": {"fyi": {}}, "method": {"name": "dm"}, "dataset": {"name": "cifar10"},
           "ipc": 10, "seed": 2}  # fmt: skip
    assert artifact_name(cfg) == "synset-dm-fyi-cifar10-ipc10-s2"
    assert media_key("grid_init") == media_key("grid_000500") == media_key("grid_final")
    assert media_key("flips_final") == "synthetic/flips"


def test_eval_by_artifact_name_needs_w_and_b_online(tmp_path):
    """`distillkit-eval wandb:<entity>/<project>/<name>:<alias>` downloads the artifact in an
    `eval` run; offline it fails in one line (exit 2) before anything is loaded."""
    code = "from distillkit.cli.evaluate import main; main()"
    env = {**os.environ, "WANDB_MODE": "offline"}
    out = subprocess.run(
        [sys.executable, "-c", code, "wandb:me/proj/synset-dm-none-digits-ipc1-s0:latest"],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip().endswith("fetching an artifact needs W&B online"), out.stderr


def test_expert_buffer_is_a_reference_artifact_of_an_experts_run(tmp_path):
    """`distillkit-experts +logger=wandb`: a run of job type `experts` records the buffer as a
    reference artifact (lineage without uploading GPU-days of files)."""
    code = "from distillkit.cli.experts import main; main()"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    buffer = tmp_path / "buffer"
    out = subprocess.run(
        [sys.executable, "-c", code, "+logger=wandb", "num_experts=1", "epochs=1",
         "dataset.image_size=8", "model.width=8", "progress=false", "device=cpu",
         f"buffer_dir={buffer}", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    ((_, run),) = offline_runs(tmp_path / "run").items()  # the job's directory, not the buffer
    assert run.run.job_type == "experts" and run.exit_code == 0
    ((name, kind),) = run.artifacts
    assert kind == "expert-buffer" and name == "experts-digits-buffer"
    refs = [r for r in run.records if r.WhichOneof("record_type") == "artifact"]
    entries = refs[0].artifact.manifest.contents
    assert entries and all(e.ref.startswith(buffer.resolve().as_uri() + "/") for e in entries)
    assert not (buffer / "wandb").exists()


def test_continual_is_a_run_of_job_type_continual(tmp_path):
    """`distillkit-continual +logger=wandb`: the accuracy per classes seen, in one run."""
    code = "from distillkit.cli.continual import main; main()"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    out = subprocess.run(
        [sys.executable, "-c", code, "+logger=wandb", "dataset.image_size=8", "model.width=8",
         "method.iterations=1", "++method.batch_real=8", "ipc=1", "steps=2", "orders=1",
         "eval.num_models=1", "eval.epochs=1", "device=cpu", "progress=false",
         f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    ((_, run),) = offline_runs(tmp_path / "run").items()
    assert run.run.job_type == "continual" and run.exit_code == 0
    logged = {key for keys in run.history.values() for key in keys}
    assert {"continual/ConvNet/mean", "continual/ConvNet/std"} <= logged
