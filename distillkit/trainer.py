"""The one loop: data -> synthetic set -> method steps -> evaluation -> files.

Everything is built from one config (distillkit.assembly), a checkpoint is read once and applied
once (distillkit.checkpoint), and the results are written in one schema (distillkit.report).
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from distillkit.allocator import use_allocator
from distillkit.assembly import assemble_run
from distillkit.augment import DSA
from distillkit.checkpoint import (
    CheckpointFile,
    CheckpointSchedule,
    FiniteGuard,
    LoopState,
    RunInterrupted,
    StopSignals,
    restore,
    snapshot,
)
from distillkit.config import checked_config
from distillkit.distributed import World
from distillkit.evaluation import evaluate_in_turn, evaluate_set
from distillkit.io import load_torch, save_json
from distillkit.logging import Logger, build_logger
from distillkit.metrics import fair_scores
from distillkit.metrics.unequalness import unequalness
from distillkit.progress import progress_bar
from distillkit.report import results, run_name, table_columns, table_rows
from distillkit.visualize import class_grid, flip_figure

__all__ = ["RunInterrupted", "Trainer"]

log = logging.getLogger(__name__)
#: What a rank that received no signal reports when another rank's stop request ends the run.
STOP_SIGNAL = signal.SIGTERM


class Trainer:
    """Builds everything from one config, distils, evaluates, and writes the run's files.

    With a `world` of several ranks (distillkit.distributed) every rank runs this loop on the
    same run directory: the method splits its work (`Method.distributed_split`), each step's
    losses and stop requests are summed over the ranks, the ranks' shards are assembled
    (`sync_shards`) before anything reads the whole set, evaluation models are spread over
    them, and rank 0 alone writes checkpoints, results, grids and W&B."""

    def __init__(
        self, cfg: Mapping[str, Any] | DictConfig, run_dir: str | Path, world: World | None = None
    ) -> None:
        self.run_dir = Path(run_dir)
        self.world = world or World.single()
        self.is_main = self.world.is_main
        # Checks and files first: a bad config or checkpoint fails before data is loaded.
        self.cfg = checked_config(cfg)
        self.allocator = use_allocator((self.cfg.get("runtime") or {}).get("allocator"))
        self.checkpoint = CheckpointFile(
            self.run_dir, self.cfg.get("resume"), (self.cfg.get("checkpoint") or {}).get("copy_to")
        )
        saved = self.checkpoint.load(self.cfg)
        parts = assemble_run(self.cfg, world=self.world)
        self.bench, self.addons = parts.bench, parts.addons
        self.data, self.device = parts.bench.data, parts.bench.device
        self.synthetic, self.method = parts.synthetic, parts.method  # type: ignore[assignment]
        self.iterations = (
            int(self.cfg["method"].get("iterations", 0)) if self.method.optimises else 0
        )
        self.eval_settings, self.eval_augment = parts.eval_settings, parts.eval_augment
        fair_scores.check_setup(self.eval_settings, self.data)  # before any distillation
        self.unequalness_augment = DSA.from_config(self.cfg["dsa"])
        self.guard = FiniteGuard(self.device)
        self.progress = bool(self.cfg.get("progress", True))
        self.state = LoopState()
        if saved is not None:
            self.state = restore(
                saved,
                self.checkpoint.last_good or self.checkpoint.path,
                self.synthetic,
                self.method,
                self.bench.generators,
                self.iterations,
            )
        self._start = self.state.iteration
        if saved is not None:
            log.info("resuming from iteration %d (%s)", self._start, self.checkpoint.last_good)
        if self.state.note_runtime(self.cfg.get("runtime")):
            before = self.state.runtimes[-2]["runtime"] if len(self.state.runtimes) > 1 else {}
            log.warning(
                "resuming under another runtime (%s, written under %s): iterations from %d on "
                "compute under the new switches (results.json `runtimes` records both)",
                self.state.runtimes[-1]["runtime"], before, self._start,
            )  # fmt: skip
        # Built after the state is in place: the local log restarts from the checkpoint's
        # records (no duplicated lines), W&B continues the checkpoint's run.
        self.logger = (
            build_logger(
                self.cfg.get("logger", {}),
                self.run_dir,
                self.cfg,
                run_name(self.cfg),
                records=saved["metrics"] if saved else [],
                wandb_run_id=saved["wandb_run_id"] if saved else None,
            )
            if self.is_main
            else Logger()  # the other ranks' records are rank 0's: nothing to write
        )

    @property
    def start_iteration(self) -> int:
        """The iteration the loop starts from (0, or the checkpoint's)."""
        return self._start

    @property
    def evaluations(self) -> list[dict[str, Any]]:
        return self.state.evaluations

    # -- state on disk --------------------------------------------------------------------------
    def save_checkpoint(self, iteration: int) -> None:
        """Atomically write the full state; non-finite state is never saved (FloatingPointError).
        Every rank calls it (the shards are assembled first); rank 0 writes."""
        self.method.sync_shards()
        self.check_finite(iteration)
        self.state.iteration = iteration
        if not self.is_main:
            return
        self.checkpoint.write(
            snapshot(
                self.state,
                self.synthetic,
                self.method,
                self.bench.generators,
                self.logger.resume_state(),
                self.cfg,
            )
        )

    def check_finite(self, iteration: int) -> None:
        where = f"{self.checkpoint.last_good} and {self.run_dir / 'synthetic_set.pt'}"
        self.guard.check(iteration, self.synthetic.images, self.keep_last_good, where)

    def keep_last_good(self) -> int | None:
        """Write synthetic_set.pt from the last good checkpoint (never from non-finite images):
        the set the method evaluates at that point (FTD's EMA, not its raw images); returns
        that checkpoint's iteration (None when there is none). The run is stopping, so its
        objects are rolled back to the checkpoint to ask the method."""
        if self.checkpoint.last_good is None:
            return None
        if not self.is_main:  # rank 0 writes it; every rank stops with the same error
            return int(load_torch(self.checkpoint.last_good, "distillkit checkpoint")["iteration"])
        state = load_torch(self.checkpoint.last_good, "distillkit checkpoint")
        self.synthetic.load_state_dict(state["synthetic"])
        self.method.load_state_dict(state["method"])
        self.method.evaluated_set().save(
            self.run_dir / "synthetic_set.pt",
            config=self.cfg,
            lr=state["eval_lr"],
            zca=self.data.zca_state,
            iteration=state["iteration"],
        )
        return int(state["iteration"])

    # -- periodic work --------------------------------------------------------------------------
    def evaluate(
        self, iteration: int, desc: str, validation: bool = False
    ) -> dict[str, dict[str, Any]]:
        """Test accuracy (eval/<arch>/*), or with `validation` the held-out validation split's
        (val/<arch>/*, fresh models from their own stream)."""
        return self.evaluate_all(iteration, desc, validation)[0]

    def evaluate_all(
        self, iteration: int, desc: str, validation: bool = False
    ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, dict[str, Any]]]]:
        """`evaluate`, plus the accuracies of the sets a method reports beside its evaluated
        one (its `also_evaluated()`, by name: FTD's raw images), logged as eval_<name>/<arch>/*
        and kept in each evaluation's record under the name. Those get fresh models from
        stream eval/<iteration>/<name>, or with the method's `evaluates_in_turn` the same models,
        trained on them first (evaluate_in_turn). A validation evaluates only the evaluated set
        (in turn after the others when the method asks for it; their accuracies are not kept)."""
        data = self.data.validation_view() if validation else self.data
        stream = "validation" if validation else f"eval/{iteration}"
        also = dict(self.method.also_evaluated())
        in_turn = bool(also) and self.method.evaluates_in_turn
        options = {"lr": self.method.eval_lr, "progress": self.progress, "desc": desc}
        common = (self.bench.networks, self.eval_settings, self.eval_augment)
        evaluated = self.method.evaluated_set().training_set()
        others: dict[str, dict[str, dict[str, Any]]] = {}
        if in_turn:
            sets = [*(s.training_set() for s in also.values()), evaluated]
            generator = self.bench.generators[stream]
            *first, accuracy = evaluate_in_turn(sets, data, *common, generator, **options)
            others = dict(zip(also, first, strict=True))
        else:
            accuracy = evaluate_set(
                *evaluated, data, *common, self.bench.generators[stream], **options,
                world=self.world,
            )  # fmt: skip
            for name, other in ({} if validation else also).items():
                generator = self.bench.generators[f"{stream}/{name}"]
                options["desc"] = f"{desc} ({name})"
                others[name] = evaluate_set(
                    *other.training_set(), data, *common, generator, **options, world=self.world
                )
        if validation:
            others = {}
        else:
            self.state.evaluations.append({"iteration": iteration, "accuracy": accuracy, **others})
        prefix = "val" if validation else "eval"
        scalars = {f"{prefix}/{a}/{s}": r[s] for a, r in accuracy.items() for s in ("mean", "std")}
        for name, acc in others.items():
            scalars.update(
                {f"eval_{name}/{a}/{s}": r[s] for a, r in acc.items() for s in ("mean", "std")}
            )
        self.logger.log_scalars(scalars, iteration)
        return accuracy, others

    def measure_unequalness(self, iteration: int) -> dict[str, float]:
        """U(S) of the (decoded, un-transformed) synthetic set; logged as unequalness/<distance>."""
        settings = self.cfg["unequalness"]
        images, labels = self.method.evaluated_set().training_set()
        scores = unequalness(
            images,
            labels,
            self.synthetic.num_classes,
            self.bench.networks,
            self.bench.generators[f"unequalness/{iteration}"],
            distances=list(settings["distances"]),
            num_nets=int(settings["num_nets"]),
            augment=self.unequalness_augment,
        )
        self.logger.log_scalars({f"unequalness/{k}": v for k, v in scores.items()}, iteration)
        return scores

    def display_images(self) -> torch.Tensor:
        """Stored images in the space the grids de-normalise from (ZCA undone when used)."""
        images = self.method.evaluated_set().images.detach()
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
        self.logger.log_histogram("synthetic/pixels", self.synthetic.images, iteration)

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

    def periodic(self, done: int) -> None:
        """Intermediate evaluation, unequalness and image grids after iteration `done`."""
        eval_at = {int(i) for i in self.cfg["eval"].get("at") or []}
        settings = self.cfg["unequalness"]
        unequal_every = int(settings["every"]) if settings["enabled"] else 0
        image_every = int(self.cfg["images"]["every"])
        evaluate = done in eval_at and done != self.iterations
        unequal = bool(unequal_every) and done % unequal_every == 0 and done != self.iterations
        grid = bool(image_every) and done % image_every == 0
        if evaluate or unequal or grid:
            self.method.sync_shards()  # every rank: each reads the whole set
        if evaluate:
            self.evaluate(done, desc=f"evaluate @{done}")
        if unequal and self.is_main:  # its own stream: the others skip it
            self.measure_unequalness(done)
        if grid and self.is_main:
            self.log_grid(done, f"grid_{done:06d}")

    # -- the loop -------------------------------------------------------------------------------
    def distil(self) -> float | None:
        """Run the method's iterations; returns the last logged loss.

        SIGINT/SIGTERM and the preemption signal (SIGUSR2) stop it at the next iteration boundary
        with a checkpoint (RunInterrupted; submitit then requeues).
        """
        log_every = max(1, int(self.cfg.get("log_every", 10)))
        schedule = CheckpointSchedule.from_config(self.cfg["checkpoint"])
        bar = progress_bar(
            range(self._start, self.iterations),
            desc=f"distil {self.method.name}",
            disable=not self.progress or self.iterations == 0,
            initial=self._start,
            total=self.iterations,
            unit="it",
        )
        with StopSignals() as stop:
            for iteration in bar:
                started, cpu_started = time.perf_counter(), time.process_time()
                losses = self.method.step(iteration)
                done = iteration + 1
                due = schedule.due(done, self.iterations)
                losses, stopping, due = self.shared_step(losses, stop.requested, due)
                self.guard.track(losses)
                if losses and (done % log_every == 0 or done == self.iterations):
                    self.log_losses(losses, done)
                    bar.set_postfix(loss=f"{self.state.last_loss:.4g}", refresh=False)
                self.periodic(done)
                self.state.distil_s += time.perf_counter() - started
                self.state.cpu_s += time.process_time() - cpu_started
                if stopping or due:
                    self.save_checkpoint(done)
                    schedule.written()
                if stopping:
                    bar.close()
                    signum = int(stop.signum) if stop.signum is not None else STOP_SIGNAL
                    raise RunInterrupted(signum, done, self.checkpoint.path)
        bar.close()
        return self.state.last_loss

    def shared_step(
        self, losses: Mapping[str, Any], stop_requested: bool, due: bool
    ) -> tuple[dict[str, Any], bool, bool]:
        """One step's losses summed over the ranks (each rank's are its own classes' share;
        the method's `replicated_losses` are everyone's and come from rank 0), whether any
        rank was asked to stop, and rank 0's checkpoint decision (its clock decides), with one
        collective and one host sync (the loop must know whether to stop). One process: as they
        are, with no sync."""
        if not self.world.is_distributed:
            return dict(losses), bool(stop_requested), bool(due)
        names = sorted(losses)
        replicated = set(self.method.replicated_losses)
        device = self.world.device  # where the collective runs: no round trip through the host
        values = [
            torch.as_tensor(losses[n], device=device).detach().to(torch.float64).reshape(())
            * (1.0 if self.is_main or n not in replicated else 0.0)
            for n in names
        ]
        flags = torch.tensor(
            [float(stop_requested), float(due and self.is_main)], dtype=torch.float64, device=device
        )
        total = self.world.all_reduce_sum(
            torch.cat([torch.stack(values), flags]) if values else flags
        )
        shared = {n: total[i].to(torch.float32) for i, n in enumerate(names)}
        return shared, bool(total[-2] > 0), bool(total[-1] > 0)

    def log_losses(self, losses: Mapping[str, Any], done: int) -> None:
        """Log the step's losses (one host sync); non-finite ones stop the run instead."""
        self.check_finite(done)
        values = {f"train/{k}": float(v) for k, v in losses.items()}
        self.logger.log_scalars(values, done)
        self.state.last_loss = values.get("train/loss", next(iter(values.values())))

    def run(self) -> dict[str, Any]:
        """Distil (from the checkpoint when resuming), save, evaluate; the logger always closes
        (told what ended the run, if anything did)."""
        failure: BaseException | None = None
        try:
            return self._run()
        except BaseException as exc:
            failure = exc
            raise
        finally:
            self.logger.finish(failure)

    def _run(self) -> dict[str, Any]:
        if self._start == 0 and self.is_main:  # every rank starts from the same images
            self.log_grid(0, "grid_init")
        final_loss = self.distil()
        distilled, cpu_distilled = time.perf_counter(), time.process_time()
        self.save_checkpoint(self.iterations)  # the shards are whole from here on
        if self.is_main:
            self.method.evaluated_set().save(
                self.run_dir / "synthetic_set.pt",
                config=self.cfg,
                lr=self.method.eval_lr,
                zca=self.data.zca_state,
            )
            self.log_grid(self.iterations, "grid_final")
            if self.cfg["images"].get("flips", True):
                self.log_flips(self.iterations, "flips_final")
        measured = self.cfg["unequalness"]["enabled"] and self.is_main
        unequal = self.measure_unequalness(self.iterations) if measured else {}
        evaluated = self.eval_settings.num_models > 0
        final, also = self.evaluate_all(self.iterations, desc="evaluate") if evaluated else ({}, {})
        held_out = evaluated and self.data.validation is not None
        validation = self.evaluate(self.iterations, "validate", True) if held_out else None
        scores = self.fair_scores(final) if evaluated and self.eval_settings.scores else None
        report = results(
            self.cfg,
            iterations=self.iterations,
            final=final,
            unequal=unequal,
            evaluations=self.state.evaluations,
            final_loss=final_loss,
            eval_lr=self.method.eval_lr,
            distil_s=self.state.distil_s,
            eval_s=time.perf_counter() - distilled,
            cpu_s=self.state.cpu_s,
            cpu_from_iteration=self.state.cpu_from_iteration,
            eval_cpu_s=time.process_time() - cpu_distilled,
            device=str(self.device),
            validation=validation,
            addons={a.name: r for a in self.addons if (r := a.record()) is not None},
            evaluated=self.method.evaluated_name,
            also=also,
            runtimes=self.state.runtimes,
            scores=scores,
        )
        if self.is_main:
            save_json(report, self.run_dir / "results.json")
        self.logger.log_table("results", table_columns(report), table_rows(report))
        summary = {f"final/{arch}/{k}": r[k] for arch, r in final.items() for k in ("mean", "std")}
        for name, acc in also.items():
            summary.update(
                {f"final_{name}/{a}/{k}": r[k] for a, r in acc.items() for k in ("mean", "std")}
            )
        if scores is not None:
            summary.update(fair_scores.scalars(scores))
        self.logger.log_summary(summary)
        return report

    def fair_scores(self, final: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """DD-Ranking's scores of the evaluated set (`eval.scores`): the random subset of the
        same IPC, the protocol without augmentation, hard labels and the (cached) full-data
        accuracy beside the final evaluation `final`, which is reused; logged as scores/*."""
        images, labels = self.method.evaluated_set().training_set()
        scores = fair_scores.compute_scores(
            images,
            labels,
            self.data,
            self.bench.networks,
            self.eval_settings,
            self.eval_augment,
            self.bench.generators.seed,
            ipc=self.synthetic.ipc,
            syn_accuracy=final,
            eval_stream=f"eval/{self.iterations}",
            lr=self.method.eval_lr,
            dataset_cfg=self.cfg["dataset"],
            fallback_augment=DSA.from_config(self.cfg["dsa"]),
            progress=self.progress,
            world=self.world,
        )
        self.logger.log_scalars(fair_scores.scalars(scores), self.iterations)
        return scores
