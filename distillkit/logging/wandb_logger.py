"""Weights & Biases mirror of the local logs (offline by default: no account needed).

What makes runs comparable on a dashboard: a group per sweep, a job type per command, flat
`addons` / `setting` config keys and tags, summaries declared with `define_metric`, images under
stable keys (one media panel with a step slider), the synthetic set and results as a versioned
artifact, and a failed run that finishes with exit code 1 and its error in the summary.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from distillkit.logging.base import Logger
from distillkit.report import addons_label, setting_label

#: Local image names (grid_init, grid_000500, flips_final, ...) -> one W&B key per kind.
MEDIA_KEYS = {"grid": "synthetic/grid", "flips": "synthetic/flips"}


def media_key(name: str) -> str:
    """The W&B key of a local image: the same key at every step, so the panel has a slider."""
    kind = re.sub(r"_(init|final|\d+)$", "", name)
    return MEDIA_KEYS.get(kind, name)


def comparison_keys(run_config: Mapping[str, Any]) -> dict[str, str]:
    """Flat config keys for grouping and filtering (`regularizer` itself is a nested dict)."""
    try:
        return {"addons": addons_label(run_config), "setting": setting_label(run_config)}
    except (KeyError, TypeError):  # not a distillation config (a table run, an evaluation)
        return {}


def artifact_name(run_config: Mapping[str, Any]) -> str:
    """`synset-dm-fyi_iid-cifar10-ipc10-s0` (W&B names allow letters, digits, - _ .)."""
    addons = addons_label(run_config).replace("+", "_")
    method, dataset = run_config["method"]["name"], run_config["dataset"]["name"]
    return f"synset-{method}-{addons}-{dataset}-ipc{run_config['ipc']}-s{run_config['seed']}"


def log_reference_artifact(
    cfg: Mapping[str, Any],
    job_type: str,
    name: str,
    kind: str,
    directory: Path,
    run_config: Mapping[str, Any],
    metadata: Mapping[str, Any],
    run_dir: Path,
) -> None:
    """One W&B run of `job_type` that logs `directory` as a reference artifact: lineage and
    metadata without uploading the files (expert buffers and pools take GPU-days and GBs)."""
    import wandb

    run = wandb.init(
        project=cfg.get("project", "distillkit"),
        entity=cfg.get("entity"),
        group=cfg.get("group"),
        job_type=job_type,
        tags=list(cfg.get("tags") or []),
        mode=cfg.get("mode", "offline"),
        dir=str(run_dir),
        config=dict(run_config),
        reinit="finish_previous",
        settings=wandb.Settings(console=cfg.get("console", "off"), silent=True),
    )
    artifact = wandb.Artifact(re.sub(r"[^\w.-]", "-", name), type=kind, metadata=dict(metadata))
    artifact.add_reference(Path(directory).resolve().as_uri(), checksum=False)
    run.log_artifact(artifact)
    run.finish(exit_code=0)


class WandbLogger(Logger):
    """One W&B run per Hydra job, written under the job's directory.

    `run_id` (from a checkpoint, with its `records`) continues that run online. Offline,
    `wandb sync` cannot merge two offline folders of one id, so a resumed offline run starts a
    new run in the same group, replays `records` (every scalar up to the checkpoint) and names
    the run it supersedes. A fixed `run_id` without records (a table's run) is continued.
    """

    def __init__(
        self,
        cfg: Mapping[str, Any],
        run_dir: Path,
        run_config: Mapping[str, Any],
        name: str,
        run_id: str | None = None,
        records: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        import wandb

        self._wandb = wandb
        self.run_dir = Path(run_dir)
        self.run_config = run_config
        mode = cfg.get("mode", "offline")
        flat = comparison_keys(run_config)
        # A checkpoint's resume (records given) offline; a fixed id without records (a table's
        # run) continues that id in every mode.
        offline_resume = bool(run_id) and mode == "offline" and records is not None
        config = {**run_config, **flat}
        if offline_resume:
            config["supersedes"] = run_id
        tags = [*(cfg.get("tags") or [])]
        if flat:
            method, dataset = run_config["method"]["name"], run_config["dataset"]["name"]
            tags += [method, flat["addons"], dataset, f"ipc{run_config['ipc']}"]
        self.run = wandb.init(
            id=None if offline_resume else run_id,
            resume="allow" if run_id and not offline_resume else None,
            project=cfg.get("project", "distillkit"),
            entity=cfg.get("entity"),
            group=cfg.get("group"),
            job_type=cfg.get("job_type") or "distill",
            tags=list(dict.fromkeys(tags)),
            name=name,
            mode=mode,
            dir=str(run_dir),
            config=config,
            reinit="finish_previous",
            settings=wandb.Settings(console=cfg.get("console", "off"), silent=True),
        )
        #: W&B's own id (a sweep agent replaces ours): kept in checkpoints for the resume.
        self.run_id = self.run.id
        eval_models = (run_config.get("eval") or {}).get("models") or []
        for arch in eval_models:  # W&B globs match suffixes only: one declaration per model
            self.run.define_metric(f"eval/{arch}/mean", summary="max,last")
        self.run.define_metric("train/loss", summary="min,last")
        if offline_resume:
            for record in records or ():
                values = {k: v for k, v in record.items() if k not in ("step", "time")}
                self.run.log(values, step=int(record["step"]))

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        self.run.log({k: float(v) for k, v in values.items()}, step=int(step))

    def log_images(self, name: str, image: Image.Image, step: int, caption: str = "") -> None:
        caption = f"{name}: {caption}" if caption else name
        self.run.log({media_key(name): self._wandb.Image(image, caption=caption)}, step=int(step))

    def log_histogram(self, name: str, values: Any, step: int) -> None:
        array = np.asarray(values.detach().float().cpu() if hasattr(values, "detach") else values)
        self.run.log({name: self._wandb.Histogram(array.ravel())}, step=int(step))

    def log_table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        table = self._wandb.Table(columns=list(columns), data=[list(r) for r in rows])
        self.run.log({name: table})

    def log_summary(self, values: Mapping[str, Any]) -> None:
        for key, value in values.items():
            self.run.summary[key] = value

    def resume_state(self) -> dict[str, Any]:
        return {"wandb_run_id": self.run_id}

    def log_results_artifact(self) -> None:
        """synthetic_set.pt and results.json as a versioned `synthetic-dataset` artifact."""
        files = [self.run_dir / "synthetic_set.pt", self.run_dir / "results.json"]
        if not all(f.is_file() for f in files) or not comparison_keys(self.run_config):
            return
        report = json.loads(files[1].read_text())
        for key in ("best", "timings", "device"):
            if report.get(key) is not None:
                self.run.summary[key] = report[key]
        artifact = self._wandb.Artifact(
            artifact_name(self.run_config),
            type="synthetic-dataset",
            metadata={
                **comparison_keys(self.run_config),
                "seed": self.run_config.get("seed"),
                "headline": report.get("headline"),
                "final": report.get("final"),
            },
        )
        for path in files:
            artifact.add_file(str(path))
        self.run.log_artifact(artifact, aliases=["latest", f"seed{self.run_config.get('seed')}"])

    def finish(self, failed: BaseException | None = None) -> None:
        """Exit code 0 and the artifact after success; 1, tag `failed` and the error otherwise
        (an interruption that will resume is marked preempting)."""
        if failed is None:
            self.log_results_artifact()
            self.run.finish(exit_code=0)
            return
        # a stop signal (RunInterrupted), or submitit's requeue exiting after the checkpoint
        if isinstance(failed, SystemExit) or type(failed).__name__ == "RunInterrupted":
            self.run.mark_preempting()
        else:
            self.run.tags = (*self.run.tags, "failed")
        self.run.summary["error"] = f"{type(failed).__name__}: {failed}"
        self.run.finish(exit_code=1)
