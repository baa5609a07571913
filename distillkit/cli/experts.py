"""`distillkit-experts [overrides]`: train an expert buffer for MTT (conf/experts.yaml)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from distillkit.cli._common import run_hydra_app
from distillkit.cli._stores import MemberReport, store_job


def run_experts(settings: dict[str, Any]) -> dict[str, Any]:
    """Train `num_experts` experts into `buffer_dir`; returns a short summary."""
    from distillkit.assembly import Bench
    from distillkit.experts import train_experts

    augment = expert_augment(settings)
    recipe = expert_settings(settings)
    dataset_cfg = dict(settings["dataset"])
    dataset_cfg["zca"] = bool(settings.get("zca") or dataset_cfg.get("zca"))
    bench = Bench.from_config({**settings, "dataset": dataset_cfg})
    num_experts = int(settings["num_experts"])
    report = MemberReport(
        bench.data, num_experts, "experts", "expert", bool(settings.get("progress", True))
    )
    written = train_experts(
        Path(settings["buffer_dir"]),
        bench.data,
        bench.networks,
        augment,
        num_experts,
        recipe,
        int(settings["experts_per_shard"]),
        lambda i: bench.generators[f"experts/{i}"],
        on_expert=report,
    )
    return report.summary(settings["buffer_dir"], written)


def expert_augment(settings: dict[str, Any]) -> Any:
    """The experts' per-sample DSA (`dsa.enabled`, `dsa.strategy`, mode S), or None.

    `dsa.always_flip=true` is FYI's variant (cvlab-yonsei/FYI MTT/buffer.py trains its experts
    with utils.py DiffAugment mode 'S': a p=0.5 flip on every call, then one other operation).
    """
    from distillkit.augment import DSA
    from distillkit.errors import ConfigError

    dsa = settings.get("dsa")
    if not isinstance(dsa, Mapping):
        raise ConfigError(
            "dsa must be a mapping (dsa.enabled, dsa.strategy, dsa.always_flip); "
            f"got dsa={dsa!r}: write dsa.enabled=false instead of dsa=false"
        )
    if not dsa.get("enabled", True):
        return None
    always_flip = dsa.get("always_flip", False)
    if not isinstance(always_flip, bool):
        raise ConfigError(f"dsa.always_flip must be true or false, got {always_flip!r}")
    try:
        return DSA.from_config({"strategy": dsa["strategy"], "mode": "S"}, always_flip=always_flip)
    except ConfigError as exc:
        raise ConfigError(f"dsa: {exc}") from None


def expert_settings(settings: dict[str, Any]) -> Any:
    """The expert recipe of the command's settings (`optimizer: gsam` for FTD's experts)."""
    from distillkit.errors import ConfigError
    from distillkit.experts import OPTIMISERS, ExpertSettings

    optimiser = str(settings.get("optimizer", "sgd"))
    if optimiser not in OPTIMISERS:
        raise ConfigError(f"optimizer must be one of {', '.join(OPTIMISERS)}, got {optimiser!r}")
    gsam = dict(settings.get("gsam") or {})
    try:
        return ExpertSettings(
            int(settings["epochs"]),
            float(settings["lr"]),
            int(settings["batch"]),
            optimiser=optimiser,
            rho=float(gsam.get("rho", 0.01)),
            gsam_alpha=float(gsam.get("alpha", 0.4)),
            adaptive=bool(gsam.get("adaptive", True)),
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


@hydra.main(config_path="pkg://distillkit.conf", config_name="experts", version_base="1.3")
def experts_job(cfg: DictConfig) -> None:
    store_job(run_experts, cfg, "experts")


def main(argv: Sequence[str] | None = None) -> None:
    run_hydra_app(experts_job, argv)
