"""ZCA whitening of a dataset, as the trajectory-matching papers use it (methods.md, section 1).

Fitted with `kornia.enhance.ZCAWhitening(eps=0.1, compute_inv=True)` on the whole *un-normalised*
training set (pixels in [0, 1]) and applied to train and test; no mean/std normalisation follows.
The fitted state (mean and transform, plus the inverse for display) is a plain dict of tensors, so
it is saved with a synthetic set and re-applied when the set is evaluated later.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from distillkit.errors import InputError

ZCA_EPS = 0.1
FORMAT = "distillkit.zca/1"
#: Rows whitened per matrix product: bounds the temporary memory on large datasets.
CHUNK = 8192


@dataclass(frozen=True)
class ZCAState:
    """A fitted whitening: z = (x.flatten() - mean) @ transform; x = z @ inverse + mean."""

    mean: Tensor  # (1, D)
    transform: Tensor  # (D, D)
    inverse: Tensor  # (D, D)
    eps: float = ZCA_EPS

    @property
    def num_features(self) -> int:
        return int(self.transform.shape[0])

    def to(self, device: str | torch.device) -> ZCAState:
        return ZCAState(
            self.mean.to(device), self.transform.to(device), self.inverse.to(device), self.eps
        )

    def apply(self, x: Tensor) -> Tensor:
        """Whiten images (N, C, H, W); chunked so large datasets need no N x D temporary copy."""
        return self._map(x, self.mean, self.transform, center_first=True)

    def invert(self, z: Tensor) -> Tensor:
        """Back to pixel space (for display)."""
        return self._map(z, self.mean, self.inverse, center_first=False)

    def _map(self, x: Tensor, mean: Tensor, matrix: Tensor, center_first: bool) -> Tensor:
        n, *shape = x.shape
        if n and x[0].numel() != self.num_features:
            raise InputError(
                f"ZCA was fitted on images of {self.num_features} values, got {tuple(shape)}"
            )
        flat = x.reshape(n, -1)
        out = torch.empty_like(flat)
        mean, matrix = mean.to(x.device, x.dtype), matrix.to(x.device, x.dtype)
        for start in range(0, n, CHUNK):
            rows = flat[start : start + CHUNK]
            out[start : start + CHUNK] = (
                (rows - mean) @ matrix if center_first else rows @ matrix + mean
            )
        return out.reshape(x.shape)

    def state_dict(self) -> dict[str, Any]:
        """Serialisable (CPU tensors, plain values): saved into synthetic_set.pt."""
        return {
            "format": FORMAT,
            "eps": self.eps,
            "mean": self.mean.detach().cpu(),
            "transform": self.transform.detach().cpu(),
            "inverse": self.inverse.detach().cpu(),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> ZCAState:
        if not isinstance(state, Mapping) or state.get("format") != FORMAT:
            raise InputError(f"not a saved ZCA state (missing format {FORMAT!r})")
        return cls(state["mean"], state["transform"], state["inverse"], float(state["eps"]))


def fit_zca(images: Tensor, eps: float = ZCA_EPS) -> ZCAState:
    """Fit on un-normalised images (N, C, H, W) in [0, 1] with kornia, as the references do."""
    from kornia.enhance import ZCAWhitening

    zca = ZCAWhitening(eps=float(eps), compute_inv=True).fit(images.float())
    return ZCAState(zca.mean_vector, zca.transform_matrix, zca.transform_inv, float(eps))
