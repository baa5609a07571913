"""ZCA whitening: fitted with kornia on un-normalised train pixels, applied to train and test,
serialisable, and re-applied exactly from a saved state."""

from __future__ import annotations

import io
import sys

import pytest
import torch
from kornia.enhance import ZCAWhitening

from distillkit.data import load_dataset
from distillkit.data.zca import ZCAState, fit_zca


@pytest.fixture(scope="module")
def plain():
    return load_dataset("digits", image_size=8)


@pytest.fixture(scope="module")
def whitened():
    return load_dataset("digits", image_size=8, zca=True)


def pixels(data):
    """Back to [0, 1] pixels from the mean/std-normalised dataset."""
    return data.denormalise(data.train_images), data.denormalise(data.test_images)


def test_zca_matches_kornia_fitted_on_unnormalised_train_pixels(plain, whitened):
    train, test = pixels(plain)
    zca = ZCAWhitening(eps=0.1, compute_inv=True).fit(train)
    torch.testing.assert_close(whitened.train_images, zca(train), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(whitened.test_images, zca(test), rtol=1e-4, atol=1e-4)
    assert whitened.zca.eps == 0.1


def test_whitened_data_has_no_mean_std_normalisation_and_says_so(plain, whitened):
    info = whitened.info
    assert info.zca is True and plain.info.zca is False and plain.zca is None
    assert info.mean == (0.0,) and info.std == (1.0,)
    # The whitened training set is centred and its pixels far less correlated.
    flat = whitened.train_images.flatten(1)
    assert flat.mean(0).abs().max() < 1e-4
    cov = torch.cov(flat.T)
    off_diagonal = cov - torch.diag(torch.diag(cov))
    plain_cov = torch.cov(pixels(plain)[0].flatten(1).T)
    plain_off = plain_cov - torch.diag(torch.diag(plain_cov))
    ratio_white = off_diagonal.abs().mean() / torch.diag(cov).mean()
    ratio_plain = plain_off.abs().mean() / torch.diag(plain_cov).mean()
    assert ratio_white < 0.5 * ratio_plain  # eps=0.1 regularises: decorrelated, not white


def test_denormalise_inverts_the_whitening(plain, whitened):
    train, _ = pixels(plain)
    torch.testing.assert_close(
        whitened.denormalise(whitened.train_images), train, atol=1e-4, rtol=0
    )


def test_saved_state_reapplies_exactly(whitened):
    buffer = io.BytesIO()
    torch.save(whitened.zca_state, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    again = load_dataset("digits", image_size=8, zca_state=state)
    assert again.info == whitened.info
    assert torch.equal(again.train_images, whitened.train_images)
    assert torch.equal(again.test_images, whitened.test_images)
    # A saved state wins over refitting: a limited training set still gets the saved transform.
    limited = load_dataset("digits", image_size=8, train_limit=5, zca=True, zca_state=state)
    assert torch.equal(limited.test_images, whitened.test_images)


def test_state_of_another_shape_or_format_is_refused(whitened):
    with pytest.raises(ValueError, match="ZCA was fitted on images of 64 values"):
        load_dataset("digits", image_size=16, zca_state=whitened.zca_state)
    with pytest.raises(ValueError, match="not a saved ZCA state"):
        ZCAState.from_state_dict({"mean": torch.zeros(1, 64)})


def test_fit_and_apply_roundtrip_and_device_copy():
    x = torch.rand(50, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    state = fit_zca(x)
    assert state.transform.shape == (48, 48) and state.mean.shape == (1, 48)
    torch.testing.assert_close(state.invert(state.apply(x)), x, atol=1e-4, rtol=0)
    assert state.to("cpu").apply(x).shape == x.shape
    assert load_dataset("digits", image_size=8, zca=False).zca_state is None


def test_real_data_to_device_keeps_the_whitening(whitened):
    moved = whitened.to("cpu")
    assert moved.zca is not None and moved.info.zca


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
