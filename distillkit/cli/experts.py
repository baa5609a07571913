"""`distillkit-experts [overrides]`: train an expert buffer for MTT (conf/experts.yaml).

Every key of the composed config is read by a typed settings class (`ExpertsConfig` and its
blocks), so a misspelt override, `++` addition or YAML key is one line naming it and the nearest
valid key (`distillkit: error: gsam.rhoo: unknown key (did you mean rho?)`), exit 2, before any
data is loaded. `Block` and `BenchSettings` are shared by the commands built on a `Bench`
(distillkit-pretrain, distillkit-unequalness, distillkit-cam).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import hydra
from omegaconf import DictConfig

from distillkit.cli._common import run_hydra_app
from distillkit.cli._stores import MemberReport, store_job
from distillkit.errors import ConfigError
from distillkit.experts import OPTIMISERS, ExpertSettings
from distillkit.keys import check_keys
from distillkit.settings import Settings, ranged


# -- what every command built on a Bench reads ----------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Block(Settings):
    """A block of a command's config read by one typed class: its keys are the fields, and a
    field typed as another `Block` is a nested block read by that class (its keys, types and
    ranges named by their dotted path, e.g. `gsam.rho`)."""

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None, section: str = "") -> Self:
        """The block `cfg` at `section`: its own unknown keys first, then its nested blocks,
        then its values (`Settings.from_config`)."""
        if cfg is not None and not isinstance(cfg, Mapping):
            keys = ", ".join(f"{section}.{k}" for k in sorted(cls.keys()))
            raise ConfigError(f"{section} must be a mapping ({keys}), got {section}={cfg!r}")
        values = dict(cfg or {})
        check_keys(values, section, cls.keys())
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            block = hints[field.name]
            if field.name in values and isinstance(block, type) and issubclass(block, Block):
                path = f"{section}.{field.name}" if section else field.name
                values[field.name] = block.from_config(values[field.name], path)
        return super().from_config(values, section)


def mapping(value: Any, path: str) -> Mapping[str, Any]:
    """`value` as a block's options ({} for none); anything else is a ConfigError."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path} must be a mapping of options, got {path}={value!r}")
    return value


def check_block(value: Any, path: str, allowed: frozenset[str] | None) -> None:
    """The keys of block `path` against `allowed` (None: the block names no known component,
    which its reader refuses itself)."""
    if allowed is not None:
        check_keys(mapping(value, path), path, allowed)


@dataclasses.dataclass(frozen=True)
class BenchSettings(Block):
    """The keys `distillkit.assembly.Bench.from_config` reads: `device`, `seed`, the `dataset`
    and `model` blocks (the keys the dataset and model they name accept: `dataset_keys`,
    `model_keys`) and an optional `runtime` block (`+runtime=fast`: the runtime's keys). Each
    command's settings add its own keys."""

    device: str = "auto"
    seed: int = ranged(0, minimum=0)
    dataset: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    model: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    runtime: Mapping[str, Any] | None = None

    def check(self) -> None:
        from distillkit.data.registry import dataset_keys
        from distillkit.models.catalog import model_keys
        from distillkit.runtime import RUNTIME_KEYS

        dataset, model = mapping(self.dataset, "dataset"), mapping(self.model, "model")
        check_block(dataset, "dataset", dataset_keys(str(dataset.get("name"))))
        check_block(model, "model", model_keys(str(model.get("name"))))
        check_block(self.runtime, "runtime", RUNTIME_KEYS)


@dataclasses.dataclass(frozen=True)
class StoreSettings(BenchSettings):
    """A command that trains a store of networks (experts, a pool): a progress bar and, with
    `+logger=wandb`, the store recorded in W&B (`_stores.store_job` reads `logger.wandb`)."""

    progress: bool = True
    logger: Mapping[str, Any] | None = None

    def check(self) -> None:
        from distillkit.logging.build import LOGGER_KEYS, WANDB_KEYS

        super().check()
        logger = mapping(self.logger, "logger")
        check_block(logger, "logger", LOGGER_KEYS)
        check_block(logger.get("wandb"), "logger.wandb", WANDB_KEYS)


# -- this command ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ExpertsDSA(Block):
    """`dsa`: the experts' per-sample DSA (mode S, `strategy` from the dataset).

    `always_flip=true` is FYI's variant (cvlab-yonsei/FYI MTT/buffer.py trains its experts with
    utils.py DiffAugment mode 'S': a p=0.5 flip on every call, then one other operation).
    """

    enabled: bool = True
    strategy: str | None = None
    always_flip: bool = False

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None, section: str = "dsa") -> Self:
        if cfg is not None and not isinstance(cfg, Mapping):
            raise ConfigError(
                "dsa must be a mapping (dsa.enabled, dsa.strategy, dsa.always_flip); "
                f"got dsa={cfg!r}: write dsa.enabled=false instead of dsa=false"
            )
        return super().from_config(cfg, section)

    def check(self) -> None:
        self.augment()  # an unknown family, or always_flip without flip, before any data

    def augment(self) -> Any:
        """The experts' DSA, or None when `enabled` is false."""
        from distillkit.augment import DSA

        if not self.enabled:
            return None
        if self.strategy is None:
            raise ConfigError("dsa.strategy must be set when dsa.enabled is true")
        cfg = {"strategy": self.strategy, "mode": "S"}
        try:
            return DSA.from_config(cfg, always_flip=self.always_flip)
        except ConfigError as exc:
            raise ConfigError(f"dsa: {exc}") from None


@dataclasses.dataclass(frozen=True)
class GsamOptions(Block):
    """`gsam`: GSAM's options when `optimizer: gsam` (FTD's buffer_FTD.py settings)."""

    rho: float = ranged(ExpertSettings.rho, minimum=0)
    alpha: float = ranged(ExpertSettings.gsam_alpha, minimum=0)
    adaptive: bool = ExpertSettings.adaptive


@dataclasses.dataclass(frozen=True)
class ExpertsConfig(StoreSettings):
    """conf/experts.yaml: every key distillkit-experts reads."""

    num_experts: int = ranged(100, minimum=1)
    epochs: int = ranged(ExpertSettings.epochs, minimum=1)
    lr: float = ranged(ExpertSettings.lr, above=0)
    batch: int = ranged(ExpertSettings.batch_size, minimum=1)
    dsa: ExpertsDSA = dataclasses.field(default_factory=ExpertsDSA)
    #: ZCA-whiten the data (the same switch as dataset.zca; either turns it on).
    zca: bool = False
    optimizer: str = ExpertSettings.optimiser
    gsam: GsamOptions = dataclasses.field(default_factory=GsamOptions)
    experts_per_shard: int = ranged(10, minimum=1)
    buffer_dir: str = ""

    def check(self) -> None:
        super().check()
        if self.optimizer not in OPTIMISERS:
            raise ConfigError(
                f"optimizer must be one of {', '.join(OPTIMISERS)}, got {self.optimizer!r}"
            )
        if not self.buffer_dir:
            raise ConfigError("buffer_dir must name the buffer's directory")

    def recipe(self) -> ExpertSettings:
        """The expert recipe (`optimizer: gsam` for FTD's experts)."""
        return ExpertSettings(
            self.epochs,
            self.lr,
            self.batch,
            optimiser=self.optimizer,
            rho=self.gsam.rho,
            gsam_alpha=self.gsam.alpha,
            adaptive=self.gsam.adaptive,
        )

    def dataset_config(self) -> dict[str, Any]:
        """The dataset block with `zca` switched on when either switch is."""
        dataset = dict(self.dataset)
        return {**dataset, "zca": bool(self.zca or dataset.get("zca"))}


def run_experts(settings: dict[str, Any]) -> dict[str, Any]:
    """Train `num_experts` experts into `buffer_dir`; returns a short summary."""
    from distillkit.assembly import Bench
    from distillkit.experts import train_experts

    command = ExpertsConfig.from_config(settings)  # every key known, before any data
    augment = command.dsa.augment()
    bench = Bench.from_config({**settings, "dataset": command.dataset_config()})
    report = MemberReport(bench.data, command.num_experts, "experts", "expert", command.progress)
    written = train_experts(
        Path(command.buffer_dir),
        bench.data,
        bench.networks,
        augment,
        command.num_experts,
        command.recipe(),
        command.experts_per_shard,
        lambda i: bench.generators[f"experts/{i}"],
        on_expert=report,
    )
    return report.summary(command.buffer_dir, written)


def expert_augment(settings: Mapping[str, Any]) -> Any:
    """The experts' per-sample DSA of a config's `dsa` block (`ExpertsDSA`), or None."""
    return ExpertsDSA.from_config(settings.get("dsa")).augment()


@hydra.main(config_path="pkg://distillkit.conf", config_name="experts", version_base="1.3")
def experts_job(cfg: DictConfig) -> None:
    store_job(run_experts, cfg, "experts")


def main(argv: Sequence[str] | None = None) -> None:
    run_hydra_app(experts_job, argv)
