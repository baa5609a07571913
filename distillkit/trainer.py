"""The one loop that composes data, synthetic set, method, add-ons, evaluation and logging."""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

import distillkit
from distillkit.augment import DSA
from distillkit.config import (
    resolve_device,
    synthetic_factor,
    validate_against_data,
    validate_config,
)
from distillkit.data import load_dataset
from distillkit.evaluation import EvalSettings, evaluate_set
from distillkit.io import save_json, save_torch
from distillkit.logging import build_logger
from distillkit.methods import MethodContext, build_method
from distillkit.metrics.unequalness import unequalness
from distillkit.networks import NetworkFactory
from distillkit.progress import progress_bar
from distillkit.regularizers import build_regularizers
from distillkit.seeding import RunGenerators
from distillkit.synthetic import SyntheticSet
from distillkit.visualize import class_grid, flip_figure

CHECKPOINT_FORMAT = "distillkit.checkpoint/1"


def as_dict(cfg: Mapping[str, Any] | DictConfig) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def load_data(dataset_cfg: Mapping[str, Any], device: torch.device) -> Any:
    options = {k: v for k, v in dataset_cfg.items() if k not in {"name", "root", "download"}}
    options.pop("dsa_strategy", None)
    return load_dataset(
        dataset_cfg["name"],
        root=dataset_cfg.get("root"),
        download=bool(dataset_cfg.get("download")),
        device=device,
        **options,
    )


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
        validate_config(self.cfg)
        self.device = resolve_device(str(self.cfg["device"]))
        self.generators = RunGenerators(self.cfg["seed"])
        self.data = load_data(self.cfg["dataset"], self.device)
        validate_against_data(self.cfg, self.data)
        self.networks = NetworkFactory.from_config(self.cfg["model"], self.data.info, self.device)
        self.synthetic = SyntheticSet.initialise(
            self.data,
            self.cfg["ipc"],
            self.cfg["synthetic"]["init"],
            self.generators["init"],
            factor=synthetic_factor(self.cfg),
        )
        method_cfg = self.cfg["method"]
        self.regularizers = build_regularizers(self.cfg.get("regularizer"), method_cfg["name"])
        self.synthetic.transforms = [r.transform for r in self.regularizers if r.has_transform]
        self.method = build_method(
            method_cfg["name"],
            MethodContext(
                cfg=method_cfg,
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
        self.checkpoint_path = self.run_dir / "checkpoint.pt"
        self.logger = build_logger(
            self.cfg.get("logger", {}), self.run_dir, self.cfg, run_name(self.cfg)
        )
        self.progress = bool(self.cfg.get("progress", True))

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self, iteration: int) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "iteration": iteration,
            "synthetic": self.synthetic.state_dict(),
            "method": self.method.state_dict(),
            "generators": self.generators.state_dict(),
            "evaluations": self.evaluations,
            "config": self.cfg,
        }

    def save_checkpoint(self, iteration: int) -> None:
        save_torch(self.state_dict(iteration), self.checkpoint_path)

    def resume_if_possible(self) -> None:
        """Continue from the run directory's checkpoint when it was made by the same config."""
        if not self.checkpoint_path.exists():
            return
        state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{self.checkpoint_path}: not a distillkit checkpoint")
        if state["config"] != self.cfg:
            raise ValueError(
                f"{self.checkpoint_path} was written by a different configuration; "
                "use a new run directory"
            )
        self.synthetic.load_state_dict(state["synthetic"])
        self.method.load_state_dict(state["method"])
        self.generators.load_state_dict(state["generators"])
        self.evaluations = list(state["evaluations"])
        self.start_iteration = int(state["iteration"])

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
        """Run the method's iterations; returns the last logged loss."""
        log_every = max(1, int(self.cfg.get("log_every", 10)))
        ckpt_every = int(self.cfg["checkpoint"]["every"])
        image_every = int(self.cfg["images"]["every"])
        eval_at = {int(i) for i in self.cfg["eval"].get("at") or []}
        unequal = self.cfg["unequalness"]
        unequal_every = int(unequal["every"]) if unequal["enabled"] else 0
        last_loss = None
        bar = progress_bar(
            range(self.start_iteration, self.iterations),
            desc=f"distil {self.method.name}",
            disable=not self.progress or self.iterations == 0,
            initial=self.start_iteration,
            total=self.iterations,
            unit="it",
        )
        for iteration in bar:
            losses = self.method.step(iteration)
            done = iteration + 1
            if losses and (done % log_every == 0 or done == self.iterations):
                values = {f"train/{k}": float(v) for k, v in losses.items()}
                bad = [k for k, v in values.items() if not math.isfinite(v)]
                if bad:
                    raise FloatingPointError(
                        f"non-finite loss {bad} at iteration {done}; the last good checkpoint "
                        f"is {self.checkpoint_path}"
                    )
                self.logger.log_scalars(values, done)
                last_loss = values.get("train/loss", next(iter(values.values())))
                bar.set_postfix(loss=f"{last_loss:.4g}", refresh=False)
            if done in eval_at and done != self.iterations:
                self.evaluate(done, desc=f"evaluate @{done}")
            if unequal_every and done % unequal_every == 0 and done != self.iterations:
                self.measure_unequalness(done)
            if image_every and done % image_every == 0:
                self.log_grid(done, f"grid_{done:06d}")
            if ckpt_every and done % ckpt_every == 0 and done != self.iterations:
                self.save_checkpoint(done)
        bar.close()
        return last_loss

    def run(self) -> dict[str, Any]:
        started = time.perf_counter()
        self.resume_if_possible()
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
        results = self.results(
            final, unequal, final_loss, distilled - started, finished - distilled
        )
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
        self.logger.finish()
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
