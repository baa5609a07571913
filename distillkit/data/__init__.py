"""Real datasets for distillation: `load_dataset(name, root, download, device, **options)`."""

from distillkit.data.errors import DatasetNotFoundError
from distillkit.data.real import DatasetInfo, RealData
from distillkit.data.registry import available_datasets, load_dataset, load_from_config

__all__ = [
    "DatasetInfo",
    "DatasetNotFoundError",
    "RealData",
    "available_datasets",
    "load_dataset",
    "load_from_config",
]
