"""Tests for distillkit.data: offline loading, splits, options, sampling and error messages."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import datasets

from distillkit.data import (
    DatasetInfo,
    DatasetNotFoundError,
    RealData,
    available_datasets,
    load_dataset,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def digits() -> RealData:
    return load_dataset("digits")


# ---------------------------------------------------------------- registry


def test_available_datasets_lists_every_family() -> None:
    names = available_datasets()
    assert names == sorted(names)
    for name in (
        "digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "svhn", "tinyimagenet",
        "imagenette", "imagewoof", "imagemeow", "imagesquawk", "imagefruit", "imageyellow",
    ):  # fmt: skip
        assert name in names


def test_unknown_name_raises_value_error_listing_names() -> None:
    with pytest.raises(ValueError, match="available datasets: .*cifar10.*digits"):
        load_dataset("not_a_dataset")


def test_unknown_option_raises_type_error() -> None:
    with pytest.raises(TypeError, match="image_szie"):
        load_dataset("digits", image_szie=8)


# ---------------------------------------------------------------- digits


def test_digits_loads_offline_with_stratified_split(digits: RealData) -> None:
    from sklearn.datasets import load_digits

    info = digits.info
    assert info == DatasetInfo(
        "digits", 1, (16, 16), 10, tuple(str(i) for i in range(10)), info.mean, info.std
    )
    assert digits.train_images.shape == (1347, 1, 16, 16)
    assert digits.test_images.shape == (450, 1, 16, 16)
    assert digits.train_images.dtype == torch.float32
    assert digits.train_labels.dtype == torch.int64
    totals = torch.bincount(torch.as_tensor(load_digits().target), minlength=10)
    test_counts = torch.bincount(digits.test_labels, minlength=10)
    assert torch.equal(digits.class_counts() + test_counts, totals)
    assert ((test_counts.double() - 0.25 * totals.double()).abs() <= 1).all()  # stratified


def test_digits_is_deterministic_and_ignores_root(digits: RealData) -> None:
    again = load_dataset("digits", root="/nonexistent/anywhere", download=True)
    for a, b in (
        (digits.train_images, again.train_images),
        (digits.train_labels, again.train_labels),
        (digits.test_images, again.test_images),
        (digits.test_labels, again.test_labels),
    ):
        assert torch.equal(a, b)


def test_digits_train_set_is_normalised(digits: RealData) -> None:
    assert abs(digits.train_images.mean().item()) < 1e-4
    assert abs(digits.train_images.std().item() - 1.0) < 1e-4
    pixels = digits.denormalise(digits.train_images)
    assert pixels.min().item() > -1e-5 and pixels.max().item() < 1 + 1e-5


def test_digits_image_size_option() -> None:
    from sklearn.datasets import load_digits

    native = load_dataset("digits", image_size=8)
    assert native.train_images.shape[1:] == (1, 8, 8)
    assert native.info.image_size == (8, 8)
    pixels = native.denormalise(native.train_images) * 16
    all_images = torch.as_tensor(load_digits().images, dtype=torch.float32)
    # Every native-size training image is an unresized sklearn image (scaled 0-16 -> 0-1).
    dists = torch.cdist(pixels.flatten(1), all_images.flatten(1))
    assert dists.min(dim=1).values.max().item() < 1e-3
    assert load_dataset("digits", image_size=12).test_images.shape[1:] == (1, 12, 12)


def test_digits_mirror_flips_about_half(digits: RealData) -> None:
    mirrored = load_dataset("digits", mirror=True)
    assert torch.equal(mirrored.train_labels, digits.train_labels)
    for plain, mirror in (
        (digits.train_images, mirrored.train_images),
        (digits.test_images, mirrored.test_images),
    ):
        same = torch.isclose(mirror, plain, atol=1e-5).flatten(1).all(1)
        flipped = torch.isclose(mirror, plain.flip(-1), atol=1e-5).flatten(1).all(1)
        assert (same | flipped).all()
        asymmetric = ~torch.isclose(plain, plain.flip(-1), atol=1e-5).flatten(1).all(1)
        share = (flipped & asymmetric).sum().item() / asymmetric.sum().item()
        assert 0.3 < share < 0.7


def test_train_and_test_limits_keep_first_n_per_class(digits: RealData) -> None:
    small = load_dataset("digits", train_limit=5, test_limit=3)
    assert torch.equal(small.class_counts(), torch.full((10,), 5))
    assert torch.equal(torch.bincount(small.test_labels, minlength=10), torch.full((10,), 3))
    for c in range(10):
        first = digits.class_indices(c)[:5]
        assert torch.equal(small.train_images[small.class_indices(c)], digits.train_images[first])


# ---------------------------------------------------------------- RealData


def _indexed_data(counts: tuple[int, ...]) -> RealData:
    """A RealData whose image i holds the value i, with classes shuffled through the set."""
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    labels = labels[torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(3))]
    k = len(counts)
    info = DatasetInfo("toy", 1, (1, 1), k, tuple(map(str, range(k))), (0.0,), (1.0,))
    images = torch.arange(labels.numel(), dtype=torch.float32).view(-1, 1, 1, 1)
    return RealData(info, images, labels, images[:2], labels[:2])


def test_class_indices_and_counts() -> None:
    data = _indexed_data((5, 8, 3))
    assert torch.equal(data.class_counts(), torch.tensor([5, 8, 3]))
    for c in range(3):
        idx = data.class_indices(c)
        assert (data.train_labels[idx] == c).all() and idx.numel() == (5, 8, 3)[c]
        assert torch.equal(idx, idx.sort().values)


def test_sample_per_class_is_class_contiguous_and_without_replacement() -> None:
    data = _indexed_data((5, 8, 3))
    images, labels = data.sample_per_class(3, torch.Generator().manual_seed(0))
    assert images.shape == (9, 1, 1, 1)
    assert torch.equal(labels, torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2]))
    idx = images.flatten().long()
    assert torch.equal(data.train_labels[idx], labels)
    for c in range(3):
        assert idx[3 * c : 3 * c + 3].unique().numel() == 3  # no repeats: 3 <= every count


def test_sample_per_class_uses_replacement_only_when_needed() -> None:
    data = _indexed_data((5, 8, 3))
    images, labels = data.sample_per_class(5, torch.Generator().manual_seed(0))
    idx = images.flatten().long()
    assert torch.equal(data.train_labels[idx], labels)
    assert idx[:5].unique().numel() == 5  # class 0: exactly all 5, a permutation
    assert idx[5:10].unique().numel() == 5  # class 1: 5 distinct of 8
    assert set(idx[10:].tolist()) <= set(data.class_indices(2).tolist())  # class 2: repeats


def test_sample_per_class_depends_only_on_the_generator() -> None:
    data = _indexed_data((50, 80, 30))
    torch.manual_seed(1)
    a, _ = data.sample_per_class(10, torch.Generator().manual_seed(7))
    torch.manual_seed(2)
    b, _ = data.sample_per_class(10, torch.Generator().manual_seed(7))
    c, _ = data.sample_per_class(10, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_sample_class() -> None:
    data = _indexed_data((5, 8, 3))
    few = data.sample_class(1, 8, torch.Generator().manual_seed(0)).flatten().long()
    assert few.unique().numel() == 8 and (data.train_labels[few] == 1).all()
    many = data.sample_class(2, 10, torch.Generator().manual_seed(0)).flatten().long()
    assert many.numel() == 10 and (data.train_labels[many] == 2).all()


def test_to_device_keeps_content(digits: RealData) -> None:
    moved = digits.to("cpu")
    assert torch.equal(moved.train_images, digits.train_images)
    assert torch.equal(moved.class_indices(4), digits.class_indices(4))


# ---------------------------------------------------------------- missing data


def _assert_clean_not_found(err: DatasetNotFoundError, name: str, path: Path) -> None:
    message = str(err)
    assert isinstance(err, FileNotFoundError)
    assert f"'{name}'" in message and str(path) in message and "dataset.root" in message
    assert "\n" not in message  # one paragraph
    # No chained torchvision traceback: raised `from None` (or outside any except block).
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)


@pytest.mark.parametrize("name", ["cifar10", "mnist"])
def test_bad_root_raises_clear_not_found(name: str, tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset(name, root=root)
    _assert_clean_not_found(info.value, name, root)
    assert "dataset.download=true" in str(info.value)


def test_root_falls_back_to_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILLKIT_DATA", str(tmp_path / "from_env"))
    with pytest.raises(DatasetNotFoundError, match="from_env"):
        load_dataset("mnist")


def test_download_failure_becomes_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(self: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(datasets.CIFAR100, "download", offline)
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar100", root=tmp_path, download=True)
    _assert_clean_not_found(info.value, "cifar100", tmp_path)
    assert "no network" in str(info.value)


def test_missing_image_folder_names_the_layout(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("imagewoof", root=tmp_path)
    _assert_clean_not_found(info.value, "imagewoof", tmp_path / "imagewoof" / "train")
    assert "imagewoof/train/<class>" in str(info.value)


# ---------------------------------------------------------------- ImageFolder sets


def _write_png(path: Path, value: int, size: tuple[int, int] = (6, 4)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    array[..., 0], array[..., 1], array[..., 2] = value, 255 - value, 7
    Image.fromarray(array).save(path)


def test_imagenette_from_image_folder(tmp_path: Path) -> None:
    classes = [f"n{c:08d}" for c in range(10)]
    for c, cls in enumerate(classes):
        for i in range(2):
            _write_png(tmp_path / "imagenette" / "train" / cls / f"{i}.png", 20 * c)
            _write_png(tmp_path / "imagenette" / "val" / cls / f"{i}.png", 20 * c + 1)
    data = load_dataset("imagenette", root=tmp_path, test_limit=1)
    assert data.info.class_names == tuple(classes) and data.info.num_classes == 10
    assert data.train_images.shape == (20, 3, 128, 128)
    assert data.test_images.shape == (10, 3, 128, 128)
    assert torch.equal(data.class_counts(), torch.full((10,), 2))
    pixels = (data.denormalise(data.train_images) * 255).round()
    assert torch.equal(pixels[:, 0, 64, 64], 20.0 * data.train_labels.float())
    assert torch.equal(pixels[:, 2, 64, 64], torch.full((20,), 7.0))


def test_tinyimagenet_accepts_shipped_layout(tmp_path: Path) -> None:
    base = tmp_path / "tiny-imagenet-200"
    wnids = [f"n{c:08d}" for c in range(200)]
    for c, wnid in enumerate(wnids):
        _write_png(base / "train" / wnid / "images" / f"{wnid}_0.JPEG.png", c, size=(4, 4))
    _write_png(base / "val" / "images" / "val_0.png", 5, size=(4, 4))
    _write_png(base / "val" / "images" / "val_1.png", 9, size=(4, 4))
    (base / "val" / "val_annotations.txt").write_text(
        f"val_0.png\t{wnids[5]}\t0\t0\t4\t4\nval_1.png\t{wnids[9]}\t0\t0\t4\t4\n"
    )
    data = load_dataset("tinyimagenet", root=tmp_path, train_limit=1)
    assert data.train_images.shape == (200, 3, 64, 64)
    assert torch.equal(data.test_labels, torch.tensor([5, 9]))
    assert data.info.mean == (0.485, 0.456, 0.406)


# ---------------------------------------------------------------- CIFAR-10 binary layout


def _write_cifar_bin(folder: Path) -> dict[str, list[int]]:
    """Six tiny batch files; pixel planes encode (row, column, label) so order is checkable."""
    folder.mkdir(parents=True)
    rows, cols = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    labels: dict[str, list[int]] = {}
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for b, name in enumerate(names):
        labels[name] = [(3 * b + r) % 10 for r in range(3)]
        records = [
            np.concatenate([[y], rows.ravel() * 4, cols.ravel() * 8, np.full(1024, 10 * y + 5)])
            for y in labels[name]
        ]
        np.asarray(records, dtype=np.uint8).tofile(folder / name)
    (folder / "batches.meta.txt").write_text("\n".join(f"class{c}" for c in range(10)) + "\n\n")
    return labels


def test_cifar10_binary_layout_channel_order_and_labels(tmp_path: Path) -> None:
    labels = _write_cifar_bin(tmp_path / "cifar-10-batches-bin")
    (tmp_path / "cifar-10-batches-py").mkdir()  # a (broken) pickle tree must not be used
    data = load_dataset("cifar10", root=tmp_path)
    expected_train = sum((labels[f"data_batch_{i}.bin"] for i in range(1, 6)), [])
    assert torch.equal(data.train_labels, torch.tensor(expected_train))
    assert torch.equal(data.test_labels, torch.tensor(labels["test_batch.bin"]))
    assert data.info.class_names == tuple(f"class{c}" for c in range(10))
    assert data.train_images.shape == (15, 3, 32, 32)
    pixels = (data.denormalise(data.test_images) * 255).round().long()
    rows = torch.arange(32).view(32, 1).expand(32, 32)
    for i, y in enumerate(labels["test_batch.bin"]):
        assert torch.equal(pixels[i, 0], rows * 4)  # red plane first, row-major
        assert torch.equal(pixels[i, 1], rows.T * 8)  # then green
        assert (pixels[i, 2] == 10 * y + 5).all()  # then blue


def test_cifar10_binary_via_env_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_cifar_bin(tmp_path / "cifar-10-batches-bin")
    monkeypatch.setenv("DISTILLKIT_DATA", str(tmp_path))
    data = load_dataset("cifar10", train_limit=1)
    assert data.train_images.shape[0] == 10  # the 15 records cover every class at least once


# ---------------------------------------------------------------- shared real data


def test_shared_cifar10_binary() -> None:
    if not (SHARED_DATA / "cifar-10-batches-bin").is_dir():
        pytest.skip(f"no CIFAR-10 binary tree at {SHARED_DATA}")
    data = load_dataset("cifar10", root=SHARED_DATA, train_limit=10, test_limit=10)
    assert data.train_images.shape == (100, 3, 32, 32)
    assert data.test_images.shape == (100, 3, 32, 32)
    assert torch.equal(data.class_counts(), torch.full((10,), 10))
    assert torch.equal(torch.bincount(data.test_labels, minlength=10), torch.full((10,), 10))
    assert data.info.class_names[0] == "airplane" and data.info.class_names[9] == "truck"
    first = (SHARED_DATA / "cifar-10-batches-bin" / "data_batch_1.bin").read_bytes()[:3073]
    assert data.train_labels[0].item() == first[0]
    pixels = (data.denormalise(data.train_images[0]) * 255).round().to(torch.uint8)
    assert pixels.flatten().tolist() == list(first[1:])


def test_shared_mnist() -> None:
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.skip(f"no MNIST tree at {SHARED_DATA}")
    data = load_dataset("mnist", root=SHARED_DATA, train_limit=10, test_limit=10)
    assert data.train_images.shape == (100, 1, 28, 28)
    assert data.test_images.shape == (100, 1, 28, 28)
    assert torch.equal(data.class_counts(), torch.full((10,), 10))
    assert data.train_labels[0].item() == 5  # MNIST's first training digit is a 5
    assert abs(data.denormalise(data.train_images).mean().item() - 0.13) < 0.03
