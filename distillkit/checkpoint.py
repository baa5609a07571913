"""A run's state on disk, and stopping safely: the checkpoint format, resume, stop signals and
the guard that never lets non-finite state reach a file.

A checkpoint is read once when a run is built (`CheckpointFile.load`: complete, made by the same
config, fitting this run's shapes) and applied once (`restore`); the loop then only writes.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import torch

from distillkit.errors import InputError
from distillkit.io import load_torch, remove_stale_temporaries, save_torch
from distillkit.keys import check_keys, drop_retired
from distillkit.seeding import RunGenerators

CHECKPOINT_FORMAT = "distillkit.checkpoint/2"
#: Everything a checkpoint must hold; a file lacking any of them is refused before loading.
CHECKPOINT_KEYS = (
    "format",
    "iteration",
    "synthetic",
    "method",
    "generators",
    "evaluations",
    "metrics",
    "last_loss",
    "eval_lr",
    "distil_s",
    "wandb_run_id",
    "config",
)
#: Config keys that may differ between a checkpoint's run and the run that resumes it.
#: (runtime.allocator only decides where host memory comes from: results are the same. The
#: other runtime switches change how the matching networks compute, not what is stored: the
#: images, optimiser state and generators are fp32 and device-free, so a run written under
#: `runtime=fast` continues under fp32 on a CPU without native bf16, and the other way round;
#: `LoopState.runtimes` records which iterations ran under which, for results.json.)
RUNTIME_SWITCHES = (
    "runtime.precision",
    "runtime.compile",
    "runtime.channels_last",
    "runtime.memory_budget",
)
RESUME_FREE_KEYS = frozenset(
    {
        "resume",
        "progress",
        "runtime.allocator",
        *RUNTIME_SWITCHES,
        "checkpoint.every_s",
        "checkpoint.copy_to",
        "distributed.timeout_s",
        # DD-Ranking's scores act after distillation: a resumed run may add or drop them.
        "eval.scores",
        "eval.scores_cache",
        "eval.scores_recompute",
        "eval.scores_full_epochs",
        "eval.scores_lr_grid",
        "eval.scores_weight",
        "eval.scores_gamma",
        "logger.wandb.group",
        "logger.wandb.job_type",
        "logger.wandb.console",
    }
)
#: Keys added after checkpoints were written: a checkpoint without one had this value.
RESUME_DEFAULTS: dict[str, Any] = {
    "dataset.validation": 0,
    "method.ema_eval": "fresh",
    # soft-label evaluation (its defaults are the published hard-label protocol)
    "eval.labels": "hard",
    "eval.soft_loss": "kl",
    "eval.temperature": 1.0,
    "eval.soft_scale": True,
    "eval.teacher": "train",
    "eval.teacher_epochs": 200,
}


log = logging.getLogger(__name__)


@dataclass
class LoopState:
    """What the loop accumulates besides the synthetic set and the method's own state."""

    iteration: int = 0
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    last_loss: float | None = None
    distil_s: float = 0.0
    #: CPU seconds of the distillation in this process (all its threads; `time.process_time`),
    #: counted from iteration `cpu_from_iteration` (a checkpoint from before they were counted
    #: resumes with the count starting at its iteration).
    cpu_s: float = 0.0
    cpu_from_iteration: int = 0
    #: The runtime switches each stretch of iterations ran under: [{"from_iteration", "runtime"}].
    runtimes: list[dict[str, Any]] = field(default_factory=list)

    def note_runtime(self, runtime: Mapping[str, Any] | None) -> bool:
        """Record that iterations from now on run under `runtime` (its compute switches);
        True when that differs from the stretch before (a resume under another runtime)."""
        switches = _runtime_switches(runtime)
        if self.runtimes and self.runtimes[-1]["runtime"] == switches:
            return False
        if self.runtimes and self.runtimes[-1]["from_iteration"] == self.iteration:
            self.runtimes.pop()  # no iteration ran under the previous one
            return self.note_runtime(runtime)
        changed = bool(self.runtimes)
        self.runtimes.append({"from_iteration": self.iteration, "runtime": switches})
        return changed


def _runtime_switches(runtime: Mapping[str, Any] | None) -> dict[str, Any]:
    runtime = runtime or {}
    return {k.split(".", 1)[1]: runtime.get(k.split(".", 1)[1]) for k in RUNTIME_SWITCHES}


# -- reading --------------------------------------------------------------------------------------
def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, Mapping):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Dotted keys whose values differ (keys in RESUME_FREE_KEYS ignored; RETIRED_KEYS dropped
    on both sides: `method.name` is derived from `_target_`, which is compared)."""
    a = {**RESUME_DEFAULTS, **_flatten(drop_retired(saved))}
    b = {**RESUME_DEFAULTS, **_flatten(drop_retired(current))}

    def free(key: str) -> bool:
        return any(key == f or key.startswith(f + ".") for f in RESUME_FREE_KEYS)

    keys = sorted(k for k in set(a) | set(b) if not free(k))
    return [k for k in keys if a.get(k, "<unset>") != b.get(k, "<unset>")]


def read_checkpoint(path: Path, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint file, checked to be complete and made by `cfg` (nothing is applied here)."""
    state = load_torch(path, "distillkit checkpoint")
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise InputError(
            f"{path}: not a distillkit checkpoint of this version (format {found!r}, "
            f"expected {CHECKPOINT_FORMAT!r})"
        )
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing:
        raise InputError(f"{path}: incomplete checkpoint, missing {', '.join(missing)}")
    if not isinstance(state["config"], Mapping):
        raise InputError(f"{path}: the checkpoint's configuration is not a mapping")
    differences = config_differences(state["config"], cfg)
    if differences:
        shown = ", ".join(differences[:4]) + (" ..." if len(differences) > 4 else "")
        raise InputError(
            f"{path} was written by a different configuration (differs in {shown}); "
            "re-run with the same overrides, or use a new run directory"
        )
    return state


class CheckpointFile:
    """The run directory's checkpoint.pt: where state is written, and where it resumes from.

    `copy_to` names a second file written beside every checkpoint (a place that outlives the
    run directory: a cluster's persistent disk when scratch is purged, a tracked folder when the
    run directory is not kept); a run whose directory has no checkpoint resumes from it.
    """

    def __init__(
        self, run_dir: Path, resume: str | Path | None = None, copy_to: str | Path | None = None
    ) -> None:
        self.path = Path(run_dir) / "checkpoint.pt"
        self.resume = resume
        self.copy = Path(str(copy_to)) if copy_to else None
        remove_stale_temporaries(self.path)
        if self.copy is not None:
            remove_stale_temporaries(self.copy)
        #: The newest checkpoint known to hold finite state (kept when a loss turns non-finite).
        self.last_good: Path | None = self.find()

    def find(self) -> Path | None:
        """The run directory's own checkpoint (the newest state), else the copy
        (`checkpoint.copy_to`), else `resume=<file or dir>`."""
        if self.path.exists():
            return self.path
        if self.copy is not None and self.copy.is_file():
            return self.copy
        if not self.resume:
            return None
        path = Path(str(self.resume))
        if path.is_dir():
            path = path / "checkpoint.pt"
        if not path.is_file():
            raise FileNotFoundError(f"resume={self.resume}: no checkpoint file at {path}")
        return path

    def load(self, cfg: Mapping[str, Any]) -> dict[str, Any] | None:
        """The state to resume from (checked against `cfg`), or None for a fresh run."""
        return read_checkpoint(self.last_good, cfg) if self.last_good else None

    def write(self, state: Mapping[str, Any]) -> None:
        save_torch(dict(state), self.path)
        if self.copy is not None:
            self.copy.parent.mkdir(parents=True, exist_ok=True)
            save_torch(dict(state), self.copy)
        self.last_good = self.path


class CheckpointSchedule:
    """When the loop writes a checkpoint: every `every` iterations and/or every `every_s`
    seconds of wall-clock time (0 = off; the end of the run always writes one)."""

    def __init__(self, every: int = 0, every_s: float = 0.0) -> None:
        self.every, self.every_s = int(every), float(every_s)
        self._since = time.monotonic()

    #: The keys of a run's `checkpoint` block (`copy_to` is read by CheckpointFile).
    KEYS = frozenset({"every", "every_s", "copy_to"})

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> CheckpointSchedule:
        check_keys(cfg, "checkpoint", cls.KEYS)
        return cls(int(cfg.get("every", 0) or 0), float(cfg.get("every_s", 0) or 0))

    def due(self, done: int, total: int) -> bool:
        """Whether to write after iteration `done` (never at `total`: the run's end writes)."""
        if done == total:
            return False
        by_count = bool(self.every) and done % self.every == 0
        by_time = bool(self.every_s) and time.monotonic() - self._since >= self.every_s
        return by_count or by_time

    def written(self) -> None:
        self._since = time.monotonic()


# -- applying -------------------------------------------------------------------------------------
def check_fits(state: Mapping[str, Any], synthetic: Any, iterations: int, path: Path) -> None:
    """Shapes and types that must fit this run, checked before anything is loaded."""
    stored = state["synthetic"]
    images = stored.get("images") if isinstance(stored, Mapping) else None
    labels = stored.get("labels") if isinstance(stored, Mapping) else None
    expected = tuple(synthetic.images.shape)
    if not isinstance(images, torch.Tensor) or tuple(images.shape) != expected:
        found = tuple(images.shape) if isinstance(images, torch.Tensor) else None
        raise InputError(f"{path}: synthetic images of shape {found}, this run has {expected}")
    if not isinstance(labels, torch.Tensor) or labels.shape != synthetic.labels.shape:
        raise InputError(f"{path}: synthetic labels do not fit this run")
    problem = RunGenerators.check_state(state["generators"])
    if problem:
        raise InputError(f"{path}: {problem}")
    iteration = state["iteration"]
    if not isinstance(iteration, int) or not 0 <= iteration <= iterations:
        raise InputError(f"{path}: iteration {iteration!r} is not in 0..{iterations}")
    if not isinstance(state["evaluations"], list) or not isinstance(state["metrics"], list):
        raise InputError(f"{path}: evaluations and metrics must be lists")


def restore(
    state: Mapping[str, Any],
    path: Path,
    synthetic: Any,
    method: Any,
    generators: RunGenerators,
    iterations: int,
) -> LoopState:
    """Load a read checkpoint into the run's objects (once); returns the loop's state."""
    check_fits(state, synthetic, iterations, path)
    try:
        synthetic.load_state_dict(state["synthetic"])
        method.load_state_dict(state["method"])
        generators.load_state_dict(state["generators"])
    except (KeyError, ValueError, RuntimeError, TypeError, IndexError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise InputError(
            f"{path}: the checkpoint does not fit this run ({type(exc).__name__}: {detail})"
        ) from None
    config = state["config"]
    runtimes = state.get("runtimes") or [
        {"from_iteration": 0, "runtime": _runtime_switches(config.get("runtime"))}
    ]  # checkpoints from before the history was kept: all under the config's runtime
    counted = state.get("cpu_s") is not None
    cpu_from = state.get("cpu_from_iteration", 0) if counted else state["iteration"]
    return LoopState(
        iteration=int(state["iteration"]),
        evaluations=list(state["evaluations"]),
        last_loss=state["last_loss"],
        distil_s=float(state["distil_s"]),
        cpu_s=float(state["cpu_s"]) if counted else 0.0,
        cpu_from_iteration=int(cpu_from),
        runtimes=[dict(r) for r in runtimes],
    )


def snapshot(
    loop: LoopState,
    synthetic: Any,
    method: Any,
    generators: RunGenerators,
    logger_state: Mapping[str, Any],
    cfg: Mapping[str, Any],
) -> dict[str, Any]:
    """The checkpoint of a run at `loop.iteration` (`logger_state`: metrics, wandb_run_id)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "iteration": loop.iteration,
        "synthetic": synthetic.state_dict(),
        "method": method.state_dict(),
        "generators": generators.state_dict(),
        "evaluations": loop.evaluations,
        "metrics": logger_state["metrics"],
        "last_loss": loop.last_loss,
        "eval_lr": method.eval_lr,
        "distil_s": loop.distil_s,
        "cpu_s": loop.cpu_s,
        "cpu_from_iteration": loop.cpu_from_iteration,
        "wandb_run_id": logger_state["wandb_run_id"],
        "config": cfg,
        "runtimes": loop.runtimes,
    }


# -- stopping safely ------------------------------------------------------------------------------
class RunInterrupted(Exception):
    """A stop signal ended the run at an iteration boundary, after writing a checkpoint."""

    def __init__(self, signum: int, iteration: int, checkpoint: Path) -> None:
        self.signum, self.iteration, self.checkpoint = signum, iteration, checkpoint
        super().__init__(
            f"{signal.Signals(signum).name} at iteration {iteration}: checkpoint saved to "
            f"{checkpoint}; re-run the same command (same run directory) or pass "
            f"resume={checkpoint.parent} to continue"
        )


def preemption_signal() -> signal.Signals:
    """The signal submitit sends before a SLURM time limit or preemption (`--signal`): SIGUSR2,
    or the one `SUBMITIT_PREEMPT_SIGNAL` names (submitit reads the same variable)."""
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2").upper()
    return signal.Signals[name if name.startswith("SIG") else f"SIG{name}"]


class StopSignals:
    """While active, SIGINT/SIGTERM and the preemption signal only ask the loop to stop at the
    next iteration boundary (where it writes a checkpoint and raises RunInterrupted).

    A second signal of the same kind acts at once (the previous handler is back by then). The
    preemption signal is then handed over: when its previous handler is a Python function
    (submitit's `checkpoint_and_try_requeue`), leaving the block calls it, so submitit requeues
    the job (which resumes from the checkpoint) and exits. Handlers can only be installed from
    the main thread; elsewhere signals keep their handlers.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.preempt = preemption_signal()
        self.signals = (signal.SIGINT, signal.SIGTERM, self.preempt)
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                previous = signal.signal(sig, self._handle)
                self._previous[sig] = signal.SIG_DFL if previous is None else previous
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del frame
        self.signum = signum
        signal.signal(signum, self._previous[signum])
        log.warning(
            "distillkit: %s received: stopping after this iteration with a checkpoint "
            "(send it again to stop at once)",
            signal.Signals(signum).name,
        )

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        previous = dict(self._previous)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        handler = previous.get(self.preempt)
        if self.signum == self.preempt and exc_type is RunInterrupted and callable(handler):
            log.warning("distillkit: %s; handing over to the requeue handler", exc)
            handler(self.signum, None)  # submitit: requeue, then exit

    @property
    def requested(self) -> bool:
        return self.signum is not None


class FiniteGuard:
    """Folds every step's losses into one on-device flag (no host sync per step); `check` stops
    the run when a loss or an image is not finite, keeping the last good state on disk."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = device
        self._finite: torch.Tensor | None = None

    def track(self, losses: Mapping[str, Any]) -> None:
        for value in losses.values():
            ok = torch.isfinite(torch.as_tensor(value).detach()).all().to(self.device)
            self._finite = ok if self._finite is None else self._finite & ok

    def check(
        self, iteration: int, images: torch.Tensor, keep_last_good: Any, kept_where: str
    ) -> None:
        """FloatingPointError if anything since the start is not finite (after `keep_last_good()`
        saved the last good state: it returns that state's iteration, or None)."""
        finite = self._finite is None or bool(self._finite)
        if finite and bool(torch.isfinite(images.detach()).all()):
            return
        kept = keep_last_good()
        if kept is None:
            kept_text = "no checkpoint had been written yet (see checkpoint.every)"
        else:
            kept_text = f"the last good state (iteration {kept}) is kept in {kept_where}"
        raise FloatingPointError(
            f"non-finite loss or images by iteration {iteration}, the run stopped (a learning "
            f"rate too high?); {kept_text}"
        )
