"""Differentiable Siamese Augmentation (DSA): draw parameters once, apply them to any batch.

Sampling and applying are split so that one draw of per-group parameters can be applied
identically to a real and a synthetic batch of different sizes (the Siamese use in DC/DSA/DM/IDM),
or with one group per row for per-sample augmentation (network training, evaluation).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from distillkit.augment import ops
from distillkit.errors import ConfigError
from distillkit.keys import check_keys

FAMILIES: tuple[str, ...] = ("color", "crop", "cutout", "flip", "scale", "rotate")
_DISABLED = ("", "none")
_CONFIG_KEYS = (
    "strategy",
    "mode",
    "always_flip",
    "scale",
    "rotate_deg",
    "crop_ratio",
    "cutout_ratio",
    "brightness",
    "saturation",
    "contrast",
)


@dataclass(frozen=True)
class DSAParams:
    """One draw of DSA parameters, shared by every row that maps to the same group.

    ``families`` are applied in order; ``values[family][name]`` is a (n_groups,) tensor.
    ``family`` is the family drawn at random in mode "S" (None in mode "M" or when disabled).
    """

    families: tuple[str, ...]
    values: Mapping[str, Mapping[str, Tensor]]
    n_groups: int
    image_size: tuple[int, int]
    family: str | None = None

    def to(self, device: torch.device | str) -> DSAParams:
        """Copy the parameter tensors to ``device`` (saves a transfer per ``apply`` call)."""
        moved = {f: {k: v.to(device) for k, v in d.items()} for f, d in self.values.items()}
        return DSAParams(self.families, moved, self.n_groups, self.image_size, self.family)


def _side(ratio: float, size: int) -> int:
    """Round half up, as the reference does with ``int(ratio * size + 0.5)``."""
    return int(ratio * size + 0.5)


#: Families IDC's DiffAug applies whenever they are in the strategy, around the one it draws.
_IDC_HEAD: tuple[str, ...] = ("flip", "color")
_IDC_TAIL: tuple[str, ...] = ("cutout",)
MODES: tuple[str, ...] = ("S", "M", "IDC")


class DSA:
    """DSA augmentation with mode "S" (one random family per draw), "M" (all families, in the
    strategy's order) or "IDC" (IDC's DiffAug composition: flip and colour whenever listed, then
    one drawn of the geometric families crop/scale/rotate, then cutout whenever listed;
    snu-mllab/Efficient-Dataset-Condensation misc/augment.py DiffAug.__call__)."""

    def __init__(
        self,
        strategy: str | None = "color_crop_cutout_flip_scale_rotate",
        mode: str = "S",
        always_flip: bool = False,
        scale: float = 1.2,
        rotate_deg: float = 15.0,
        crop_ratio: float = 0.125,
        cutout_ratio: float = 0.5,
        brightness: float = 1.0,
        saturation: float = 2.0,
        contrast: float = 0.5,
    ) -> None:
        self.strategy = "none" if strategy is None else str(strategy).strip().lower()
        self.families = self._parse_strategy(self.strategy)
        self.mode = str(mode).upper()
        if self.mode not in MODES:
            raise ConfigError(f"DSA mode must be one of {MODES}, got {mode!r}")
        self.always_flip = bool(always_flip)
        if self.always_flip and self.families and "flip" not in self.families:
            raise ConfigError(
                f"always_flip=True needs 'flip' in the strategy, got {self.strategy!r}"
            )
        if scale < 1.0:
            raise ConfigError(f"scale must be >= 1 (sx ~ U[1/scale, scale]), got {scale}")
        if rotate_deg < 0:
            raise ConfigError(f"rotate_deg must be >= 0, got {rotate_deg}")
        if not 0.0 <= crop_ratio < 1.0 or not 0.0 <= cutout_ratio <= 1.0:
            raise ConfigError(
                f"need 0 <= crop_ratio < 1, 0 <= cutout_ratio <= 1, got "
                f"{crop_ratio}, {cutout_ratio}"
            )
        self.scale = float(scale)
        self.rotate_deg = float(rotate_deg)
        self.crop_ratio = float(crop_ratio)
        self.cutout_ratio = float(cutout_ratio)
        self.brightness = float(brightness)
        self.saturation = float(saturation)
        self.contrast = float(contrast)

    @staticmethod
    def _parse_strategy(strategy: str) -> tuple[str, ...]:
        if strategy in _DISABLED:
            return ()
        names = tuple(strategy.split("_"))
        unknown = [n for n in names if n not in FAMILIES]
        if unknown:
            raise ConfigError(f"unknown DSA families {unknown} in {strategy!r}; known: {FAMILIES}")
        if len(set(names)) != len(names):
            raise ConfigError(f"DSA strategy repeats a family: {strategy!r}")
        return names

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], always_flip: bool = False) -> DSA:
        """Build from a run's `dsa` block (constructor keys; unknown keys are an error).

        `always_flip` forces the FYI reference's flip-first variant (evaluation's switch).
        """
        items = dict(cfg.items())
        check_keys(items, "dsa", _CONFIG_KEYS)
        if always_flip:
            items["always_flip"] = True
        return cls(**items)

    @property
    def enabled(self) -> bool:
        """False for strategy "" / "none": then ``apply`` and calls return the input unchanged."""
        return bool(self.families)

    def __repr__(self) -> str:
        keys = ", ".join(f"{k}={getattr(self, k)!r}" for k in _CONFIG_KEYS)
        return f"DSA({keys})"

    # ---------------------------------------------------------------- sampling

    def sample(
        self,
        n_groups: int,
        generator: torch.Generator,
        image_size: tuple[int, int],
        device: torch.device | str | None = None,
    ) -> DSAParams:
        """Draw per-group parameters using only ``generator`` (drawn on its device).

        Pass ``device`` to move them once, instead of on every ``apply``.
        """
        if n_groups < 1:
            raise ValueError(f"n_groups must be >= 1, got {n_groups}")
        h, w = (int(s) for s in image_size)
        size = (h, w)
        if not self.families:
            return DSAParams((), {}, n_groups, size)
        chosen: str | None = None
        if self.mode == "M":
            families = self.families
        elif self.mode == "IDC":
            families, chosen = self._idc_families(generator)
        else:
            pool = self.families
            prefix: tuple[str, ...] = ()
            if self.always_flip:
                prefix = ("flip",)
                pool = tuple(f for f in self.families if f != "flip")
            chosen = self._choose(pool, generator) if pool else None
            families = prefix + ((chosen,) if chosen else ())
        values = {f: self._draw(f, n_groups, generator, size) for f in families}
        if device is not None:
            values = {f: {k: v.to(device) for k, v in d.items()} for f, d in values.items()}
        return DSAParams(families, values, n_groups, size, chosen)

    def _idc_families(self, generator: torch.Generator) -> tuple[tuple[str, ...], str | None]:
        """IDC's order: flip, colour, one geometric family drawn per call, cutout (each only
        when the strategy lists it; a flip is always drawn then, so `always_flip` changes
        nothing)."""
        head = tuple(f for f in _IDC_HEAD if f in self.families)
        tail = tuple(f for f in _IDC_TAIL if f in self.families)
        pool = tuple(f for f in self.families if f not in _IDC_HEAD + _IDC_TAIL)
        chosen = self._choose(pool, generator) if pool else None
        return head + ((chosen,) if chosen else ()) + tail, chosen

    @staticmethod
    def _choose(pool: tuple[str, ...], g: torch.Generator) -> str:
        return pool[int(torch.randint(len(pool), (1,), generator=g, device=g.device).item())]

    def _draw(
        self, family: str, n: int, g: torch.Generator, size: tuple[int, int]
    ) -> dict[str, Tensor]:
        def rand() -> Tensor:
            return torch.rand(n, generator=g, device=g.device)

        def randint(low: int, high: int) -> Tensor:
            return torch.randint(low, high, (n,), generator=g, device=g.device)

        h, w = size
        if family == "color":
            return {"u_brightness": rand(), "u_saturation": rand(), "u_contrast": rand()}
        if family == "crop":
            ry, rx = _side(self.crop_ratio, h), _side(self.crop_ratio, w)
            return {"shift_y": randint(-ry, ry + 1), "shift_x": randint(-rx, rx + 1)}
        if family == "cutout":
            # The reference draws the centre in [0, size + (1 - side % 2)): one position past
            # the last row/column when the side is even (DatasetCondensation utils.py rand_cutout).
            side_h, side_w = _side(self.cutout_ratio, h), _side(self.cutout_ratio, w)
            return {
                "centre_y": randint(0, h + 1 - side_h % 2),
                "centre_x": randint(0, w + 1 - side_w % 2),
            }
        if family == "flip":
            return {"flip": rand() < 0.5}
        if family == "scale":
            lo = 1.0 / self.scale
            return {"sx": lo + rand() * (self.scale - lo), "sy": lo + rand() * (self.scale - lo)}
        if family == "rotate":
            return {"angle_deg": (rand() * 2.0 - 1.0) * self.rotate_deg}
        raise ValueError(f"unknown DSA family {family!r}")

    # ---------------------------------------------------------------- applying

    def apply(self, x: Tensor, params: DSAParams, groups: Tensor | None = None) -> Tensor:
        """Apply ``params`` to ``x`` (N, C, H, W); row i uses group ``groups[i]`` (default i)."""
        if not self.enabled or not params.families:
            return x
        if x.dim() != 4 or tuple(x.shape[-2:]) != params.image_size:
            raise ValueError(
                f"x must be (N, C, H, W) with (H, W) = {params.image_size} as sampled, "
                f"got {tuple(x.shape)}"
            )
        index = self._row_index(x, params, groups)
        for family in params.families:
            rows = {k: self._gather(v, index, x) for k, v in params.values[family].items()}
            x = self._apply_family(family, x, rows)
        return x

    @staticmethod
    def _row_index(x: Tensor, params: DSAParams, groups: Tensor | None) -> Tensor | slice:
        n = x.shape[0]
        if groups is None:
            if n > params.n_groups:
                raise ValueError(
                    f"groups=None maps row i to group i, but batch {n} > n_groups "
                    f"{params.n_groups}; pass groups"
                )
            return slice(0, n)
        if groups.shape != (n,) or groups.dtype.is_floating_point or groups.dtype == torch.bool:
            raise ValueError(
                f"groups must be an integer tensor of shape ({n},), "
                f"got {groups.dtype} {tuple(groups.shape)}"
            )
        # Range check only where it costs no device sync; out-of-range on GPU fails in indexing.
        if (
            groups.device.type == "cpu"
            and n
            and (int(groups.min()) < 0 or int(groups.max()) >= params.n_groups)
        ):
            raise ValueError(f"group ids must lie in [0, {params.n_groups})")
        return groups.to(x.device, torch.long)

    @staticmethod
    def _gather(v: Tensor, index: Tensor | slice, x: Tensor) -> Tensor:
        v = v.to(x.device)[index]
        return v.to(x.dtype) if v.is_floating_point() else v

    def _apply_family(self, family: str, x: Tensor, p: dict[str, Tensor]) -> Tensor:
        h, w = x.shape[-2:]
        if family == "color":
            return ops.color(
                x,
                p["u_brightness"],
                p["u_saturation"],
                p["u_contrast"],
                self.brightness,
                self.saturation,
                self.contrast,
            )
        if family == "crop":
            return ops.crop(x, p["shift_y"], p["shift_x"])
        if family == "cutout":
            side_h, side_w = _side(self.cutout_ratio, h), _side(self.cutout_ratio, w)
            return ops.cutout(x, p["centre_y"], p["centre_x"], side_h, side_w)
        if family == "flip":
            return ops.flip(x, p["flip"])
        if family == "scale":
            return ops.scale(x, p["sx"], p["sy"])
        if family == "rotate":
            return ops.rotate(x, p["angle_deg"])
        raise ValueError(f"unknown DSA family {family!r}")

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Per-sample augmentation: every row gets its own parameters (one family per call)."""
        if not self.enabled or x.shape[0] == 0:
            return x
        params = self.sample(x.shape[0], generator, (x.shape[-2], x.shape[-1]), device=x.device)
        return self.apply(x, params)
