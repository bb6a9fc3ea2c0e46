"""Structured pieces: exact fast forms of the paper's attention sets (Child et al. 2019, §4.2).

A *piece* computes softmax attention of every query over one set of keys and returns its output
and log-sum-exp, so that disjoint pieces merge exactly (see :mod:`.tile_kernel`). Each piece is a
reshape of the sequence that turns a sparse set into a few dense tiles:

* :class:`CausalPiece` - dense causal attention inside subsequences: the whole sequence
  (``AllPast``), consecutive chunks of length ``l`` (``SameBlock``: the block-diagonal ``A1`` of
  ``fixed``, rows of ``axial``), or the positions with equal residue mod ``l`` (``EveryLth``: the
  ``A2`` of ``strided``: a strided view of the ``(n/l, l)`` grid, no copy). ``strict=True`` drops ``j = i``
  (queries shifted by one against causal keys), so that it can be merged with a piece that already
  holds the diagonal;
* :class:`BandPiece` - the sliding window ``i - w < j <= i`` (``A1`` of ``strided``, ``local``): each
  query block of ``b`` positions against itself and the previous ``K = ceil((w-1)/b)`` blocks, read
  through an overlapping strided view of the keys (no copies);
* :class:`SummaryPiece` - the summary columns of ``fixed`` (``A2``): the few columns
  ``j mod l in [s, s + c)`` are gathered once; each query chunk of ``G`` blocks attends, in one call,
  all columns of the earlier chunks and those of its own chunk through a staircase mask.

Every piece takes ``(B, Hg, T, D)`` tensors (any strides with a contiguous last dim) and works for
any ``T``: zero padding at the end is in the future of every real query, so causality keeps it out.
``forward`` returns ``(out (B, Hg, T, Dv), lse (B, Hg, T), state)``, with ``lse = -inf`` on rows that
have no key in the piece and ``state`` what the backward pass reuses (``None`` unless ``keep``).
Outputs and gradients are written straight into destination views when given (``out=``, ``lse=``,
``grads=``; gradients are added with ``accumulate=True``), which spares a copy per tensor.

Bands and causal subsequences can keep their softmax for the backward pass instead of recomputing
it (``probs = True``, set by the plan when :meth:`Piece.probs_elements` is small; see
:func:`.tile_kernel.probs_forward`); ``alone = True`` tells a piece that it is its heads' only piece,
so that its softmax is already the merged one (and its log-sum-exp is not needed). Very long
sequences (n ~ 10^6) run bands and the backward pass of subsequences in ranges of calls whose
temporaries hold at most :data:`BAND_CHUNK_ELEMENTS` elements each.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .tile_kernel import acc_dtype, probs_backward, probs_forward, tile_backward, tile_forward

#: elements (per tensor) of the key windows one band call reads: longer sequences are cut into ranges
#: of query blocks, so that the backward pass's window gradients stay small (memory for n ~ 10^6)
BAND_CHUNK_ELEMENTS = 1 << 24

Grads = tuple[Tensor, Tensor, Tensor]
Dsts = tuple[Tensor | None, Tensor | None, Tensor | None]


def pad_time(x: Tensor, total: int, front: int = 0) -> Tensor:
    """Zero-pad dim 2 of ``x`` (``(B, H, T, ...)``) to ``front + T + back = total`` positions (no copy
    when nothing is padded)."""
    T = x.shape[2]
    back = total - T - front
    if front == 0 and back == 0:
        return x
    pads = [0, 0] * (x.dim() - 3) + [front, back]
    return F.pad(x, pads)


def additive_mask(allowed: Tensor, dtype: torch.dtype) -> Tensor:
    """Bool mask -> additive float mask (0 allowed, -inf not) in ``dtype``."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, float("-inf"))


def emit(
    src: Tensor,
    n: int,
    dst: Tensor | None = None,
    accumulate: bool = False,
    offset: int = 0,
    fill: float | None = 0.0,
) -> Tensor:
    """Write a piece-layout tensor into time order.

    ``src`` is ``(B, Hg, A, C, *rest)`` holding time positions ``offset + a C + c``; ``dst`` is
    ``(B, Hg, n, *rest)`` (any strides) or None (allocated, or a view of ``src`` when possible).
    Positions past ``n`` are dropped. With ``accumulate`` ``src`` is added; otherwise it is copied
    and the rows of ``dst`` it does not cover are set to ``fill`` (left alone when ``fill`` is None).
    """
    B, Hg, A, C = src.shape[:4]
    rest = tuple(src.shape[4:])
    span = A * C
    viewable = src.stride(2) == C * src.stride(3) or A == 1
    if dst is None and not accumulate and offset == 0 and span >= n and viewable:
        return src.reshape(B, Hg, span, *rest)[:, :, :n]
    if dst is None:
        dst = src.new_empty((B, Hg, n, *rest))
        accumulate = False
    rows = min(span, max(0, n - offset))
    if not accumulate and fill is not None:
        if offset > 0:
            dst[:, :, : min(offset, n)].fill_(fill)
        if offset + rows < n:
            dst[:, :, offset + rows :].fill_(fill)
    if rows == 0:
        return dst
    target = dst[:, :, offset : offset + rows]
    if rows == span:
        target = target.view(B, Hg, A, C, *rest)
        part = src
    else:
        part = src.reshape(B, Hg, span, *rest)[:, :, :rows]
    if accumulate:
        target.add_(part)
    else:
        target.copy_(part)
    return dst


def merge_results(results: list[tuple[Tensor, Tensor]], dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Exact softmax over the union of disjoint key sets from each part's ``(out, lse)``."""
    if len(results) == 1:
        return results[0][0].to(dtype), results[0][1]
    lse = torch.logsumexp(torch.stack([r[1] for r in results]), dim=0)  # (B, H, T); -inf if no key anywhere
    safe = lse.masked_fill(torch.isinf(lse), 0.0)
    out = None
    for o, l_ in results:
        term = o.to(lse.dtype) * torch.exp(l_ - safe).unsqueeze(-1)
        out = term if out is None else out.add_(term)
    return out.to(dtype), lse


class Piece:
    """Interface of a piece (see the module docstring)."""

    #: keep the tile softmax for the backward pass (set by the plan; only pieces that implement it)
    probs: bool = False
    #: the piece is the only one of its head group (set by the plan)
    alone: bool = False

    def probs_elements(self) -> int | None:
        """Elements of the softmax :attr:`probs` would keep per (batch, head), or None if unsupported."""
        return None

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, scale: float, kernel: str, keep: bool,
        out: Tensor | None = None, lse: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Any]:  # fmt: skip
        raise NotImplementedError

    def backward(
        self, state: Any, dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
        scale: float, kernel: str, grads: Dsts = (None, None, None), accumulate: bool = False,
    ) -> Grads:  # fmt: skip
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------------------
class CausalPiece(Piece):
    """Dense causal attention inside subsequences: ``full``, ``chunks`` of ``l`` or ``residue`` mod ``l``."""

    def __init__(self, n: int, layout: str, length: int = 1, strict: bool = False) -> None:
        if layout not in ("full", "chunks", "residue"):
            raise ValueError(f"layout must be 'full', 'chunks' or 'residue', got {layout!r}")
        if strict and layout == "chunks":
            raise ValueError("strict=True is supported for layout 'full' and 'residue', not 'chunks'")
        self.n, self.layout, self.strict = n, layout, strict
        self.length = n if layout == "full" else length
        self.t_pad = n if layout == "full" else -(-n // length) * length

    def __repr__(self) -> str:
        return f"CausalPiece({self.layout}, l={self.length}, strict={self.strict})"

    @property
    def _grid(self) -> tuple[int, int]:
        """(subsequences, their length): the SDPA head count per (B, Hg) and the SDPA sequence length."""
        if self.layout == "full":
            return 1, self.n
        if self.layout == "chunks":
            return self.t_pad // self.length, self.length
        return self.length, self.t_pad // self.length

    def to_layout(self, x: Tensor) -> Tensor:
        """``(B, Hg, T, *rest) -> (B Hg, groups, len, *rest)``: the subsequences become SDPA heads.

        A view whenever ``T`` needs no padding and ``(B, Hg)`` merge (always for B = 1 or head
        slices): the residues mod ``l`` are read with stride ``l`` instead of being transposed.
        """
        B, Hg = x.shape[:2]
        rest = tuple(x.shape[3:])
        x = pad_time(x, self.t_pad)
        if self.layout == "full":
            return x.reshape(B * Hg, 1, self.n, *rest)
        groups, length = self._grid
        if self.layout == "chunks":
            return x.reshape(B * Hg, groups, length, *rest)
        return x.reshape(B * Hg, length, groups, *rest).transpose(1, 2)

    def to_time(self, y: Tensor, Hg: int) -> Tensor:
        """``(B Hg, groups, len', *rest)`` -> ``(B, Hg, A, C, *rest)`` view in time order (for :func:`emit`)."""
        BH, groups, length = y.shape[:3]
        rest = tuple(y.shape[3:])
        y = y.reshape(BH // Hg, Hg, groups, length, *rest)
        return y.transpose(2, 3) if self.layout == "residue" else y

    def _offset(self) -> int:
        """Time offset of the query rows of a strict piece (its first row of each subsequence is empty)."""
        return self.length if self.layout == "residue" else 1

    @property
    def subsequence_length(self) -> int:
        """Positions of one subsequence (the tile side of each call)."""
        return self._grid[1]

    def probs_elements(self) -> int:
        groups, length = self._grid
        return groups * length * length

    def forward(self, q, k, v, scale, kernel, keep, out=None, lse=None):
        Hg = q.shape[1]
        ql, kl, vl = self.to_layout(q), self.to_layout(k), self.to_layout(v)  # (B, G, L, D)
        if self.strict:  # query t attends keys 0..t-1: queries shifted by one, causal
            ql_, kl_, vl_ = ql[:, :, 1:], kl[:, :, :-1], vl[:, :, :-1]
            offset = self._offset()
        else:
            ql_, kl_, vl_, offset = ql, kl, vl, 0
        p = l_ = None
        if ql_.shape[2] > 0:
            if self.probs:  # alone: the softmax is the merged one, no log-sum-exp needed
                y, l_, p = probs_forward(ql_, kl_, vl_, scale=scale, causal=True, lse=not self.alone)
            else:
                y, l_ = tile_forward(ql_, kl_, vl_, scale=scale, causal=True, kernel=kernel)
            out = emit(self.to_time(y, Hg), self.n, out, offset=offset)
            if l_ is None:
                lse = _filled(lse, (q.shape[0], Hg, self.n), torch.empty((), dtype=acc_dtype(q.dtype)), 0.0)
            else:
                lse = emit(self.to_time(l_, Hg), self.n, lse, offset=offset, fill=float("-inf"))
        else:
            out = _filled(out, (q.shape[0], Hg, self.n, v.shape[-1]), v, 0.0)
            lse = _filled(
                lse, (q.shape[0], Hg, self.n), torch.empty((), dtype=acc_dtype(q.dtype)), float("-inf")
            )
        if not keep:
            return out, lse, None
        layouts = (ql, kl, vl) if self.layout == "residue" else None
        return out, lse, (layouts, p, None if self.alone or p is None else l_)

    def backward(
        self, state, dout, q, k, v, out, lse, scale, kernel, grads=(None, None, None), accumulate=False
    ):
        Hg = q.shape[1]
        layouts, p, l_tile = state if state is not None else (None, None, None)
        ql, kl, vl = layouts if layouts is not None else (self.to_layout(x) for x in (q, k, v))
        dol, ol, ll = self.to_layout(dout), self.to_layout(out), self.to_layout(lse)
        n = self.n
        if self.strict:
            if ql.shape[2] < 2:
                return tuple(_zeros_or(d, x, accumulate) for d, x in zip(grads, (q, k, v)))
            dol, ql, kl, vl, ol, ll = (
                dol[:, :, 1:], ql[:, :, 1:], kl[:, :, :-1], vl[:, :, :-1], ol[:, :, 1:], ll[:, :, 1:]
            )  # fmt: skip
        if p is not None:
            merged = None if l_tile is None else (ol, ll, l_tile)
            gq, gk, gv = probs_backward(p, dol, ql, kl, vl, scale=scale, merged=merged)
        else:
            per = self._groups_per_call(ql.shape[0], ql.shape[2], q.shape[-1] + v.shape[-1])
            if per < ql.shape[1] and not self.strict and self.n == self.t_pad and self.layout != "full":
                return self._backward_in_ranges(per, dol, ql, kl, vl, ol, ll, scale, kernel, grads, accumulate, q, k, v)
            gq, gk, gv = tile_backward(dol, ql, kl, vl, ol, ll, scale=scale, causal=True, kernel=kernel)
        if not self.strict:
            return tuple(emit(self.to_time(g, Hg), n, d, accumulate) for g, d in zip((gq, gk, gv), grads))
        dq = emit(self.to_time(gq, Hg), n, grads[0], accumulate, offset=self._offset())
        dk = emit(self.to_time(gk, Hg), n, grads[1], accumulate)
        dv = emit(self.to_time(gv, Hg), n, grads[2], accumulate)
        return dq, dk, dv

    @staticmethod
    def _groups_per_call(N: int, length: int, E: int) -> int:
        """Subsequences per backward call, so that a call's gradients hold at most :data:`BAND_CHUNK_ELEMENTS`."""
        return max(1, BAND_CHUNK_ELEMENTS // max(1, N * length * E))

    def _backward_in_ranges(self, per, dol, ql, kl, vl, ol, ll, scale, kernel, grads, accumulate, q, k, v):
        """The backward pass over ranges of subsequences (very long sequences: bounded temporaries).

        Subsequences partition the positions, so each range writes (or adds) its own positions of the
        destinations, seen as ``(B, Hg, groups, len, E)`` (chunks) or ``(B, Hg, len, groups, E)``
        (residues): splitting the time axis is a view for any strides.
        """
        B, Hg = q.shape[:2]
        groups, length = self._grid
        dsts = [x.new_empty(x.shape) if d is None else d for d, x in zip(grads, (q, k, v))]
        for g0 in range(0, groups, per):
            g1 = min(groups, g0 + per)
            parts = tile_backward(
                dol[:, g0:g1], ql[:, g0:g1], kl[:, g0:g1], vl[:, g0:g1], ol[:, g0:g1], ll[:, g0:g1],
                scale=scale, causal=True, kernel=kernel,
            )  # fmt: skip
            for g, dst in zip(parts, dsts):
                g = g.reshape(B, Hg, g1 - g0, length, g.shape[-1])
                if self.layout == "chunks":
                    target = dst.unflatten(2, (groups, length))[:, :, g0:g1]
                else:
                    target, g = dst.unflatten(2, (length, groups))[:, :, :, g0:g1], g.transpose(2, 3)
                if accumulate:
                    target.add_(g)
                else:
                    target.copy_(g)
        return tuple(dsts)


def _filled(dst: Tensor | None, shape: tuple[int, ...], like: Tensor, value: float) -> Tensor:
    if dst is None:
        return torch.full(shape, value, dtype=like.dtype, device=like.device)
    return dst.fill_(value)


def _zeros_or(dst: Tensor | None, like: Tensor, accumulate: bool) -> Tensor:
    if dst is None:
        return torch.zeros_like(like)
    return dst if accumulate else dst.zero_()


# ---------------------------------------------------------------------------------------------------------
class BandPiece(Piece):
    """Sliding window ``i - w < j <= i``: query block ``P`` (``b`` rows) against key blocks ``P-K..P``.

    ``K = ceil((w - 1) / b)``. Blocks ``P >= K`` read their ``(K + 1) b`` keys through one
    overlapping strided view of the keys (no copy) with one shared ``(b, (K + 1) b)`` mask; the
    first ``K`` blocks attend the first ``K b`` keys with their own masks, in a second small call.
    """

    def __init__(self, n: int, width: int, block: int, device: torch.device, dtype: torch.dtype) -> None:
        self.n, self.width, self.b = n, width, block
        self.K = -(-(width - 1) // block)
        self.nb = -(-n // block)
        self.t_pad = self.nb * block
        self.first = min(self.K, self.nb)  # query blocks whose window starts before position 0
        b, K, f = block, self.K, self.first
        r = torch.arange(b, device=device).view(1, b, 1)
        u = torch.arange((K + 1) * b, device=device).view(1, 1, (K + 1) * b)
        d = K * b + r - u  # i - j inside a full window
        self.mask_main = additive_mask((d >= 0) & (d < width), dtype).view(1, 1, b, (K + 1) * b)
        P = torch.arange(f, device=device).view(f, 1, 1)
        j = torch.arange(f * b, device=device).view(1, 1, f * b)
        d = P * b + r - j
        self.mask_first = additive_mask((d >= 0) & (d < width), dtype).view(1, f, b, f * b)

    def __repr__(self) -> str:
        return f"BandPiece(w={self.width}, b={self.b}, K={self.K}, probs={self.probs})"

    def probs_elements(self) -> int:
        return self.t_pad * (self.K + 1) * self.b

    def _tile_forward(self, q, k, v, scale, mask, kernel):
        """``(out, lse, P or None)`` of one band call."""
        if self.probs:  # alone: the softmax is the merged one, no log-sum-exp needed
            # every row's window holds the row itself: the fused softmax needs no empty-row check
            return probs_forward(q, k, v, scale=scale, mask=mask, lse=not self.alone, rows_have_keys=True)
        return (*tile_forward(q, k, v, scale=scale, mask=mask, kernel=kernel), None)

    def _tile_backward(self, saved, dout, q, k, v, out, lse, scale, mask, kernel):
        p, l_tile = saved
        if p is None:
            return tile_backward(dout, q, k, v, out, lse, scale=scale, mask=mask, kernel=kernel)
        merged = None if self.alone else (out, lse, l_tile)
        return probs_backward(p, dout, q, k, v, scale=scale, merged=merged)

    def _flat(self, x: Tensor) -> Tensor:  # (B, Hg, T, *rest) -> (B Hg, T_pad, *rest), a view when possible
        B, Hg = x.shape[:2]
        return pad_time(x, self.t_pad).reshape(B * Hg, self.t_pad, *x.shape[3:])

    def _blocks(self, xf: Tensor) -> Tensor:  # (N, T_pad, *rest) -> (N, nb, b, *rest)
        return xf.reshape(xf.shape[0], self.nb, self.b, *xf.shape[2:])

    def _windows(self, xf: Tensor) -> Tensor:  # (N, T_pad, E) -> overlapping view (N, nb - K, (K+1) b, E)
        N, _, E = xf.shape
        s0, s1, s2 = xf.stride()
        return xf.as_strided((N, self.nb - self.K, (self.K + 1) * self.b, E), (s0, self.b * s1, s1, s2))

    def _firsts(self, xf: Tensor) -> Tensor:  # (N, T_pad, E) -> (N, first, first b, E), broadcast view
        f = self.first
        return xf[:, None, : f * self.b].expand(-1, f, -1, -1)

    def _time(
        self, y: Tensor, B: int, Hg: int
    ) -> Tensor:  # (B Hg, blocks, b, *rest) -> (B, Hg, blocks, b, *rest)
        return y.reshape(B, Hg, *y.shape[1:])

    def forward(self, q, k, v, scale, kernel, keep, out=None, lse=None):
        B, Hg = q.shape[:2]
        K, f = self.K, self.first
        qb = self._blocks(self._flat(q))
        kf, vf = self._flat(k), self._flat(v)
        saved = [(None, None), (None, None)]  # (P, lse of the call) of the main and first calls
        chunks = self._chunks(kf.shape[0], kf.shape[-1] + vf.shape[-1])
        if len(chunks) > 1:  # long sequences: the query blocks in ranges, temporaries bounded
            out = q.new_empty((B, Hg, self.n, v.shape[-1])) if out is None else out
            lse = torch.empty((B, Hg, self.n), dtype=acc_dtype(q.dtype), device=q.device) if lse is None else lse
        kw, vw = (self._windows(kf), self._windows(vf)) if chunks else (None, None)
        for P0, P1 in chunks:  # full windows
            y, l_, p = self._tile_forward(qb[:, P0:P1], kw[:, P0 - K : P1 - K], vw[:, P0 - K : P1 - K],
                                          scale, self.mask_main, kernel)  # fmt: skip
            saved[0] = (p, l_)
            fill = 0.0 if len(chunks) == 1 else None
            out = emit(self._time(y, B, Hg), self.n, out, offset=P0 * self.b, fill=fill)
            lse = self._emit_lse(l_, q, lse, P0 * self.b, fill)
        y, l_, p = self._tile_forward(qb[:, :f], self._firsts(kf), self._firsts(vf), scale, self.mask_first, kernel)
        saved[1] = (p, l_)
        fill = 0.0 if self.nb <= K else None
        out = emit(self._time(y, B, Hg), self.n, out, fill=fill)
        lse = self._emit_lse(l_, q, lse, 0, fill)
        return out, lse, (saved if keep and self.probs else None)

    def _emit_lse(self, l_, q, lse, offset, fill):
        """The call's log-sum-exp into time order (zeros when a lone piece kept its softmax instead:
        nothing merges with it and its backward needs only the softmax)."""
        B, Hg = q.shape[:2]
        if l_ is None:
            return _filled(lse, (B, Hg, self.n), torch.empty((), dtype=acc_dtype(q.dtype), device=q.device), 0.0)
        return emit(self._time(l_, B, Hg), self.n, lse, offset=offset, fill=fill)

    def _chunks(self, N: int, E: int) -> list[tuple[int, int]]:
        """Ranges ``[P0, P1)`` of the query blocks of the main call: one range unless its key windows
        would exceed :data:`BAND_CHUNK_ELEMENTS` (very long sequences; kept softmaxes are never split)."""
        if self.nb <= self.K:
            return []
        per = max(1, BAND_CHUNK_ELEMENTS // max(1, N * (self.K + 1) * self.b * E))
        if self.probs or per >= self.nb - self.K:
            return [(self.K, self.nb)]
        return [(P, min(self.nb, P + per)) for P in range(self.K, self.nb, per)]

    def backward(
        self, state, dout, q, k, v, out, lse, scale, kernel, grads=(None, None, None), accumulate=False
    ):
        B, Hg = q.shape[:2]
        K, f, b, n = self.K, self.first, self.b, self.n
        qf, kf, vf, dof, of, lf = (self._flat(x) for x in (q, k, v, dout, out, lse))
        qb, dob, ob, lb = (self._blocks(x) for x in (qf, dof, of, lf))
        dq, dk, dv = grads
        saved = state if state is not None else [(None, None), (None, None)]
        chunks = self._chunks(kf.shape[0], kf.shape[-1] + vf.shape[-1])
        if len(chunks) > 1:  # every range adds into zeroed destinations
            dq, dk, dv = (
                x.new_zeros(x.shape) if d is None else (d if accumulate else d.zero_())
                for d, x in ((dq, q), (dk, k), (dv, v))
            )
            accumulate = True
        kw, vw = (self._windows(kf), self._windows(vf)) if chunks else (None, None)
        for P0, P1 in chunks:
            gq, gk, gv = self._tile_backward(
                saved[0], dob[:, P0:P1], qb[:, P0:P1], kw[:, P0 - K : P1 - K], vw[:, P0 - K : P1 - K],
                ob[:, P0:P1], lb[:, P0:P1], scale, self.mask_main, kernel,
            )  # fmt: skip
            dq = emit(self._time(gq, B, Hg), n, dq, accumulate, offset=P0 * b)
            folded = []
            for g, dst in ((gk, dk), (gv, dv)):  # window slot t of query block P holds key block P - K + t
                g = self._time(g, B, Hg)  # (B, Hg, P1 - P0, (K+1) b, E)
                dst = emit(g[:, :, :, K * b :], n, dst, accumulate, offset=P0 * b)
                for t in range(K):
                    emit(g[:, :, :, t * b : (t + 1) * b], n, dst, accumulate=True, offset=(P0 - K + t) * b)
                folded.append(dst)
            dk, dv = folded
            accumulate = True
        gq, gk, gv = self._tile_backward(
            saved[1], dob[:, :f], qb[:, :f], self._firsts(kf), self._firsts(vf), ob[:, :f], lb[:, :f],
            scale, self.mask_first, kernel,
        )  # fmt: skip
        dq = emit(self._time(gq, B, Hg), n, dq, accumulate)
        gk, gv = (
            g.sum(1).reshape(B, Hg, 1, f * b, -1) for g in (gk, gv)
        )  # keys were shared by the first blocks
        return dq, emit(gk, n, dk, accumulate), emit(gv, n, dv, accumulate)


# ---------------------------------------------------------------------------------------------------------
def summary_chunk_blocks(n_blocks: int, length: int, count: int, target_chunks: int = 4, rows: int = 1024) -> int:
    """Blocks per query chunk ``G`` for :class:`SummaryPiece`: at least ``target_chunks`` chunks and at
    most about ``rows`` query rows per chunk (the work is ``(nch + 1) / nch`` times the ideal: more
    chunks waste less; measured on CPU, calls of ~1024 rows lose nothing to per-call costs: at
    n = 12288, l = 128, 12 chunks took 0.88x the time of 4), with the shared staircase mask
    ``(G l, n_blocks c)`` kept below 2**24 elements."""
    g = max(1, min(-(-n_blocks // target_chunks), rows // length))
    cap = max(1, (1 << 24) // max(1, length * n_blocks * count))
    return min(g, cap)


class SummaryPiece(Piece):
    """Summary columns ``j mod l in [s, s + c)`` of earlier blocks (and, with ``own``, of the query's
    own block up to ``j <= i``).

    The columns are gathered once, ``(B, Hg, S = nch G c, D)``. Query chunk ``ch`` (``G`` blocks of
    ``l`` rows) attends the first ``(ch + 1) G c`` columns: all columns of earlier chunks, and its own
    chunk's columns through a staircase (block ``g`` of the chunk sees the columns of blocks
    ``g' < g``, plus its own block's ``s + t <= r`` with ``own``). One mask ``(G l, S)`` holds
    ``[allowed ... | staircase]``; chunk ``ch`` reads its last ``(ch + 1) G c`` columns (a view), so
    each chunk is a single kernel call.
    """

    def __init__(
        self, n, length, start, count, own: bool, device, dtype, chunk_blocks: int | None = None
    ) -> None:
        self.n, self.l, self.s, self.c, self.own = n, length, start, count, own
        n_blocks = -(-n // length)
        G = chunk_blocks or summary_chunk_blocks(n_blocks, length, count)
        self.G = G
        self.nch = -(-n_blocks // G)
        self.t_pad = self.nch * G * length
        per = G * count
        gq = torch.arange(G * length, device=device).view(-1, 1)
        gk = torch.arange(per, device=device).view(1, -1)
        qb, r = gq // length, gq % length
        kb, t = gk // count, gk % count
        stair = kb < qb
        if own:
            stair = stair | ((kb == qb) & (start + t <= r))
        allowed = torch.cat(
            [torch.ones((G * length, (self.nch - 1) * per), dtype=torch.bool, device=device), stair], 1
        )
        self.mask = additive_mask(allowed, dtype).view(1, 1, G * length, self.nch * per)
        self.empty_first = (~stair.any(-1)).view(1, 1, G * length)  # rows of chunk 0 with no column

    def __repr__(self) -> str:
        return (
            f"SummaryPiece(l={self.l}, s={self.s}, c={self.c}, G={self.G}, chunks={self.nch}, own={self.own})"
        )

    def columns(self, x: Tensor) -> Tensor:
        """The summary columns of ``x`` ``(B, Hg, T, E)`` -> contiguous ``(B, Hg, nch G c, E)``."""
        B, Hg, _, E = x.shape
        xb = pad_time(x, self.t_pad).reshape(B, Hg, self.nch * self.G, self.l, E)
        return xb[:, :, :, self.s : self.s + self.c].reshape(B, Hg, -1, E).contiguous()

    def uncolumns(self, g: Tensor, dst: Tensor | None, accumulate: bool) -> Tensor:
        """Column gradients ``(B, Hg, nch G c, E)`` -> ``(B, Hg, T, E)`` (zero off the columns)."""
        B, Hg, _, E = g.shape
        NB = self.nch * self.G
        g5 = g.reshape(B, Hg, NB, self.c, E)
        if dst is not None and self.n == self.t_pad:
            d5 = dst.view(B, Hg, NB, self.l, E)
            if not accumulate:
                dst.zero_()
            d5[:, :, :, self.s : self.s + self.c] += g5
            return dst
        full = g.new_zeros((B, Hg, NB, self.l, E))
        full[:, :, :, self.s : self.s + self.c] = g5
        return emit(full, self.n, dst, accumulate)

    def _calls(self):
        """``(rows, cols, mask)`` of each chunk's kernel call."""
        rows, per, total = self.G * self.l, self.G * self.c, self.nch * self.G * self.c
        for ch in range(self.nch):
            width = (ch + 1) * per
            yield slice(ch * rows, (ch + 1) * rows), slice(0, width), self.mask[..., total - width :]

    def forward(self, q, k, v, scale, kernel, keep, out=None, lse=None):
        B, Hg = q.shape[:2]
        qp = pad_time(q, self.t_pad)
        ks, vs = self.columns(k), self.columns(v)
        o = qp.new_empty((B, Hg, self.t_pad, v.shape[-1]))
        l_ = torch.empty((B, Hg, self.t_pad), dtype=acc_dtype(q.dtype), device=q.device)
        for ch, (rows, cols, mask) in enumerate(self._calls()):
            o[:, :, rows], l_[:, :, rows] = tile_forward(
                qp[:, :, rows], ks[:, :, cols], vs[:, :, cols], scale=scale, mask=mask,
                empty=self.empty_first if ch == 0 else None, kernel=kernel,
            )  # fmt: skip
        out = emit(o.unsqueeze(2), self.n, out)
        lse = emit(l_.unsqueeze(2), self.n, lse)
        return out, lse, ((ks, vs) if keep else None)

    def backward(
        self, state, dout, q, k, v, out, lse, scale, kernel, grads=(None, None, None), accumulate=False
    ):
        ks, vs = state if state is not None else (self.columns(k), self.columns(v))
        qp, dop, op, lp = (pad_time(x, self.t_pad) for x in (q, dout, out, lse))
        dq = torch.empty_like(qp)
        dks, dvs = torch.zeros_like(ks), torch.zeros_like(vs)
        for rows, cols, mask in self._calls():
            gq, gk, gv = tile_backward(
                dop[:, :, rows], qp[:, :, rows], ks[:, :, cols], vs[:, :, cols], op[:, :, rows], lp[:, :, rows],
                scale=scale, mask=mask, kernel=kernel,
            )  # fmt: skip
            dq[:, :, rows] = gq
            dks[:, :, cols] += gk
            dvs[:, :, cols] += gv
        dq = emit(dq.unsqueeze(2), self.n, grads[0], accumulate)
        return dq, self.uncolumns(dks, grads[1], accumulate), self.uncolumns(dvs, grads[2], accumulate)
