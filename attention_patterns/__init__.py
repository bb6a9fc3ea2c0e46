"""Attention patterns of the Sparse Transformer (Child et al. 2019, arXiv 1904.10509, §4) and peers.

Every pattern is a registered attention component (xFormers-components style)::

    import attention_patterns as ap
    comp = ap.build_attention({"name": "strided", "stride": 64, "num_heads": 2})
    comp.mask(256)          # (heads_or_1, n, n) bool, the dense reference
    comp.layout(256, 32)    # (heads_or_1, n/b, n/b) bool block layout
    comp.mask_mod()         # FlexAttention mask_mod(b, h, q_idx, kv_idx)
"""

from . import axial, bigbird, block_local, dense, fixed, local, longformer, strided, variable  # noqa: F401  (registers)
from .base import AttentionPattern
from .registry import (
    build_attention,
    get_component,
    get_config,
    list_attentions,
    make_config,
    register_attention,
)

__all__ = [
    "AttentionPattern",
    "build_attention",
    "get_component",
    "get_config",
    "list_attentions",
    "make_config",
    "register_attention",
    "plot",
]


def plot(component, n, **kwargs):
    """Figure of ``component``'s connectivity (paper Figure 3 style); see :mod:`attention_patterns.plotting`."""
    from .plotting import plot as _plot

    return _plot(component, n, **kwargs)
