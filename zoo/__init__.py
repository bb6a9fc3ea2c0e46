"""Sparse Transformer zoo (Child et al. 2019): models, model registry and byte-sequence data sets.

``zoo.build``, ``zoo.list_models``, ``zoo.get_model_config``, ``zoo.register_model``,
``zoo.ModelConfig`` and ``zoo.SparseTransformer`` are imported lazily (so that
``python -m zoo.registry`` runs without a double import).
"""

from importlib import import_module
from typing import Any

from . import data  # noqa: F401  (registers the data sets)

_LAZY = {
    "ModelConfig": "zoo.model",
    "SparseTransformer": "zoo.model",
    "build": "zoo.registry",
    "get_model_config": "zoo.registry",
    "list_models": "zoo.registry",
    "register_model": "zoo.registry",
}

__all__ = ["data", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
