"""FTD: flat trajectory distillation (Du et al., CVPR 2023), MTT with two changes.

1. The experts are trained with GSAM (sharpness-aware minimisation with surrogate-gap guidance;
   `distillkit-experts optimizer=gsam`), so their trajectories are flatter and a student that
   strays from them accumulates less error. FTD refuses a buffer of plain SGD experts.
2. An exponential moving average of the synthetic images, E <- d E + (1 - d) S after every image
   step (E starts at the initial images), is what is evaluated, scored and saved
   (`evaluated_set`); the matching itself works on S, as in the reference (distill_FTD.py).

What it reports: the EMA is the headline (results.json `evaluated: ema`); the raw images S are
evaluated at the same points and recorded beside it (`accuracy_raw`, each evaluation's `raw`), as
the reference evaluates both (distill/distill_FTD.py ~222-244). `method.ema_eval` says how the
EMA's networks start: `fresh` (default) fresh networks, drawn as before the raw images were
also evaluated (the same EMA accuracies); `reference` the reference's quirk: each network
trained and tested on S is then trained further on the EMA (a new SGD optimiser, the whole
schedule and the learned lr again) and tested, as distill_FTD.py ~223, 231, 242 passes the
same `net_eval` to utils_baseline.py evaluate_synset (~352-389), which trains it in place
(`evaluate_in_turn`).

Everything else, FYI's doubled student batches included, is MTT's. The EMA is part of the
method's checkpoint state, so a run stopped by a non-finite loss saves the last good
checkpoint's EMA.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from distillkit.errors import ConfigError
from distillkit.methods.base import MethodContext
from distillkit.methods.mtt import MTTSettings, TrajectoryMatching
from distillkit.settings import ranged
from distillkit.synthetic import SyntheticSet

#: method.ema_eval: fresh networks for the EMA, or the reference's (those just trained on S).
EMA_EVAL = ("fresh", "reference")


@dataclass(frozen=True)
class FTDSettings(MTTSettings):
    """MTT's settings plus the EMA decay and the α of FTD's table (GSAM's alpha of the experts,
    checked against the buffer's record)."""

    ema_decay: float = ranged(0.999, minimum=0)
    gsam_alpha: float | None = ranged(None, minimum=0)
    #: How the EMA's evaluation networks start: fresh | reference (after training on S).
    ema_eval: str = "fresh"

    def check(self) -> None:
        super().check()
        if self.ema_decay >= 1:
            raise ConfigError(f"method.ema_decay must be < 1, got {self.ema_decay}")
        if self.ema_eval not in EMA_EVAL:
            raise ConfigError(f"method.ema_eval must be one of {EMA_EVAL}, got {self.ema_eval!r}")


class FlatTrajectoryDistillation(TrajectoryMatching):
    name = "ftd"
    #: GSAM experts (distillkit-experts optimizer=gsam), in a buffer of their own.
    expert_options = ("optimizer=gsam",)
    #: A smoke buffer has distillkit-experts' default alpha: accept any GSAM buffer.
    smoke_buffer_overrides = ("method.gsam_alpha=null",)
    Settings = FTDSettings
    #: What `evaluated_set` is, as results.json's `evaluated` records it.
    evaluated_name = "ema"

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        s = self.settings
        recipe = self.buffer.training or {}
        if recipe.get("optimiser", "sgd") != "gsam":
            raise ConfigError(
                f"{self.buffer.directory}: FTD needs GSAM experts, this buffer holds "
                f"{recipe.get('optimiser', 'sgd')} experts; train them with distillkit-experts "
                "optimizer=gsam (and point method.buffer at them)"
            )
        alpha = recipe.get("gsam_alpha")
        if s.gsam_alpha is not None and alpha is not None and float(alpha) != s.gsam_alpha:
            raise ConfigError(
                f"{self.buffer.directory}: experts trained with GSAM alpha {alpha}, this setting "
                f"uses {s.gsam_alpha} (FTD's table); train them with gsam.alpha={s.gsam_alpha}"
            )
        self.ema_decay = s.ema_decay
        self.ema = self.synthetic.images.detach().clone()

    def step(self, iteration: int) -> dict[str, Tensor]:
        losses = super().step(iteration)
        d = self.ema_decay
        with torch.no_grad():
            self.ema.copy_(d * self.ema + (1.0 - d) * self.synthetic.images)
        return losses

    def evaluated_set(self) -> SyntheticSet:
        """The EMA images with the synthetic set's labels, layout and metadata."""
        s = self.synthetic
        return SyntheticSet(self.ema, s.labels, s.ipc, s.num_classes, meta=s.meta, factor=s.factor)

    def also_evaluated(self) -> dict[str, SyntheticSet]:
        """Sets evaluated beside the EMA at every evaluation point, by the name results.json
        records them under: the raw images S (`raw`)."""
        return {"raw": self.synthetic}

    @property
    def evaluates_in_turn(self) -> bool:
        """True (`ema_eval: reference`): each evaluation network is trained on S, tested, then
        trained further on the EMA (evaluation.evaluate_in_turn); False: fresh networks each."""
        return self.settings.ema_eval == "reference"

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "ema": self.ema.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        with torch.no_grad():
            self.ema.copy_(state["ema"].to(self.ema.device))
