"""Building blocks of attention patterns: each *part* is one set A of the paper's factorised attention.

Child et al. 2019 (§4.1-4.2) write every sparse pattern as a union of a few sets ``A^(m)_i`` of
key positions that output ``i`` may attend to. A :class:`Part` is one such set, written twice:

* :meth:`Part.mask` is the element predicate ``j in A_i`` as index arithmetic on integer tensors
  (broadcasting, no ``n x n`` tables), so it works both to build the dense reference mask and as a
  FlexAttention ``mask_mod``;
* :meth:`Part.tile_any` answers "does any pair ``(i, j)`` with ``a <= i <= b``, ``c <= j <= e`` and
  ``j <= i`` lie in the set?" for whole blocks at once, which gives block layouts in ``O((n/b)^2)``
  work without ever forming the element mask;
* :meth:`Part.row` lists the keys ``j <= i`` of one query row ``i`` (sorted), by the same index
  arithmetic: ``O(|A_i|)`` work and memory, whatever ``n`` (what key/value-cached decoding reads);
* :meth:`Part.max_lookback` bounds ``i - j`` over the set (``None`` if unbounded): a decoder only
  needs to keep that many past keys and values for a layer that uses only bounded parts.

Causality (``j <= i``) is applied by the component on top of every part; ``tile_any`` already takes
it into account so that a layout never marks a block that holds only future positions.

Every argument is an integer tensor (``torch.long``); ``h`` is the head index. All predicates are
valid for any sequence length: positions past ``n`` are never asked about, and the last block of a
grid may be shorter than the others (ragged), which the interval tests handle exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "Part",
    "AllPast",
    "Window",
    "EveryLth",
    "SameBlock",
    "SummaryColumns",
    "BlockPart",
    "block_hash",
]


def _causal_pairs_exist(b: Tensor, c: Tensor) -> Tensor:
    """Some ``j <= i`` exists with ``i <= b`` and ``j >= c``."""
    return b >= c


def _difference_range(a: Tensor, b: Tensor, c: Tensor, e: Tensor) -> tuple[Tensor, Tensor]:
    """Range ``[dmin, dmax]`` of ``d = i - j >= 0`` over ``i in [a, b]``, ``j in [c, e]``.

    The differences of two integer intervals form the contiguous interval ``[a - e, b - c]``; we
    intersect it with ``d >= 0``. Only meaningful where ``b >= c``.
    """
    return (a - e).clamp(min=0), b - c


class Part:
    """One attention set ``A_i`` (paper §4.1). Subclasses implement both predicates."""

    #: True if the set depends on the head index ``h`` (e.g. per-head random blocks)
    per_head: bool = False

    def mask(self, h: Tensor, i: Tensor, j: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def tile_any(self, h: Tensor, a: Tensor, b: Tensor, c: Tensor, e: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def row(self, h: int, i: int) -> Tensor:  # pragma: no cover - interface
        """The keys ``j`` with ``j <= i`` and ``j in A_i`` for head ``h``: sorted, distinct, long ``(L,)``."""
        raise NotImplementedError

    def max_lookback(self) -> int | None:
        """The largest ``i - j`` of any pair in the set, or ``None`` when it grows with ``i``."""
        return None


@dataclass(frozen=True)
class AllPast(Part):
    """Every earlier position: ``A_i = {j : j <= i}`` (full causal attention)."""

    def mask(self, h, i, j):
        return torch.ones_like(i >= j)

    def tile_any(self, h, a, b, c, e):
        return _causal_pairs_exist(b, c)

    def row(self, h, i):
        return torch.arange(i + 1)


@dataclass(frozen=True)
class Window(Part):
    """The previous ``width`` positions, itself included: ``A_i = {j : i - width < j <= i}`` (§4.2)."""

    width: int

    def mask(self, h, i, j):
        return (i - j) < self.width

    def tile_any(self, h, a, b, c, e):
        dmin, _ = _difference_range(a, b, c, e)
        return _causal_pairs_exist(b, c) & (dmin < self.width)

    def row(self, h, i):
        return torch.arange(max(0, i - self.width + 1), i + 1)

    def max_lookback(self):
        return self.width - 1


@dataclass(frozen=True)
class EveryLth(Part):
    """Every ``stride``-th earlier position: ``A_i = {j : (i - j) mod l = 0}`` (strided, §4.2)."""

    stride: int

    def mask(self, h, i, j):
        return torch.remainder(i - j, self.stride) == 0

    def tile_any(self, h, a, b, c, e):
        dmin, dmax = _difference_range(a, b, c, e)
        first_multiple = torch.div(dmin + self.stride - 1, self.stride, rounding_mode="floor") * self.stride
        return _causal_pairs_exist(b, c) & (first_multiple <= dmax)

    def row(self, h, i):
        return torch.arange(i % self.stride, i + 1, self.stride)


@dataclass(frozen=True)
class SameBlock(Part):
    """Positions in the same block of length ``l``: ``A_i = {j : floor(j/l) = floor(i/l)}`` (fixed, §4.2)."""

    length: int

    def mask(self, h, i, j):
        return torch.div(i, self.length, rounding_mode="floor") == torch.div(j, self.length, rounding_mode="floor")

    def tile_any(self, h, a, b, c, e):
        ell = self.length
        fmin = torch.maximum(torch.div(a, ell, rounding_mode="floor"), torch.div(c, ell, rounding_mode="floor"))
        fmax = torch.minimum(torch.div(b, ell, rounding_mode="floor"), torch.div(e, ell, rounding_mode="floor"))
        # In the last shared block f = fmax the earliest key must not come after the latest query;
        # in any earlier shared block the whole block lies inside both intervals' causal overlap.
        last_ok = torch.maximum(c, fmax * ell) <= torch.minimum(b, fmax * ell + ell - 1)
        return (fmin <= fmax) & ((fmin < fmax) | last_ok)

    def row(self, h, i):
        return torch.arange(i - i % self.length, i + 1)

    def max_lookback(self):
        return self.length - 1


@dataclass(frozen=True)
class SummaryColumns(Part):
    """Summary columns: ``A_i = {j : j mod l in [start, start + c)}`` (fixed, §4.2).

    The paper's choice is ``start = l - c`` (the last ``c`` positions of each block); heads may use
    distinct sub-blocks (``start = l - (g + 1) c``), see :class:`~attention_patterns.fixed.Fixed`.
    """

    length: int
    start: int
    count: int

    def mask(self, h, i, j):
        r = torch.remainder(j, self.length)
        return (r >= self.start) & (r < self.start + self.count)

    def _columns_up_to(self, x: Tensor) -> Tensor:
        """Number of summary columns ``j`` with ``0 <= j <= x`` (0 for ``x < 0``)."""
        x1 = (x + 1).clamp(min=0)
        full = torch.div(x1, self.length, rounding_mode="floor") * self.count
        rest = (torch.remainder(x1, self.length) - self.start).clamp(min=0, max=self.count)
        return full + rest

    def tile_any(self, h, a, b, c, e):
        hi = torch.minimum(e, b)  # a key must not be after the latest query of the block
        return (hi >= c) & (self._columns_up_to(hi) > self._columns_up_to(c - 1))

    def row(self, h, i):
        # residues r in [start, start + count) that exist in a block of `length`, in every block up to i's
        residues = torch.arange(max(self.start, 0), min(self.start + self.count, self.length))  # (c,)
        first = torch.arange(0, i // self.length + 1) * self.length  # (blocks,)
        j = (first[:, None] + residues[None, :]).flatten()  # sorted: residues lie inside one block
        return j[j <= i]


def block_hash(seed: int, h: Tensor, row: Tensor, k: int) -> Tensor:
    """A reproducible pseudo-random non-negative integer of (seed, head, block row, draw k).

    Pure integer arithmetic kept below 2**62 (31-bit state times 31-bit constants), so it gives the
    same numbers on every device, inside ``torch.compile`` and FlexAttention, and it needs no table
    that depends on the sequence length: the random blocks of row ``r`` are the same for every ``n``.
    """
    m = 0x7FFFFFFF
    x = (seed * 0x2545F491 + k * 0x1B873593 + 0x3C6EF372) & m
    x = (x + h * 0x6C8E9CF5 + row * 0x9E3779B1) & m
    x = ((x ^ (x >> 15)) * 0x2C1B3C6D) & m
    x = ((x ^ (x >> 12)) * 0x297A2D39) & m
    return x ^ (x >> 15)


class BlockPart(Part):
    """A set defined on a grid of ``block_size`` x ``block_size`` blocks (block-sparse patterns).

    Subclasses implement :meth:`block_active` ``(h, P, Q) -> bool`` on block indices. The element
    mask is ``block_active(h, i // B, j // B)`` (and, as always, ``j <= i``): inside a diagonal block
    only the causal lower triangle is attended; a ragged last block is simply shorter.
    """

    block_size: int

    def block_active(self, h: Tensor, p: Tensor, q: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def mask(self, h, i, j):
        bs = self.block_size
        return self.block_active(h, torch.div(i, bs, rounding_mode="floor"), torch.div(j, bs, rounding_mode="floor"))

    def row(self, h, i):
        bs = self.block_size
        p = i // bs
        q = torch.arange(p + 1)  # candidate key blocks of query block p
        active = self.block_active(torch.tensor(h), torch.tensor(p), q)  # (p + 1,)
        j = (q[active][:, None] * bs + torch.arange(bs)[None, :]).flatten()  # positions of the active blocks
        return j[j <= i]

    def tile_any(self, h, a, b, c, e):
        bs = self.block_size
        p0, p1 = torch.div(a, bs, rounding_mode="floor"), torch.div(b, bs, rounding_mode="floor")
        q0, q1 = torch.div(c, bs, rounding_mode="floor"), torch.div(e, bs, rounding_mode="floor")
        span_p = int((p1 - p0).max().item()) + 1 if p0.numel() else 1
        span_q = int((q1 - q0).max().item()) + 1 if q0.numel() else 1
        out = torch.zeros(torch.broadcast_shapes(h.shape, a.shape, c.shape), dtype=torch.bool, device=a.device)
        for dp in range(span_p):
            p = p0 + dp
            i_hi = torch.minimum(b, p * bs + bs - 1)
            for dq in range(span_q):
                q = q0 + dq
                j_lo = torch.maximum(c, q * bs)
                ok = (p <= p1) & (q <= q1) & (j_lo <= i_hi)
                out |= ok & self.block_active(h, p, q)
        return out
