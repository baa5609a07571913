"""SyntheticSet: the one door to networks, mosaic decoding, persistence."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distillkit.synthetic import SyntheticSet, decode_mosaic, encode_mosaic


def test_batch_applies_registered_transforms_in_order():
    syn = SyntheticSet(torch.zeros(4, 1, 2, 2), torch.tensor([0, 0, 1, 1]), 2, 2)
    syn.transforms = [lambda x, y: (x + 1, y), lambda x, y: (torch.cat([x, x * 3]), y.repeat(2))]
    x, y = syn.batch()
    assert x.shape[0] == 8 and torch.all(x[:4] == 1) and torch.all(x[4:] == 3)
    x, _ = syn.batch(rows=slice(0, 2))
    assert x.shape[0] == 4


def test_decode_gives_the_four_upsampled_quadrants_in_row_major_order():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    y = torch.tensor([3, 7])
    decoded, labels = decode_mosaic(x, y, 2)
    assert decoded.shape == (8, 1, 4, 4)
    assert labels.tolist() == [3, 3, 3, 3, 7, 7, 7, 7]
    quadrants = [x[:, :, :2, :2], x[:, :, :2, 2:], x[:, :, 2:, :2], x[:, :, 2:, 2:]]
    for q, quadrant in enumerate(quadrants):
        expected = F.interpolate(quadrant, size=(4, 4), mode="bilinear", align_corners=False)
        assert torch.allclose(decoded[q::4], expected)


def test_encode_then_decode_recovers_smooth_images():
    x = torch.ones(8, 3, 8, 8) * torch.arange(8.0)[:, None, None, None]
    mosaics, labels = encode_mosaic(x, torch.arange(8) // 4, 2)
    assert mosaics.shape == (2, 3, 8, 8) and labels.tolist() == [0, 1]
    decoded, _ = decode_mosaic(mosaics, labels, 2)
    assert torch.allclose(decoded, x, atol=1e-5)


def test_factor_two_set_trains_evaluation_on_the_decoded_images(digits):
    syn = SyntheticSet.initialise(digits, 2, "real", torch.Generator().manual_seed(0), factor=2)
    assert syn.images.shape == (20, 1, 8, 8) and syn.images_per_class == 8
    images, labels = syn.training_set()
    assert images.shape == (80, 1, 8, 8) and not images.requires_grad
    assert torch.equal(labels, torch.arange(10).repeat_interleave(8))
    x, _ = syn.batch()
    x.sum().backward()
    assert syn.images.grad is not None and bool((syn.images.grad != 0).all())


def test_save_and_load_round_trip(tmp_path, digits):
    syn = SyntheticSet.initialise(digits, 1, "noise", torch.Generator().manual_seed(0), factor=2)
    syn.save(tmp_path / "s.pt", lr=0.01)
    loaded, state = SyntheticSet.load(tmp_path / "s.pt")
    assert torch.equal(loaded.images, syn.images.detach()) and loaded.factor == 2
    assert state["lr"] == 0.01 and loaded.meta["name"] == "digits"
