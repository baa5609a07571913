"""scikit-learn's 8x8 digits: a real dataset that ships offline, for tests and quick experiments.

1,797 images (values 0-16, scaled to [0, 1]) with a fixed stratified 75/25 split
(`train_test_split(test_size=0.25, stratify=y, random_state=0)`), resized bilinearly (no
antialias) to `image_size`. `mirror=True` flips each image horizontally with p = 0.5 from a
generator seeded 0, giving a controlled dataset with bilateral equivalence (FYI experiments).
Mean/std are computed from the resized training split, so the normalised train set has mean 0
and std 1 whatever the options.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distillkit.data.raw import RawSplits
from distillkit.data.real import DatasetInfo
from distillkit.errors import ConfigError

NATIVE_SIZE = 8
MIRROR_SEED = 0


def load_digits(
    *,
    image_size: int = 16,
    mirror: bool = False,
    train_limit: int | None = None,
    test_limit: int | None = None,
) -> RawSplits:
    """Load, split, resize and optionally mirror the digits; `root`/`download` do not apply."""
    # Imported here: scikit-learn is only needed for this dataset and is slow to import.
    from sklearn.datasets import load_digits as _sk_load_digits
    from sklearn.model_selection import train_test_split

    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ConfigError(f"digits image_size must be a positive int, got {image_size!r}")
    bunch = _sk_load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    if image_size != NATIVE_SIZE:
        images = F.interpolate(
            images,
            size=(image_size, image_size),
            mode="bilinear",
            align_corners=False,
            antialias=False,
        )
    if mirror:
        # One draw over the whole dataset in its original order, independent of the split.
        gen = torch.Generator().manual_seed(MIRROR_SEED)
        flip = torch.rand(images.shape[0], generator=gen) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    train_idx, test_idx = train_test_split(
        torch.arange(labels.numel()).numpy(),
        test_size=0.25,
        stratify=labels.numpy(),
        random_state=0,
    )
    train_idx, test_idx = torch.as_tensor(train_idx), torch.as_tensor(test_idx)
    train_x = images[train_idx]
    mean = train_x.double().mean().item()
    std = train_x.double().std().item()
    info = DatasetInfo(
        name="digits",
        channels=1,
        image_size=(image_size, image_size),
        num_classes=10,
        class_names=tuple(str(i) for i in range(10)),
        mean=(mean,),
        std=(std,),
    )
    raw = RawSplits(info, train_x, labels[train_idx], images[test_idx], labels[test_idx])
    return raw.limited(train_limit, test_limit)
