"""A block-sparse attention *plan*: heads grouped by their parts, each group a list of disjoint pieces.

Built once per ``(component, n, layer parity, heads, device, dtype)`` by the ``blocksparse``
backend. The forward pass runs every piece of a group and merges their outputs exactly through
their log-sum-exps (Child et al. 2019 §4.3: a ``merged`` head attends the union of the parts);
heads of different groups (``split`` mode: head ``h`` uses part ``h mod 2``) are written into their
slice of the output. The backward pass gives every piece the merged output and log-sum-exp and sums
the pieces' gradient contributions (see :mod:`.tile_kernel`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .pieces import Piece, merge_results
from .tile_kernel import acc_dtype


def head_selector(heads: list[int] | None, num_heads: int) -> slice | list[int] | None:
    """How to take ``heads`` out of dim 1: None (all), a slice (arithmetic progression: a view) or a list."""
    if heads is None or heads == list(range(num_heads)):
        return None
    step = heads[1] - heads[0] if len(heads) > 1 else 1
    if step > 0 and heads == list(range(heads[0], heads[-1] + 1, step)):
        return slice(heads[0], heads[-1] + 1, step)
    return heads


def _bthd(like: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Uninitialised ``(B, H, T, D)`` tensor in ``like``'s memory order of heads and time.

    When ``like`` is a ``(B, T, H, D)``-ordered view (heads side by side in each row, as the model's
    queries, keys and values cut from one projection), the result is stored as ``(B, T, H, D)``:
    the model's ``y.transpose(1, 2)`` is then contiguous (as after SDPA), and gradients flow back
    in the layout of their views. Otherwise it is a contiguous ``(B, H, T, D)`` tensor.
    """
    B, H, T, D = shape
    if H > 1 and T > 1 and like.stride(1) < like.stride(2):
        return like.new_empty((B, T, H, D)).transpose(1, 2)
    return like.new_empty((B, H, T, D))


class HeadGroup:
    """Heads ``heads`` (None = all heads) computed by the disjoint ``pieces``."""

    def __init__(
        self, heads: list[int] | None, pieces: list[Piece], num_heads: int, device: torch.device
    ) -> None:
        self.heads, self.pieces = heads, pieces
        for piece in pieces:
            piece.alone = len(pieces) == 1
        sel = head_selector(heads, num_heads)
        self.all = sel is None
        self.sel = torch.tensor(sel, dtype=torch.long, device=device) if isinstance(sel, list) else sel

    def __repr__(self) -> str:
        return f"HeadGroup(heads={self.heads}, pieces={self.pieces})"

    def select(self, x: Tensor) -> Tensor:  # (B, H, ...) -> (B, Hg, ...)
        if self.all:
            return x
        if isinstance(self.sel, slice):
            return x[:, self.sel]
        return x.index_select(1, self.sel)

    def view(self, x: Tensor) -> Tensor | None:
        """A writable view of ``x[:, heads]`` (None when the heads are not an arithmetic progression)."""
        if self.all:
            return x
        return x[:, self.sel] if isinstance(self.sel, slice) else None

    def put(self, dst: Tensor, x: Tensor, written: Tensor | None) -> None:
        """``dst[:, heads] = x`` unless ``x`` was already written there through :meth:`view`."""
        if written is None:
            dst.index_copy_(1, self.sel, x)

    def forward(self, q, k, v, scale, kernel, keep, out=None, lse=None) -> tuple[Tensor, Tensor, list]:
        if not self.pieces:
            B, H, T, _ = q.shape
            out = q.new_zeros((B, H, T, v.shape[-1])) if out is None else out.zero_()
            empty = torch.full((B, H, T), float("-inf"), dtype=acc_dtype(q.dtype), device=q.device)
            return out, (empty if lse is None else lse.copy_(empty)), []
        if len(self.pieces) == 1:
            o, l_, st = self.pieces[0].forward(q, k, v, scale, kernel, keep, out=out, lse=lse)
            return o, l_, [st]
        results, states = [], []
        for p in self.pieces:
            o, l_, st = p.forward(q, k, v, scale, kernel, keep)
            results.append((o, l_))
            states.append(st)
        o, l_ = merge_results(results, q.dtype)
        if out is not None:
            o = out.copy_(o)
        if lse is not None:
            l_ = lse.copy_(l_)
        return o, l_, states

    def backward(self, states, dout, q, k, v, out, lse, scale, kernel, grads=(None, None, None)):
        if not self.pieces:
            return tuple(torch.zeros_like(x) if d is None else d.zero_() for d, x in zip(grads, (q, k, v)))
        for i, (p, st) in enumerate(zip(self.pieces, states)):
            grads = p.backward(st, dout, q, k, v, out, lse, scale, kernel, grads=grads, accumulate=i > 0)
        return grads


class AttentionPlan:
    """Everything one ``(component, n, layer, heads, device, dtype)`` needs, built once and cached."""

    def __init__(self, groups: list[HeadGroup], num_heads: int, structured: bool) -> None:
        self.groups, self.num_heads, self.structured = groups, num_heads, structured

    def __repr__(self) -> str:
        return f"AttentionPlan(structured={self.structured}, groups={self.groups})"

    @property
    def pieces(self) -> list[Piece]:
        return [p for g in self.groups for p in g.pieces]

    @property
    def all_probs(self) -> bool:
        """True if every piece keeps its softmax (then no piece needs equal q/v head dims)."""
        return all(p.probs for p in self.pieces)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, scale: float, kernel: str, keep: bool):
        """``(out (B, H, T, Dv), lse (B, H, T), states)``."""
        B, H, T, _ = q.shape
        if len(self.groups) == 1 and self.groups[0].all:
            out, lse, st = self.groups[0].forward(q, k, v, scale, kernel, keep)
            return out, lse, [st]
        out = _bthd(q, (B, H, T, v.shape[-1]))
        lse = torch.empty((B, H, T), dtype=acc_dtype(q.dtype), device=q.device)
        states = []
        for g in self.groups:
            vo, vl = g.view(out), g.view(lse)
            o, l_, st = g.forward(g.select(q), g.select(k), g.select(v), scale, kernel, keep, out=vo, lse=vl)
            g.put(out, o, vo)
            g.put(lse, l_, vl)
            states.append(st)
        return out, lse, states

    def backward(self, states, dout, q, k, v, out, lse, scale, kernel) -> tuple[Tensor, Tensor, Tensor]:
        lse = lse.masked_fill(torch.isinf(lse), 0.0)  # rows with no key: every tile is masked, P = 0
        if len(self.groups) == 1 and self.groups[0].all:
            return self.groups[0].backward(states[0], dout, q, k, v, out, lse, scale, kernel)
        dq, dk, dv = (_bthd(x, x.shape) for x in (q, k, v))
        for g, st in zip(self.groups, states):
            dsts = tuple(g.view(d) for d in (dq, dk, dv))
            sel = [g.select(x) for x in (dout, q, k, v, out, lse)]
            res = g.backward(st, *sel, scale, kernel, grads=dsts)
            for d, x, w in zip((dq, dk, dv), res, dsts):
                g.put(d, x, w)
        return dq, dk, dv
