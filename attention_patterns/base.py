"""The attention component: which key positions each query may attend to (paper §4).

An :class:`AttentionPattern` is a union of :class:`~attention_patterns.parts.Part` sets, assigned to
heads (and, for ``interleaved`` patterns, to layers) by a membership table. From that single
definition it derives every representation that models and kernels consume, all consistent:

* :meth:`AttentionPattern.mask_mod` - a FlexAttention ``mask_mod(b, h, q_idx, kv_idx)`` built from
  index arithmetic (no ``n x n`` tensor);
* :meth:`AttentionPattern.mask` - the dense boolean element mask ``(heads_or_1, n, n)``: the
  reference that every backend is tested against; :meth:`AttentionPattern.row_mask` - the same for
  a few query rows only;
* :meth:`AttentionPattern.layout` - the block layout ``(heads_or_1, ceil(n/b), ceil(n/b))``: block
  ``(k, m)`` is active iff any element in it is active. Computed block by block from the parts'
  interval tests, never from the element mask, so ``n = 2**20`` with ``b = 128`` takes seconds;
* :meth:`AttentionPattern.density` and :meth:`AttentionPattern.block_density`;
* :meth:`AttentionPattern.row_keys` - the allowed keys of one query row, per head, from the parts'
  index arithmetic (``O(keys)``, any ``n``: what a key/value-cached decoder attends to), and
  :meth:`AttentionPattern.max_lookback` - how far back a layer ever looks (``None``: unbounded), which
  bounds the keys and values a decoder has to keep.

Every pattern is causal: position ``i`` attends to ``j`` only if ``j <= i``. A query row may have no
allowed key at all (e.g. the summary head of ``fixed`` before the first summary column); backends
give such rows a zero output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from .parts import Part

MaskMod = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]

# Elements per temporary when layouts / densities are computed in chunks (bounded memory).
_CHUNK_ELEMENTS = 1 << 22


def check_positive(name: str, value: Any, *, minimum: int = 1) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is an integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def union_rows(head_parts: Sequence[Sequence[Part]], i: int) -> list[Tensor]:
    """Keys of query ``i`` per head: the sorted union of :meth:`Part.row` over each head's parts.

    ``head_parts`` is :meth:`AttentionPattern.head_parts` of a layer; a decoder computes it once and
    calls this for every new position.
    """
    out = []
    for h, parts in enumerate(head_parts):
        rows = [part.row(h, i) for part in parts]
        if not rows:
            out.append(torch.zeros(0, dtype=torch.long))
        elif len(rows) == 1:
            out.append(rows[0])
        else:
            out.append(torch.unique(torch.cat(rows)))  # sorted, overlaps (e.g. j = i) counted once
    return out


class AttentionPattern:
    """Base class of every registered attention component.

    Subclasses set ``self.config`` (their dataclass) and implement :meth:`parts` and
    :meth:`members`. The model tells the component how many heads it has through
    ``config.num_heads`` (``None`` means 1 when the component is used on its own).
    """

    #: registry name, set by :func:`~attention_patterns.registry.register_attention`
    name: str = ""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.validate()

    # ------------------------------------------------------------------ definition (subclasses)
    def validate(self) -> None:
        """Check the config's values; raise ``ValueError`` naming the bad value."""
        heads = getattr(self.config, "num_heads", None)
        if heads is not None:
            check_positive("num_heads", heads)

    def parts(self) -> list[Part]:
        """The distinct sets ``A^(m)`` this pattern is made of."""
        raise NotImplementedError

    def members(self, layer: int) -> Tensor:
        """Bool ``(num_heads, len(parts()))``: head ``h`` of layer ``layer`` attends to the union of
        the parts marked in row ``h``."""
        raise NotImplementedError

    def validate_length(self, n: int) -> None:
        """Raise ``ValueError`` if this pattern cannot serve sequences of length ``n``."""
        check_positive("sequence length n", n)

    # ------------------------------------------------------------------ helpers
    @property
    def num_heads(self) -> int:
        heads = getattr(self.config, "num_heads", None)
        return 1 if heads is None else int(heads)

    @property
    def num_layers_period(self) -> int:
        """Layers repeat their pattern with this period (2 for ``interleaved`` patterns)."""
        return 1

    def heads_differ(self, layer: int = 0) -> bool:
        """True if heads of ``layer`` have different masks (so representations carry a head axis)."""
        table = self.members(layer)
        if bool((table != table[:1]).any()):
            return True
        used = table.any(dim=0).tolist()
        return self.num_heads > 1 and any(p.per_head for p, u in zip(self.parts(), used) if u)

    def mask_heads(self, layer: int = 0) -> int:
        """Size of the head axis of :meth:`mask` and :meth:`layout`: ``num_heads`` or 1."""
        return self.num_heads if self.heads_differ(layer) else 1

    def head_parts(self, layer: int = 0) -> list[list[Part]]:
        """The parts each head of ``layer`` attends to: :meth:`mask_heads` lists (one when heads agree)."""
        parts = self.parts()
        table = self.members(layer)
        return [[p for p, used in zip(parts, table[h].tolist()) if used] for h in range(self.mask_heads(layer))]

    def max_lookback(self, layer: int = 0) -> int | None:
        """The largest ``i - j`` any head of ``layer`` attends to, or ``None`` when it grows with ``i``.

        A decoder keeps only the last ``max_lookback + 1`` keys and values of such a layer (e.g. the
        window of ``local``, or the ``local`` layers of an ``interleaved`` strided model).
        """
        longest = 0
        for parts in self.head_parts(layer):
            for part in parts:
                back = part.max_lookback()
                if back is None:
                    return None
                longest = max(longest, back)
        return longest

    # ------------------------------------------------------------------ representations
    def row_keys(self, i: int, layer: int = 0) -> list[Tensor]:
        """The keys query ``i`` attends to in ``layer``: one sorted long tensor per head (:meth:`mask_heads`).

        The union of the rows of the parts each head uses (:meth:`Part.row`): index arithmetic in
        ``O(keys)`` work and memory, so it serves any ``n`` (``2**20`` included) without a mask; equal to
        ``mask(n, layer)[h, i].nonzero()`` for every ``n > i``. An empty tensor means the row has no key
        (its attention output is zero).
        """
        if isinstance(i, bool) or not isinstance(i, int) or i < 0:
            raise ValueError(f"query position i must be an integer >= 0, got {i!r}")
        return union_rows(self.head_parts(layer), i)

    def mask_mod(self, layer: int = 0, device: torch.device | str | None = None) -> MaskMod:
        """A FlexAttention ``mask_mod(b, h, q_idx, kv_idx) -> bool`` equal to :meth:`mask`.

        Only index arithmetic and a tiny ``(num_heads, num_parts)`` table captured on ``device``.
        """
        parts = self.parts()
        table = self.members(layer).to(device=device)
        heads = table.shape[0]
        shared = table.all(dim=0).tolist()  # parts every head uses need no table lookup
        used = table.any(dim=0).tolist()

        def mask_mod(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
            hh = torch.remainder(h, heads)
            allowed = kv_idx <= q_idx
            union = None
            for p, part in enumerate(parts):
                if not used[p]:
                    continue
                term = part.mask(hh, q_idx, kv_idx)
                if not shared[p]:
                    term = term & table[hh, p]
                union = term if union is None else (union | term)
            if union is None:
                return allowed & False
            return allowed & union

        return mask_mod

    def mask(self, n: int, layer: int = 0, device: torch.device | str | None = None) -> Tensor:
        """Dense element mask, bool ``(heads_or_1, n, n)``; ``[h, i, j]`` is True iff ``i`` attends ``j``."""
        self.validate_length(n)
        heads = self.mask_heads(layer)
        fn = self.mask_mod(layer, device=device)
        idx = torch.arange(n, device=device)
        h = torch.arange(heads, device=device).view(heads, 1, 1)
        b = torch.zeros((), dtype=torch.long, device=device)
        out = fn(b, h, idx.view(1, n, 1), idx.view(1, 1, n))
        return out.expand(heads, n, n).contiguous()

    def row_mask(
        self, rows: Tensor | Sequence[int], n: int, layer: int = 0, device: torch.device | str | None = None
    ) -> Tensor:
        """The keys of chosen query rows: bool ``(heads_or_1, len(rows), n)``, equal to
        ``mask(n, layer)[:, rows]`` but built in ``O(len(rows) n)`` (no ``n x n`` mask), e.g. for the
        attention probabilities of a few rows (pictures of a trained model)."""
        self.validate_length(n)
        rows = torch.as_tensor(rows, dtype=torch.long, device=device).reshape(-1)
        if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= n):
            bad = int(rows.min()) if int(rows.min()) < 0 else int(rows.max())
            raise ValueError(f"query row {bad} is outside the sequence: rows must lie in [0, {n - 1}]")
        heads = self.mask_heads(layer)
        fn = self.mask_mod(layer, device=device)
        h = torch.arange(heads, device=device).view(heads, 1, 1)
        b = torch.zeros((), dtype=torch.long, device=device)
        out = fn(b, h, rows.view(1, -1, 1), torch.arange(n, device=device).view(1, 1, n))
        return out.expand(heads, rows.numel(), n).contiguous()

    def tile_any(self, layer: int, h: Tensor, a: Tensor, b: Tensor, c: Tensor, e: Tensor) -> Tensor:
        """True where some allowed ``(i, j)`` has ``a <= i <= b``, ``c <= j <= e`` (tensors broadcast)."""
        parts = self.parts()
        table = self.members(layer).to(a.device)
        hh = torch.remainder(h, table.shape[0])
        out = torch.zeros(torch.broadcast_shapes(h.shape, a.shape, c.shape), dtype=torch.bool, device=a.device)
        for p, part in enumerate(parts):
            member = table[hh, p]
            if not bool(member.any()):
                continue
            out |= member & part.tile_any(hh, a, b, c, e)
        return out

    def layout(self, n: int, block_size: int, layer: int = 0, device: torch.device | str | None = None) -> Tensor:
        """Block layout, bool ``(heads_or_1, ceil(n/b), ceil(n/b))``.

        Block ``(k, m)`` covers queries ``[k b, min((k+1) b, n))`` and keys ``[m b, min((m+1) b, n))``
        (the last block is ragged when ``b`` does not divide ``n``); it is active iff any element in
        it is active in :meth:`mask`. Built in row chunks from interval tests: memory
        ``O((n/b)^2)`` for the result only.
        """
        self.validate_length(n)
        check_positive("block_size", block_size)
        heads = self.mask_heads(layer)
        nb = -(-n // block_size)
        out = torch.empty((heads, nb, nb), dtype=torch.bool, device=device)
        cols = torch.arange(nb, device=device).view(1, 1, nb)
        c = cols * block_size
        e = torch.clamp(c + block_size - 1, max=n - 1)
        h = torch.arange(heads, device=device).view(heads, 1, 1)
        rows_per_chunk = max(1, _CHUNK_ELEMENTS // max(1, heads * nb))
        for start in range(0, nb, rows_per_chunk):
            rows = torch.arange(start, min(nb, start + rows_per_chunk), device=device).view(1, -1, 1)
            a = rows * block_size
            b = torch.clamp(a + block_size - 1, max=n - 1)
            out[:, start : start + rows.shape[1]] = self.tile_any(layer, h, a, b, c, e)
        return out

    def row_counts(self, n: int, layer: int = 0) -> Tensor:
        """Number of allowed keys per query, long ``(heads_or_1, n)`` (chunked: no ``n x n`` memory)."""
        self.validate_length(n)
        heads = self.mask_heads(layer)
        fn = self.mask_mod(layer)
        idx = torch.arange(n)
        h = torch.arange(heads).view(heads, 1, 1)
        b = torch.zeros((), dtype=torch.long)
        counts = torch.empty((heads, n), dtype=torch.long)
        rows_per_chunk = max(1, _CHUNK_ELEMENTS // max(1, heads * n))
        for start in range(0, n, rows_per_chunk):
            q = idx[start : start + rows_per_chunk].view(1, -1, 1)
            counts[:, start : start + q.shape[1]] = fn(b, h, q, idx.view(1, 1, n)).expand(heads, -1, n).sum(-1)
        return counts

    def density(self, n: int, layer: int = 0) -> float:
        """Fraction of the causal triangle (``n (n + 1) / 2`` pairs) attended, averaged over heads."""
        counts = self.row_counts(n, layer)
        return float(counts.sum(-1).double().mean() / (n * (n + 1) / 2))

    def block_density(self, n: int, block_size: int, layer: int = 0) -> float:
        """Fraction of the causal blocks (``k >= m``) that are active in :meth:`layout`, averaged over heads."""
        lay = self.layout(n, block_size, layer)
        nb = lay.shape[-1]
        return float(lay.sum((-1, -2)).double().mean() / (nb * (nb + 1) / 2))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"
