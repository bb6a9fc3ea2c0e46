"""Blocked local attention: each query block attends to its own block and the previous ones.

Query block ``P`` attends to key blocks ``P - window_blocks < Q <= P`` (causal inside the diagonal
block), the "local 1D" attention of the Image Transformer (Parmar et al. 2018) that the paper
compares to (Child et al. 2019 §2, §4.2). With ``window_blocks = 1`` it is block-diagonal: the
``A1`` part of ``fixed`` with ``l = block_size``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import check_positive
from .block_grid import BlockGridPattern
from .registry import register_attention


@dataclass
class BlockLocalConfig:
    """Blocked local attention."""

    name: str = "block_local"
    block_size: int = 64  # positions per block
    window_blocks: int = 2  # key blocks per query block, own block included
    num_heads: int | None = None  # set by the model


@register_attention("block_local", BlockLocalConfig)
class BlockLocal(BlockGridPattern):
    """Blocked local attention (see module docstring)."""

    def validate(self):
        super().validate()
        check_positive("window_blocks", self.config.window_blocks)

    def block_active(self, h, p, q):
        return (p - q) < self.config.window_blocks

    def max_block_lookback(self):
        return self.config.window_blocks - 1
