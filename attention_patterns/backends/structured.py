"""Recognise a component's parts and map each head's attention set to disjoint structured pieces.

A component declares its sets ``A^(m)`` as :mod:`~attention_patterns.parts` objects and which head
of which layer uses which (``members``; paper §4.3: split, merged, interleaved). For each group of
heads with the same set of parts, :func:`structured_pieces` returns pieces (:mod:`.pieces`) whose
key sets are disjoint and whose union is exactly that head's set intersected with ``j <= i``:

=====================================  ==============================================================
parts of a head                        pieces
=====================================  ==============================================================
``AllPast`` (+ anything)               dense causal
``Window(w)``                          band
``EveryLth(l)``                        causal among equal residues mod ``l``
``SameBlock(l)``                       causal inside chunks of ``l``
``SummaryColumns(l, s, c)``            summary columns (own block included)
``Window(w), EveryLth(l)``, w <= l     band + residue without ``j = i`` (strided merged, §4.2)
``SameBlock(L), EveryLth(l)``, L <= l  chunks + residue without ``j = i`` (axial merged)
``SameBlock(l), SummaryColumns(l,..)`` chunks + summary columns of earlier blocks (fixed merged)
=====================================  ==============================================================

Anything else (block-grid patterns, per-head random blocks) returns ``None``: the caller falls back
to the generic block gather (:mod:`.gather`).
"""

from __future__ import annotations

import torch

from ..base import AttentionPattern
from ..parts import AllPast, EveryLth, Part, SameBlock, SummaryColumns, Window
from .pieces import BandPiece, CausalPiece, Piece, SummaryPiece

#: the band uses query blocks of half the window width, clamped to this range
BAND_BLOCK_RANGE = (32, 128)


def band_block(width: int) -> int:
    """Query block of a band of ``width``: ``w / 2`` (3 key blocks of ``w / 2``: 1.5x the window, in
    tiles large enough for the fused kernel; measured fastest on CPU for w = 64 and 128)."""
    lo, hi = BAND_BLOCK_RANGE
    return max(lo, min(hi, -(-width // 2)))


def head_groups(
    component: AttentionPattern, layer: int, num_heads: int
) -> list[tuple[list[int], list[Part]]]:
    """Heads grouped by the set of parts they use: ``[(heads, parts), ...]`` covering ``range(num_heads)``."""
    parts = component.parts()
    table = component.members(layer)  # (num_heads, n_parts)
    if table.shape[0] != num_heads:
        if component.heads_differ(layer):
            raise ValueError(
                f"component {component.name!r} has num_heads={table.shape[0]} with different heads, "
                f"but q has {num_heads} heads; set the component's num_heads to {num_heads}"
            )
        table = table[:1].expand(num_heads, -1)
    groups: dict[tuple[bool, ...], list[int]] = {}
    for h in range(num_heads):
        groups.setdefault(tuple(bool(x) for x in table[h].tolist()), []).append(h)
    return [(heads, [p for p, used in zip(parts, row) if used]) for row, heads in groups.items()]


def _summary_pieces(n, part: SummaryColumns, own: bool, device, dtype) -> list[Piece]:
    return [SummaryPiece(n, part.length, part.start, part.count, own, device, dtype)]


def structured_pieces(
    parts: list[Part], n: int, device: torch.device, dtype: torch.dtype
) -> list[Piece] | None:
    """Disjoint pieces for one head's union of ``parts`` (``None`` if no structured form is known)."""
    if any(getattr(p, "per_head", False) for p in parts):
        return None
    if not parts:
        return []
    if any(isinstance(p, AllPast) for p in parts):
        return [CausalPiece(n, "full")]
    kinds = {type(p) for p in parts}
    if len(parts) != len(kinds) or not kinds <= {Window, EveryLth, SameBlock, SummaryColumns}:
        return None
    by = {type(p): p for p in parts}
    summ = by.get(SummaryColumns)
    if summ is not None and not (0 <= summ.start and summ.start + summ.count <= summ.length):
        return None
    win, every, same = by.get(Window), by.get(EveryLth), by.get(SameBlock)
    if len(parts) == 1:
        if win is not None:
            return [BandPiece(n, win.width, band_block(win.width), device, dtype)]
        if every is not None:
            return [CausalPiece(n, "residue", every.stride)]
        if same is not None:
            return [CausalPiece(n, "chunks", same.length)]
        return _summary_pieces(n, summ, True, device, dtype)
    if len(parts) == 2:
        if win is not None and every is not None and win.width <= every.stride:
            band = BandPiece(n, win.width, band_block(win.width), device, dtype)
            return [band, CausalPiece(n, "residue", every.stride, strict=True)]
        if same is not None and every is not None and same.length <= every.stride:
            return [
                CausalPiece(n, "chunks", same.length),
                CausalPiece(n, "residue", every.stride, strict=True),
            ]
        if same is not None and summ is not None and same.length == summ.length:
            return [CausalPiece(n, "chunks", same.length), *_summary_pieces(n, summ, False, device, dtype)]
    return None
