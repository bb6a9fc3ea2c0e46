"""Longformer block-sparse attention (Beltagy et al. 2020), causal form on a block grid.

A sliding window of ``window_blocks`` blocks (``P - window_blocks < Q <= P``) plus global blocks:
a global block attends to every earlier block and every later block attends to it. Global blocks
are ``global_block_indices``, or the ranges ``[global_block_indices[k], global_block_end_indices[k])``
when end indices are given (DeepSpeed's ``BSLongformerSparsityConfig`` parameters).

The relative of the paper's local attention (Child et al. 2019 §4.2) with a few global summaries,
like the ``c`` summary columns of ``fixed``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .base import check_positive
from .block_grid import BlockGridPattern, in_ranges
from .registry import register_attention


def check_global_indices(starts, ends) -> None:
    for s in starts:
        check_positive("global_block_indices entry", s, minimum=0)
    if ends is not None:
        if len(ends) != len(starts):
            raise ValueError(
                f"global_block_end_indices must have one entry per global_block_indices entry "
                f"({len(starts)}), got {list(ends)}"
            )
        for s, e in zip(starts, ends):
            if e <= s:
                raise ValueError(f"global_block_end_indices entry {e} must be > its start {s}")


@dataclass
class LongformerConfig:
    """Longformer: sliding window + global blocks."""

    name: str = "longformer"
    block_size: int = 64  # positions per block
    window_blocks: int = 3  # causal sliding window, in blocks, own block included
    global_block_indices: list[int] = field(default_factory=lambda: [0])  # global blocks (or range starts)
    global_block_end_indices: list[int] | None = None  # range ends (exclusive), one per start
    num_heads: int | None = None  # set by the model


@register_attention("longformer", LongformerConfig)
class Longformer(BlockGridPattern):
    """Longformer sliding window + global blocks (causal; see module docstring)."""

    def validate(self):
        super().validate()
        check_positive("window_blocks", self.config.window_blocks)
        check_global_indices(self.config.global_block_indices, self.config.global_block_end_indices)

    def block_active(self, h, p, q):
        cfg = self.config
        starts, ends = list(cfg.global_block_indices), cfg.global_block_end_indices
        ends = None if ends is None else list(ends)
        return ((p - q) < cfg.window_blocks) | in_ranges(q, starts, ends) | in_ranges(p, starts, ends)
