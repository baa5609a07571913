"""Batched, differentiable DSA ops acting on per-row parameters.

Each op takes ``x`` of shape (N, C, H, W) and parameter tensors of shape (N,) that are already
gathered per row and on ``x``'s device, so callers never loop over rows or groups. Nothing here
clamps: DSA acts on mean/std-normalised tensors, and clamping would kill most of the gradient.
"""

from __future__ import annotations

import torch
from kornia.geometry.transform import get_rotation_matrix2d, warp_affine
from torch import Tensor


def _col(v: Tensor) -> Tensor:
    """Reshape a per-row vector (N,) so it broadcasts over (N, C, H, W)."""
    return v.view(-1, 1, 1, 1)


def color(
    x: Tensor,
    u_brightness: Tensor,
    u_saturation: Tensor,
    u_contrast: Tensor,
    brightness: float,
    saturation: float,
    contrast: float,
) -> Tensor:
    """Brightness, then saturation, then contrast, as in the DSA reference (plain ops, no clamp).

    The three steps are affine per row, so they collapse into one expression over ``x``, its
    channel mean ``m`` and its overall mean ``M``: ``c s x + c (1 - s) m + (1 - c) M + b``, with
    b, s, c the brightness shift, saturation and contrast factors (the brightness shift moves both
    means by b). One full-size pass instead of nine, forward and backward; equal to the step-by-
    step form up to float rounding (tests/test_dsa.py checks it).
    kornia's colour functions clamp to [0, 1] or go through HSV, so they are not used here.
    """
    shift = (_col(u_brightness) - 0.5) * brightness
    sat = _col(u_saturation) * saturation
    con = _col(u_contrast) + contrast
    mean_c = x.mean(dim=1, keepdim=True)
    mean_all = mean_c.mean(dim=(2, 3), keepdim=True)
    offset = (con * (1.0 - sat)) * mean_c + ((1.0 - con) * mean_all + shift)
    return torch.addcmul(offset, x, con * sat)


def crop(x: Tensor, shift_y: Tensor, shift_x: Tensor) -> Tensor:
    """Shift content by integer (shift_y, shift_x) pixels, vacated pixels set to 0.

    Done by exact indexing rather than a bilinear warp, whose coordinate normalisation would leak
    tiny interpolation weights from neighbouring pixels.
    """
    n, _, h, w = x.shape
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    src_y = rows.unsqueeze(0) - shift_y.unsqueeze(1)  # (N, H)
    src_x = cols.unsqueeze(0) - shift_x.unsqueeze(1)  # (N, W)
    valid_y = (src_y >= 0) & (src_y < h)
    valid_x = (src_x >= 0) & (src_x < w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    # Advanced indices split by a slice put the indexed dims first: result is (N, H, W, C).
    out = x[batch, :, src_y.clamp(0, h - 1).unsqueeze(2), src_x.clamp(0, w - 1).unsqueeze(1)]
    mask = (valid_y.unsqueeze(2) & valid_x.unsqueeze(1)).unsqueeze(1).to(x.dtype)
    return out.permute(0, 3, 1, 2) * mask


def cutout(x: Tensor, centre_y: Tensor, centre_x: Tensor, side_h: int, side_w: int) -> Tensor:
    """Zero one side_h x side_w rectangle per row, centred at (centre_y, centre_x), clipped."""
    _, _, h, w = x.shape
    top = (centre_y - side_h // 2).unsqueeze(1)
    left = (centre_x - side_w // 2).unsqueeze(1)
    rows = torch.arange(h, device=x.device).unsqueeze(0)
    cols = torch.arange(w, device=x.device).unsqueeze(0)
    in_y = (rows >= top) & (rows < top + side_h)  # (N, H)
    in_x = (cols >= left) & (cols < left + side_w)  # (N, W)
    keep = ~(in_y.unsqueeze(2) & in_x.unsqueeze(1))
    return x * keep.unsqueeze(1).to(x.dtype)


def flip(x: Tensor, do_flip: Tensor) -> Tensor:
    """Horizontally flip the rows where ``do_flip`` is True."""
    return torch.where(_col(do_flip), x.flip(-1), x)


def _warp(x: Tensor, angle_deg: Tensor, zoom: Tensor) -> Tensor:
    """One kornia affine warp for the whole batch, about the image centre (bilinear, zero pad)."""
    n, _, h, w = x.shape
    centre = x.new_tensor([(w - 1) / 2.0, (h - 1) / 2.0]).expand(n, 2)
    matrix = get_rotation_matrix2d(centre, angle_deg.to(x.dtype), zoom.to(x.dtype))
    return warp_affine(x, matrix, dsize=(h, w), mode="bilinear", padding_mode="zeros")


def scale(x: Tensor, sx: Tensor, sy: Tensor) -> Tensor:
    """Scale about the centre; (sx, sy) scale the sampling grid as in the DSA reference.

    The reference feeds theta = diag(sx, sy) to ``affine_grid``, so output offset d samples the
    input at sx * d: sx > 1 zooms out. kornia's matrix maps source to destination, hence 1 / s.
    """
    zoom = torch.stack([1.0 / sx, 1.0 / sy], dim=1)
    return _warp(x, torch.zeros_like(sx), zoom)


def rotate(x: Tensor, angle_deg: Tensor) -> Tensor:
    """Rotate about the centre by ``angle_deg`` (kornia: positive is counter-clockwise)."""
    return _warp(x, angle_deg, torch.ones(angle_deg.shape[0], 2, device=x.device))
