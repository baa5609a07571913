"""Which augmentation a run's config asks for: the Siamese DSA of matching and the per-sample
augmentation of evaluation (DSA, DC's reference augmentation per dataset and model, or none)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from distillkit.augment.dc import DCEvaluationAugment
from distillkit.augment.dsa import DSA
from distillkit.errors import ConfigError

EVAL_AUGMENTS = ("dsa", "dc", "none")


def distillation_augment(cfg: Mapping[str, Any]) -> DSA | None:
    """The Siamese DSA of matching, when the method asks for it (`method.dsa`)."""
    return DSA.from_config(cfg["dsa"]) if cfg["method"].get("dsa") else None


def evaluation_augment(cfg: Mapping[str, Any], eval_cfg: Mapping[str, Any] | None = None) -> Any:
    """Per-sample DSA of evaluation (`eval.dsa`; `eval.always_flip` forces FYI's flip-first;
    `eval.dsa_strategy`, when set, replaces the run's strategy: IDC drops cutout for CutMix;
    `eval.dsa_mode`, when set, the run's `dsa.mode`: IDC's composition is mode IDC), or
    DC's reference augmentation per dataset and model (`eval.augment: dc`), or none."""
    eval_cfg = cfg["eval"] if eval_cfg is None else eval_cfg
    augment = eval_cfg.get("augment", "dsa")
    if augment == "dc":
        return DCEvaluationAugment(str(cfg["dataset"]["name"]))
    if augment not in (*EVAL_AUGMENTS, None):
        raise ConfigError(f"eval.augment must be dsa, dc or none, got {augment!r}")
    if augment == "none" or not eval_cfg.get("dsa"):
        return None
    dsa_cfg = dict(cfg["dsa"])
    if eval_cfg.get("dsa_strategy"):
        dsa_cfg["strategy"] = eval_cfg["dsa_strategy"]
    if eval_cfg.get("dsa_mode"):
        dsa_cfg["mode"] = eval_cfg["dsa_mode"]
    return DSA.from_config(dsa_cfg, always_flip=bool(eval_cfg.get("always_flip", False)))
