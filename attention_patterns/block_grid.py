"""Common base of the block-sparse patterns, defined on a grid of ``block_size`` blocks.

These patterns (BigBird, Longformer, DeepSpeed's Variable, blocked local) decide attention per pair
of blocks ``(P, Q)`` of ``block_size`` positions; the element mask is the block decision restricted
to ``j <= i`` (a diagonal block attends to its causal lower triangle). Any ``n`` works: the last
block is shorter when ``block_size`` does not divide ``n``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .base import AttentionPattern, check_positive
from .parts import BlockPart, block_hash


def any_equal(x: Tensor, values: Sequence[int]) -> Tensor:
    """``x`` equals one of the (few, static) ``values``: index arithmetic only."""
    out = torch.zeros_like(x, dtype=torch.bool)
    for v in values:
        out = out | (x == v)
    return out


def in_ranges(x: Tensor, starts: Sequence[int], ends: Sequence[int] | None) -> Tensor:
    """``x`` lies in one of ``[starts[k], ends[k])``, or equals one of ``starts`` when ``ends`` is None."""
    if ends is None:
        return any_equal(x, starts)
    out = torch.zeros_like(x, dtype=torch.bool)
    for s, e in zip(starts, ends):
        out = out | ((x >= s) & (x < e))
    return out


def random_blocks(seed: int, h: Tensor, p: Tensor, q: Tensor, count: int, lo: int | Tensor, hi: Tensor) -> Tensor:
    """``q`` is one of ``count`` distinct seeded random blocks from ``[lo, hi]`` for block row ``p``.

    The candidates are cut into ``count`` equal strata and one block is drawn in each (stratified
    sampling), so the draws are distinct, spread over the range and reproducible from
    ``(seed, head, p)`` alone; when fewer than ``count`` candidates exist, all of them are taken.
    """
    span = hi - lo + 1
    out = torch.zeros(torch.broadcast_shapes(h.shape, p.shape, q.shape), dtype=torch.bool, device=p.device)
    for k in range(count):
        s_lo = lo + torch.div(k * span.clamp(min=0), count, rounding_mode="floor")
        s_hi = lo + torch.div((k + 1) * span.clamp(min=0), count, rounding_mode="floor") - 1
        size = s_hi - s_lo + 1
        draw = s_lo + torch.remainder(block_hash(seed, h, p, k), size.clamp(min=1))
        out = out | ((size > 0) & (q == draw))
    return out


class FnBlockPart(BlockPart):
    """A :class:`BlockPart` whose block predicate is a function of ``(h, P, Q)``.

    ``lookback``: the largest ``i - j`` the predicate allows, when the pattern knows one (``None``:
    unbounded, e.g. global or random blocks).
    """

    def __init__(self, block_size: int, fn, per_head: bool = False, lookback: int | None = None) -> None:
        self.block_size = block_size
        self.fn = fn
        self.per_head = per_head
        self.lookback = lookback

    def block_active(self, h, p, q):
        return self.fn(h, p, q)

    def max_lookback(self):
        return self.lookback


class BlockGridPattern(AttentionPattern):
    """A single block-level part, shared by all heads unless it draws per-head random blocks."""

    def validate(self) -> None:
        super().validate()
        check_positive("block_size", self.config.block_size)

    def block_active(self, h: Tensor, p: Tensor, q: Tensor) -> Tensor:
        raise NotImplementedError

    @property
    def per_head(self) -> bool:
        return False

    def max_block_lookback(self) -> int | None:
        """The largest ``P - Q`` of an active block pair, or ``None`` when it grows with ``P``."""
        return None

    def parts(self):
        blocks = self.max_block_lookback()
        bs = self.config.block_size
        lookback = None if blocks is None else (blocks + 1) * bs - 1  # i - j within blocks P - Q <= blocks
        return [FnBlockPart(bs, self.block_active, self.per_head, lookback)]

    def members(self, layer: int) -> Tensor:
        return torch.ones((self.num_heads, 1), dtype=torch.bool)
