"""The one loop that composes data, synthetic set, method, add-ons, evaluation and logging."""

from __future__ import annotations

import platform
import signal
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

import distillkit
from distillkit.allocator import use_allocator
from distillkit.augment import DSA
from distillkit.config import (
    ConfigError,
    resolve_device,
    synthetic_factor,
    validate_against_data,
    validate_config,
    validate_resources,
)
from distillkit.data import load_dataset
from distillkit.evaluation import EvalSettings, evaluate_set
from distillkit.io import load_torch, remove_stale_temporaries, save_json, save_torch
from distillkit.logging import build_logger
from distillkit.methods import MethodContext, build_method
from distillkit.metrics.unequalness import unequalness
from distillkit.networks import NetworkFactory
from distillkit.progress import progress_bar
from distillkit.regularizers import build_regularizers
from distillkit.seeding import RunGenerators
from distillkit.synthetic import SyntheticSet
from distillkit.visualize import class_grid, flip_figure

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
#: (runtime.allocator only decides where host memory comes from: results are the same.)
RESUME_FREE_KEYS = frozenset({"resume", "progress", "runtime.allocator"})


class RunInterrupted(Exception):
    """SIGINT/SIGTERM stopped the run at an iteration boundary, after writing a checkpoint."""

    def __init__(self, signum: int, iteration: int, checkpoint: Path) -> None:
        self.signum, self.iteration, self.checkpoint = signum, iteration, checkpoint
        super().__init__(
            f"{signal.Signals(signum).name} at iteration {iteration}: checkpoint saved to "
            f"{checkpoint}; re-run the same command (same run directory) or pass "
            f"resume={checkpoint.parent} to continue"
        )


class StopSignals:
    """While active, SIGINT/SIGTERM only ask the loop to stop at the next iteration boundary.

    A second signal of the same kind acts at once (the previous handler is back by then).
    Handlers can only be installed from the main thread; elsewhere signals keep their handlers.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                previous = signal.signal(sig, self._handle)
                self._previous[sig] = signal.SIG_DFL if previous is None else previous
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del frame
        self.signum = signum
        signal.signal(signum, self._previous[signum])
        print(
            f"distillkit: {signal.Signals(signum).name} received: stopping after this iteration "
            "with a checkpoint (send it again to stop at once)",
            file=sys.stderr,
        )

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    @property
    def requested(self) -> bool:
        return self.signum is not None


def as_dict(cfg: Mapping[str, Any] | DictConfig) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def load_data(dataset_cfg: Mapping[str, Any], device: torch.device) -> Any:
    options = {k: v for k, v in dataset_cfg.items() if k not in {"name", "root", "download"}}
    options.pop("dsa_strategy", None)
    try:
        return load_dataset(
            dataset_cfg["name"],
            root=dataset_cfg.get("root"),
            download=bool(dataset_cfg.get("download")),
            device=device,
            **options,
        )
    except TypeError as exc:  # an option the dataset does not take
        raise ConfigError(f"dataset {dataset_cfg['name']}: {exc}") from None


def check_models(cfg: Mapping[str, Any], networks: NetworkFactory) -> None:
    """Build the run's model and every evaluation model once on the dataset's image size.

    A network that cannot take the images (too small for its pooling, options it does not
    accept) otherwise fails deep inside distillation or after it, at evaluation.
    """
    c, (h, w) = networks.channels, networks.image_size
    scratch = torch.Generator().manual_seed(0)
    names = dict.fromkeys([str(cfg["model"]["name"]), *map(str, cfg["eval"]["models"])])
    for name in names:
        try:
            net = networks.for_architecture(name)(scratch).eval()
            with torch.no_grad():
                net(torch.zeros((2, c, h, w), device=networks.device))
        except (ValueError, RuntimeError, TypeError) as exc:
            detail = " ".join(str(exc).split())[:200]
            raise ConfigError(
                f"model {name} cannot take the {c}x{h}x{w} images of {cfg['dataset']['name']}: "
                f"{detail}"
            ) from None


def make_regularizers(cfg: Mapping[str, Any]) -> list[Any]:
    """The enabled add-ons; an unknown one or one that cannot serve the method is a ConfigError."""
    try:
        return build_regularizers(cfg.get("regularizer"), cfg["method"]["name"])
    except FileNotFoundError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from None


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, Mapping):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Dotted keys whose values differ (keys in RESUME_FREE_KEYS ignored)."""
    a, b = _flatten(saved), _flatten(current)

    def free(key: str) -> bool:
        return any(key == f or key.startswith(f + ".") for f in RESUME_FREE_KEYS)

    keys = sorted(k for k in set(a) | set(b) if not free(k))
    return [k for k in keys if a.get(k, "<unset>") != b.get(k, "<unset>")]


def read_checkpoint(path: Path, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint file, checked to be complete and made by `cfg` (nothing is applied here)."""
    state = load_torch(path, "distillkit checkpoint")
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(
            f"{path}: not a distillkit checkpoint of this version (format {found!r}, "
            f"expected {CHECKPOINT_FORMAT!r})"
        )
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing:
        raise ValueError(f"{path}: incomplete checkpoint, missing {', '.join(missing)}")
    if not isinstance(state["config"], Mapping):
        raise ValueError(f"{path}: the checkpoint's configuration is not a mapping")
    differences = config_differences(state["config"], cfg)
    if differences:
        shown = ", ".join(differences[:4]) + (" ..." if len(differences) > 4 else "")
        raise ValueError(
            f"{path} was written by a different configuration (differs in {shown}); "
            "re-run with the same overrides, or use a new run directory"
        )
    return state


def build_dsa(dsa_cfg: Mapping[str, Any], always_flip: bool = False) -> DSA:
    """DSA from the `dsa` config; `always_flip` forces the FYI reference's flip-first variant."""
    return DSA(
        strategy=dsa_cfg["strategy"],
        mode=dsa_cfg.get("mode", "S"),
        always_flip=always_flip or bool(dsa_cfg.get("always_flip", False)),
    )


def versions() -> dict[str, str]:
    import kornia
    import torchvision

    return {
        "distillkit": distillkit.__version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "kornia": kornia.__version__,
        "python": platform.python_version(),
    }


def run_name(cfg: Mapping[str, Any]) -> str:
    regs = "+".join(sorted(cfg.get("regularizer") or {})) or "none"
    return f"{cfg['method']['name']}-{regs}-{cfg['dataset']['name']}-ipc{cfg['ipc']}-s{cfg['seed']}"


class Trainer:
    """Builds everything from one config, distils, evaluates, and writes the run's files."""

    def __init__(self, cfg: Mapping[str, Any] | DictConfig, run_dir: str | Path) -> None:
        self.cfg = as_dict(cfg)
        self.run_dir = Path(run_dir)
        # Checks and files first: a bad config or checkpoint fails before data is loaded.
        validate_config(self.cfg)
        validate_resources(self.cfg)
        self.device = resolve_device(str(self.cfg["device"]))
        self.allocator = use_allocator((self.cfg.get("runtime") or {}).get("allocator"))
        self.checkpoint_path = self.run_dir / "checkpoint.pt"
        remove_stale_temporaries(self.checkpoint_path)
        resume_from = self.find_checkpoint()
        self._pending = read_checkpoint(resume_from, self.cfg) if resume_from else None
        #: The newest checkpoint known to hold finite state (kept when a loss turns non-finite).
        self.last_good: Path | None = resume_from
        self.regularizers = make_regularizers(self.cfg)
        self.generators = RunGenerators(self.cfg["seed"])
        self.data = load_data(self.cfg["dataset"], self.device)
        validate_against_data(self.cfg, self.data)
        self.networks = NetworkFactory.from_config(self.cfg["model"], self.data.info, self.device)
        check_models(self.cfg, self.networks)
        self.synthetic = SyntheticSet.initialise(
            self.data,
            self.cfg["ipc"],
            self.cfg["synthetic"]["init"],
            self.generators["init"],
            factor=synthetic_factor(self.cfg),
        )
        method_cfg = self.cfg["method"]
        self.synthetic.transforms = [r.transform for r in self.regularizers if r.has_transform]
        self.method = build_method(
            method_cfg["name"],
            MethodContext(
                cfg={**method_cfg, "runtime": self.cfg.get("runtime")},
                data=self.data,
                synthetic=self.synthetic,
                networks=self.networks,
                augment=build_dsa(self.cfg["dsa"]) if method_cfg.get("dsa") else None,
                generators=self.generators,
                regularizers=self.regularizers,
            ),
        )
        self.eval_settings = EvalSettings.from_config(self.cfg["eval"])
        self.eval_augment = (
            build_dsa(self.cfg["dsa"], bool(self.cfg["eval"].get("always_flip", False)))
            if self.cfg["eval"].get("dsa")
            else None
        )
        self.iterations = int(method_cfg.get("iterations", 0)) if self.method.optimises else 0
        self.unequalness_augment = build_dsa(self.cfg["dsa"])
        self.start_iteration = 0
        self.evaluations: list[dict[str, Any]] = []
        self.last_loss: float | None = None
        self.distil_s = 0.0
        self._finite: torch.Tensor | None = None
        self.progress = bool(self.cfg.get("progress", True))
        pending = self._pending or {}
        self.resume_if_possible()
        # Built after the state is in place: the local log restarts from the checkpoint's
        # records (no duplicated lines), W&B continues the checkpoint's run.
        self.logger = build_logger(
            self.cfg.get("logger", {}),
            self.run_dir,
            self.cfg,
            run_name(self.cfg),
            records=pending.get("metrics", []),
            wandb_run_id=pending.get("wandb_run_id"),
        )

    # -- state ----------------------------------------------------------------------------------
    def find_checkpoint(self) -> Path | None:
        """The run directory's own checkpoint (the newest state), else `resume=<file or dir>`."""
        if self.checkpoint_path.exists():
            return self.checkpoint_path
        resume = self.cfg.get("resume")
        if not resume:
            return None
        path = Path(str(resume))
        if path.is_dir():
            path = path / "checkpoint.pt"
        if not path.is_file():
            raise FileNotFoundError(f"resume={resume}: no checkpoint file at {path}")
        return path

    def state_dict(self, iteration: int) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "iteration": iteration,
            "synthetic": self.synthetic.state_dict(),
            "method": self.method.state_dict(),
            "generators": self.generators.state_dict(),
            "evaluations": self.evaluations,
            "metrics": self.logger.records,
            "last_loss": self.last_loss,
            "eval_lr": self.method.eval_lr,
            "distil_s": self.distil_s,
            "wandb_run_id": self.logger.wandb_run_id,
            "config": self.cfg,
        }

    def save_checkpoint(self, iteration: int) -> None:
        """Atomically write the full state; non-finite state is never saved (FloatingPointError)."""
        self.check_finite(iteration)
        save_torch(self.state_dict(iteration), self.checkpoint_path)
        self.last_good = self.checkpoint_path

    def _check_pending(self, state: Mapping[str, Any], path: Path) -> None:
        """Shapes and types that must fit this run, checked before anything is loaded."""
        synthetic = state["synthetic"]
        images = synthetic.get("images") if isinstance(synthetic, Mapping) else None
        labels = synthetic.get("labels") if isinstance(synthetic, Mapping) else None
        expected = tuple(self.synthetic.images.shape)
        if not isinstance(images, torch.Tensor) or tuple(images.shape) != expected:
            found = tuple(images.shape) if isinstance(images, torch.Tensor) else None
            raise ValueError(f"{path}: synthetic images of shape {found}, this run has {expected}")
        if not isinstance(labels, torch.Tensor) or labels.shape != self.synthetic.labels.shape:
            raise ValueError(f"{path}: synthetic labels do not fit this run")
        problem = RunGenerators.check_state(state["generators"])
        if problem:
            raise ValueError(f"{path}: {problem}")
        iteration = state["iteration"]
        if not isinstance(iteration, int) or not 0 <= iteration <= self.iterations:
            raise ValueError(f"{path}: iteration {iteration!r} is not in 0..{self.iterations}")
        if not isinstance(state["evaluations"], list) or not isinstance(state["metrics"], list):
            raise ValueError(f"{path}: evaluations and metrics must be lists")

    def resume_if_possible(self) -> bool:
        """Apply the checkpoint found at construction (once); True when the run resumed."""
        state, self._pending = self._pending, None
        if state is None:
            return False
        path = self.last_good or self.checkpoint_path
        self._check_pending(state, path)
        try:
            self.synthetic.load_state_dict(state["synthetic"])
            self.method.load_state_dict(state["method"])
            self.generators.load_state_dict(state["generators"])
        except (KeyError, ValueError, RuntimeError, TypeError, IndexError) as exc:
            detail = " ".join(str(exc).split())[:200]
            raise ValueError(
                f"{path}: the checkpoint does not fit this run ({type(exc).__name__}: {detail})"
            ) from None
        self.evaluations = list(state["evaluations"])
        self.last_loss = state["last_loss"]
        self.distil_s = float(state["distil_s"])
        self.start_iteration = int(state["iteration"])
        return True

    # -- numerical failure ----------------------------------------------------------------------
    def track_finite(self, losses: Mapping[str, Any]) -> None:
        """Fold this step's losses into one on-device flag: no host sync per step."""
        for value in losses.values():
            ok = torch.isfinite(torch.as_tensor(value).detach()).all().to(self.device)
            self._finite = ok if self._finite is None else self._finite & ok

    def check_finite(self, iteration: int) -> None:
        """Stop (FloatingPointError) if any loss since the start, or an image, is not finite."""
        finite = self._finite is None or bool(self._finite)
        if finite and bool(torch.isfinite(self.synthetic.images.detach()).all()):
            return
        kept = self.keep_last_good()
        if kept is None:
            kept_text = "no checkpoint had been written yet (see checkpoint.every)"
        else:
            kept_text = (
                f"the last good state (iteration {kept}) is kept in {self.last_good} and "
                f"{self.run_dir / 'synthetic_set.pt'}"
            )
        raise FloatingPointError(
            f"non-finite loss or images by iteration {iteration}, the run stopped (a learning "
            f"rate too high?); {kept_text}"
        )

    def keep_last_good(self) -> int | None:
        """Write synthetic_set.pt from the last good checkpoint (never from non-finite images);
        returns that checkpoint's iteration (None when there is none)."""
        if self.last_good is None:
            return None
        state = load_torch(self.last_good, "distillkit checkpoint")
        save_torch(
            {
                **state["synthetic"],
                "config": self.cfg,
                "lr": state["eval_lr"],
                "zca": self.data.zca_state,
                "iteration": state["iteration"],
            },
            self.run_dir / "synthetic_set.pt",
        )
        return int(state["iteration"])

    # -- work -----------------------------------------------------------------------------------
    def evaluate(self, iteration: int, desc: str) -> dict[str, dict[str, Any]]:
        images, labels = self.synthetic.training_set()
        results = evaluate_set(
            images,
            labels,
            self.data,
            self.networks,
            self.eval_settings,
            self.eval_augment,
            self.generators[f"eval/{iteration}"],
            lr=self.method.eval_lr,
            progress=self.progress,
            desc=desc,
        )
        self.evaluations.append({"iteration": iteration, "accuracy": results})
        self.logger.log_scalars(
            {
                f"eval/{arch}/{stat}": r[stat]
                for arch, r in results.items()
                for stat in ("mean", "std")
            },
            iteration,
        )
        return results

    def measure_unequalness(self, iteration: int) -> dict[str, float]:
        """U(S) of the (decoded, un-transformed) synthetic set; logged as unequalness/<distance>."""
        settings = self.cfg["unequalness"]
        images, labels = self.synthetic.training_set()
        scores = unequalness(
            images,
            labels,
            self.synthetic.num_classes,
            self.networks,
            self.generators[f"unequalness/{iteration}"],
            distances=list(settings["distances"]),
            num_nets=int(settings["num_nets"]),
            augment=self.unequalness_augment,
        )
        self.logger.log_scalars({f"unequalness/{k}": v for k, v in scores.items()}, iteration)
        return scores

    def display_images(self) -> torch.Tensor:
        """Stored images in the space the grids de-normalise from (ZCA undone when used)."""
        images = self.synthetic.images.detach()
        return self.data.denormalise(images) if self.data.zca_state is not None else images

    def log_grid(self, iteration: int, name: str) -> None:
        info = self.data.info
        grid = class_grid(
            self.display_images(),
            self.synthetic.ipc,
            info.num_classes,
            info.mean,
            info.std,
            max_per_class=int(self.cfg["images"]["max_per_class"]),
        )
        self.logger.log_images(name, grid, iteration, caption=f"iteration {iteration}")

    def log_flips(self, iteration: int, name: str) -> None:
        """The synthetic images beside their flips, with per-class left/right difference maps."""
        info = self.data.info
        figure = flip_figure(
            self.display_images(),
            self.synthetic.ipc,
            info.num_classes,
            info.mean,
            info.std,
            info.class_names,
            title=f"{run_name(self.cfg)} @ {iteration}",
        )
        self.logger.log_images(name, figure, iteration, caption="images and their flips")

    def distil(self) -> float | None:
        """Run the method's iterations; returns the last logged loss.

        SIGINT/SIGTERM stop it at the next iteration boundary with a checkpoint (RunInterrupted).
        """
        log_every = max(1, int(self.cfg.get("log_every", 10)))
        ckpt_every = int(self.cfg["checkpoint"]["every"])
        bar = progress_bar(
            range(self.start_iteration, self.iterations),
            desc=f"distil {self.method.name}",
            disable=not self.progress or self.iterations == 0,
            initial=self.start_iteration,
            total=self.iterations,
            unit="it",
        )
        with StopSignals() as stop:
            for iteration in bar:
                started = time.perf_counter()
                losses = self.method.step(iteration)
                self.track_finite(losses)
                done = iteration + 1
                if losses and (done % log_every == 0 or done == self.iterations):
                    self.log_losses(losses, done)
                    bar.set_postfix(loss=f"{self.last_loss:.4g}", refresh=False)
                self.periodic(done)
                self.distil_s += time.perf_counter() - started
                if stop.requested or (
                    ckpt_every and done % ckpt_every == 0 and done != self.iterations
                ):
                    self.save_checkpoint(done)
                if stop.requested:
                    bar.close()
                    raise RunInterrupted(int(stop.signum), done, self.checkpoint_path)
        bar.close()
        return self.last_loss

    def log_losses(self, losses: Mapping[str, Any], done: int) -> None:
        """Log the step's losses (one host sync); non-finite ones stop the run instead."""
        self.check_finite(done)
        values = {f"train/{k}": float(v) for k, v in losses.items()}
        self.logger.log_scalars(values, done)
        self.last_loss = values.get("train/loss", next(iter(values.values())))

    def periodic(self, done: int) -> None:
        """Intermediate evaluation, unequalness and image grids after iteration `done`."""
        eval_at = {int(i) for i in self.cfg["eval"].get("at") or []}
        unequal = self.cfg["unequalness"]
        unequal_every = int(unequal["every"]) if unequal["enabled"] else 0
        image_every = int(self.cfg["images"]["every"])
        if done in eval_at and done != self.iterations:
            self.evaluate(done, desc=f"evaluate @{done}")
        if unequal_every and done % unequal_every == 0 and done != self.iterations:
            self.measure_unequalness(done)
        if image_every and done % image_every == 0:
            self.log_grid(done, f"grid_{done:06d}")

    def run(self) -> dict[str, Any]:
        """Distil (from the checkpoint when resuming), save, evaluate; the logger always closes."""
        self.resume_if_possible()
        try:
            return self._run()
        finally:
            self.logger.finish()

    def _run(self) -> dict[str, Any]:
        if self.start_iteration == 0:
            self.log_grid(0, "grid_init")
        final_loss = self.distil()
        distilled = time.perf_counter()
        self.save_checkpoint(self.iterations)
        self.synthetic.save(
            self.run_dir / "synthetic_set.pt",
            config=self.cfg,
            lr=self.method.eval_lr,
            zca=self.data.zca_state,
        )
        self.log_grid(self.iterations, "grid_final")
        if self.cfg["images"].get("flips", True):
            self.log_flips(self.iterations, "flips_final")
        unequal = (
            self.measure_unequalness(self.iterations) if self.cfg["unequalness"]["enabled"] else {}
        )
        evaluated = self.eval_settings.num_models > 0
        final = self.evaluate(self.iterations, desc="evaluate") if evaluated else {}
        finished = time.perf_counter()
        results = self.results(final, unequal, final_loss, self.distil_s, finished - distilled)
        save_json(results, self.run_dir / "results.json")
        self.logger.log_table(
            "results",
            ["method", "regularizers", "dataset", "ipc", "model", "mean", "std", "n"],
            [
                [
                    results["method"],
                    "+".join(results["regularizers"]) or "none",
                    results["dataset"],
                    results["ipc"],
                    arch,
                    r["mean"],
                    r["std"],
                    r["n"],
                ]
                for arch, r in final.items()
            ],
        )
        self.logger.log_summary(
            {f"final/{arch}/{k}": r[k] for arch, r in final.items() for k in ("mean", "std")}
        )
        return results

    def best_evaluation(self) -> dict[str, Any] | None:
        """The best evaluation point of the headline model, labelled as a test-set selection.

        MTT's papers report it; the headline stays the final point.
        """
        model = next((m for e in self.evaluations for m in e["accuracy"]), None)
        if model is None:
            return None
        best = max(
            (e for e in self.evaluations if model in e["accuracy"]),
            key=lambda e: e["accuracy"][model]["mean"],
        )
        r = best["accuracy"][model]
        return {
            "iteration": best["iteration"],
            "model": model,
            "mean": r["mean"],
            "std": r["std"],
            "n": r["n"],
            "selection": "max over evaluations on the test set (published MTT reporting); "
            "the headline is the final point",
        }

    def results(
        self,
        final: dict[str, Any],
        unequal: dict[str, float],
        final_loss: float | None,
        distil_s: float,
        eval_s: float,
    ) -> dict[str, Any]:
        headline = None
        if final:
            model = next(iter(final))
            headline = {"model": model, **{k: final[model][k] for k in ("mean", "std", "n")}}
        return {
            "method": self.cfg["method"]["name"],
            "regularizers": sorted(self.cfg.get("regularizer") or {}),
            "dataset": self.cfg["dataset"]["name"],
            "ipc": self.cfg["ipc"],
            "seed": self.cfg["seed"],
            "model": self.cfg["model"]["name"],
            "iterations": self.iterations,
            "headline": headline,
            "accuracy": final,
            "unequalness": unequal,
            "best": self.best_evaluation(),
            "evaluations": self.evaluations,
            "final_loss": final_loss,
            "eval_lr": self.method.eval_lr,
            "timings": {
                "distil_s": round(distil_s, 3),
                "eval_s": round(eval_s, 3),
                "s_per_iteration": round(distil_s / self.iterations, 5)
                if self.iterations
                else None,
            },
            "device": str(self.device),
            "versions": versions(),
            "config": self.cfg,
        }
