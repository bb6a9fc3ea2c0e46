"""DeepSpeed-style *variable* block-sparse attention, causal form.

The block grid is cut into consecutive local windows whose sizes (in blocks) are
``local_window_blocks``; the last size repeats to the end of the sequence. A query block attends
to the earlier blocks of its own window, to the global blocks (``global_block_indices``, or ranges
with ``global_block_end_indices``), optionally the global blocks attend to everything earlier
(``horizontal_global_attention``), and ``num_random_blocks`` seeded random earlier blocks.

A generalisation of the paper's fixed pattern (Child et al. 2019 §4.2): fixed windows of length
``l`` plus summary positions, here with windows of varying length and global blocks anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .base import check_positive
from .block_grid import BlockGridPattern, in_ranges, random_blocks
from .longformer import check_global_indices
from .registry import register_attention


@dataclass
class VariableConfig:
    """Variable local windows + global blocks (+ random blocks)."""

    name: str = "variable"
    block_size: int = 64  # positions per block
    local_window_blocks: list[int] = field(default_factory=lambda: [4])  # window sizes; the last repeats
    global_block_indices: list[int] = field(default_factory=lambda: [0])  # global blocks (or range starts)
    global_block_end_indices: list[int] | None = None  # range ends (exclusive)
    horizontal_global_attention: bool = False  # global blocks also attend to all earlier blocks
    num_random_blocks: int = 0  # random earlier key blocks per query block
    seed: int = 0
    num_heads: int | None = None  # set by the model


def window_index(p: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Index of the local window holding block ``p`` (windows of ``sizes``, the last size repeating)."""
    bounds, total = [], 0
    for s in sizes[:-1]:
        total += s
        bounds.append(total)
    idx = torch.zeros_like(p)
    for b in bounds:
        idx = idx + (p >= b).long()
    tail = torch.div((p - total).clamp(min=0), sizes[-1], rounding_mode="floor")
    return idx + tail


@register_attention("variable", VariableConfig)
class Variable(BlockGridPattern):
    """DeepSpeed's VariableSparsityConfig, causal (see module docstring)."""

    def validate(self):
        super().validate()
        cfg = self.config
        if not cfg.local_window_blocks:
            raise ValueError("local_window_blocks must list at least one window size, got []")
        for s in cfg.local_window_blocks:
            check_positive("local_window_blocks entry", s)
        check_global_indices(cfg.global_block_indices, cfg.global_block_end_indices)
        check_positive("num_random_blocks", cfg.num_random_blocks, minimum=0)
        check_positive("seed", cfg.seed, minimum=0)

    def block_active(self, h, p, q):
        cfg = self.config
        sizes = list(cfg.local_window_blocks)
        starts = list(cfg.global_block_indices)
        ends = None if cfg.global_block_end_indices is None else list(cfg.global_block_end_indices)
        out = (window_index(p, sizes) == window_index(q, sizes)) | in_ranges(q, starts, ends)
        if cfg.horizontal_global_attention:
            out = out | in_ranges(p, starts, ends)
        if cfg.num_random_blocks:
            out = out | random_blocks(cfg.seed, torch.zeros_like(h), p, q, cfg.num_random_blocks, 0, p - 1)
        return out
