"""Attention backends: how attention is computed for a component (see :mod:`.base`).

``create_backend(name, **options)`` builds one; ``list_backends()`` names them;
``backend_availability(name, device)`` says whether one can run and, if not, why.
"""

from __future__ import annotations

import difflib
from typing import Any

import torch

from .base import AttentionBackend
from .dense import DenseBackend

_BACKENDS: dict[str, type[AttentionBackend]] = {}


def register_backend(cls: type[AttentionBackend]) -> type[AttentionBackend]:
    """Class decorator/function registering a backend under ``cls.name`` (duplicates rejected)."""
    if not cls.name:
        raise ValueError(f"backend class {cls.__qualname__} has no name")
    if cls.name in _BACKENDS:
        raise ValueError(f"attention backend {cls.name!r} is already registered")
    _BACKENDS[cls.name] = cls
    return cls


register_backend(DenseBackend)


def list_backends() -> list[str]:
    return sorted(_BACKENDS)


def _get(name: str) -> type[AttentionBackend]:
    if name not in _BACKENDS:
        hint = difflib.get_close_matches(name, list_backends(), n=1)
        extra = f" Did you mean {hint[0]!r}?" if hint else ""
        raise ValueError(f"unknown attention backend {name!r}; known backends are {list_backends()}.{extra}")
    return _BACKENDS[name]


def backend_availability(name: str, device: torch.device | str = "cpu") -> tuple[bool, str]:
    return _get(name).availability(device)


def create_backend(name: str = "dense", **options: Any) -> AttentionBackend:
    """A new backend instance (each holds its own mask/layout caches)."""
    return _get(name)(**options)


__all__ = ["AttentionBackend", "backend_availability", "create_backend", "list_backends", "register_backend"]

# Importing a backend module registers it (after register_backend exists). Order: auto picks among the others.
from . import auto, blocksparse, flex, xformers  # noqa: E402,F401  (importing registers them)
