"""The data interface: every data set yields fixed-length byte sequences (values 0..255).

A data module registers a builder with :func:`register_dataset`; ``build_data(cfg)`` returns a
:class:`DataBundle` with ``train`` / ``val`` / ``test`` datasets whose items are ``torch.long``
tensors of shape ``(seq_len,)``, plus the metadata the model's data embedding needs
(``data_shape``: the shape of one example in byte order, e.g. ``[28, 28]``, ``[32, 32, 3]`` for
interleaved RGB or ``[3, 32, 32]`` for channel planes, ``[seq_len]`` for a 1-D stream).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch.utils.data import Dataset


@dataclass
class DataBundle:
    """One data set's splits, each a ``Dataset`` of byte sequences of length ``seq_len``.

    ``data_shape`` is the shape of one example in byte order (``[28, 28]`` for Fashion-MNIST,
    ``[32, 32, 3]`` for CIFAR-10, ``[seq_len]`` for a stream of text or audio); ``name`` is the
    registered name; ``info`` holds facts about the data set (sizes, sources) for logs and docs.
    """

    train: Dataset
    val: Dataset
    test: Dataset
    seq_len: int
    data_shape: list[int]
    name: str = ""
    info: dict[str, Any] = field(default_factory=dict)


_DATASETS: dict[str, Callable[..., DataBundle]] = {}


def register_dataset(name: str) -> Callable[[Callable[..., DataBundle]], Callable[..., DataBundle]]:
    """Decorator registering ``fn(**cfg) -> DataBundle`` under ``name`` (duplicates rejected)."""

    def decorator(fn: Callable[..., DataBundle]) -> Callable[..., DataBundle]:
        if name in _DATASETS:
            raise ValueError(f"data set {name!r} is already registered")
        _DATASETS[name] = fn
        return fn

    return decorator


def list_datasets() -> list[str]:
    return sorted(_DATASETS)


def build_data(name: str, **kwargs: Any) -> DataBundle:
    """Build the registered data set ``name`` with its keyword options."""
    if name not in _DATASETS:
        hint = difflib.get_close_matches(name, list_datasets(), n=1)
        extra = f" Did you mean {hint[0]!r}?" if hint else ""
        raise ValueError(f"unknown data set {name!r}; registered data sets are {list_datasets()}.{extra}")
    return _DATASETS[name](**kwargs)
