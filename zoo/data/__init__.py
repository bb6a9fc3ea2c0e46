"""Data sets as byte sequences; see :mod:`zoo.data.base`. Importing a module registers it."""

import importlib

from .base import DataBundle, build_data, list_datasets, register_dataset

# Each entry is a module of this package that registers one data set when imported.
_MODULES = ["fashion_mnist", "synthetic", "cifar10", "imagenet64", "enwik8", "wikipedia_excerpt", "audio"]
for _m in _MODULES:
    try:
        importlib.import_module(f"{__name__}.{_m}")
    except ModuleNotFoundError as err:  # a module not written yet must not break the others
        if err.name != f"{__name__}.{_m}":
            raise

__all__ = ["DataBundle", "build_data", "list_datasets", "register_dataset"]
