"""Generic block gather: any pattern, from its block layout and element ``mask_mod``.

The sparse-kernel recipe of the paper (Child et al. 2019, §5.5: "computing only the blocks of
the attention matrix that are nonzero"): the sequence is cut into blocks of ``b`` positions; for
every query block row the active key blocks of ``component.layout(n, b)`` are gathered into a
padded list, the element mask (``component.mask_mod``) is applied inside the gathered tiles, and
softmax attention runs over exactly the allowed positions.

Rows are grouped in *buckets* of similar active-block counts (padding waste at most ~25%), so a
few global rows that see every block do not make every row dense; buckets are cut into chunks of
bounded size. Per-head layouts (``layout`` with a head axis) are handled by treating ``(head,
block row)`` pairs as rows. All index tensors and masks are built once per ``(n, layer, device,
dtype)`` by the backend's plan cache.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..base import AttentionPattern
from .pieces import Grads, Piece, additive_mask, emit, pad_time
from .tile_kernel import acc_dtype, tile_backward, tile_forward

#: elements of one chunk's ``(rows, b, K b)`` mask
CHUNK_MASK_ELEMENTS = 1 << 22


def bucket_rows(counts: list[int], ratio: float = 1.25) -> list[list[int]]:
    """Row indices with ``count > 0`` grouped so that a bucket's largest count is at most
    ``max(ratio * smallest, smallest + 1)``."""
    order = sorted((c, r) for r, c in enumerate(counts) if c > 0)
    buckets: list[list[int]] = []
    first = None
    for c, r in order:
        if first is None or c > max(ratio * first, first + 1):
            buckets.append([])
            first = c
        buckets[-1].append(r)
    return buckets


class _Chunk:
    """One gather call: query rows ``rows`` (R,), key rows ``keys`` (R, K), additive mask (1, R, b, K b)."""

    def __init__(self, rows: Tensor, keys: Tensor, mask: Tensor, empty: Tensor) -> None:
        self.rows, self.keys, self.mask, self.empty = rows, keys, mask, empty
        self.flat_keys = keys.reshape(-1)


class GatherPiece(Piece):
    """Block-sparse attention from the layout of ``component`` (all heads at once)."""

    def __init__(
        self,
        component: AttentionPattern,
        n: int,
        layer: int,
        num_heads: int,
        block: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.n, self.b = n, block
        layout = component.layout(n, block, layer)  # (Hp, nb, nb) bool
        Hp, nb = layout.shape[0], layout.shape[-1]
        if Hp not in (1, num_heads):
            raise ValueError(
                f"component {component.name!r} gives {Hp} head masks but q has {num_heads} heads; "
                f"set the component's num_heads to {num_heads}"
            )
        self.per_head, self.nb, self.t_pad = Hp > 1, nb, nb * block
        mask_mod = component.mask_mod(layer)
        counts = layout.sum(-1).reshape(-1)  # (Hp * nb,)
        flat = layout.reshape(Hp * nb, nb)
        ar = torch.arange(block)
        self.chunks: list[_Chunk] = []
        for bucket in bucket_rows(counts.tolist()):
            K = int(counts[bucket].max())
            per = max(1, CHUNK_MASK_ELEMENTS // (K * block * block))
            for s in range(0, len(bucket), per):
                rows = torch.tensor(bucket[s : s + per], dtype=torch.long)  # (R,)
                R = rows.numel()
                active = flat[rows]  # (R, nb)
                # active column indices first (stable sort keeps them ascending), padding after
                order = torch.sort((~active).to(torch.int8), dim=1, stable=True).indices[:, :K]  # (R, K)
                valid = torch.gather(active, 1, order)  # (R, K)
                h, P = rows // nb, rows % nb
                qi = (P * block).view(R, 1, 1) + ar.view(1, block, 1)  # (R, b, 1)
                kj = ((order * block).view(R, K, 1) + ar.view(1, 1, block)).view(R, 1, K * block)
                ok = mask_mod(torch.zeros((), dtype=torch.long), h.view(R, 1, 1), qi, kj)
                ok = ok & valid.repeat_interleave(block, dim=1).view(R, 1, K * block) & (kj < n) & (qi < n)
                ok = ok.expand(R, block, K * block)
                keys = h.view(R, 1) * nb + order if self.per_head else order
                self.chunks.append(
                    _Chunk(
                        rows.to(device),
                        keys.to(device),
                        additive_mask(ok.to(device), dtype).unsqueeze(0),  # (1, R, b, K b)
                        (~ok.any(-1)).to(device).unsqueeze(0),  # (1, R, b)
                    )
                )

    def __repr__(self) -> str:
        return f"GatherPiece(b={self.b}, chunks={len(self.chunks)}, per_head={self.per_head})"

    def _rows_view(self, x: Tensor) -> Tensor:
        """(B, H, T, *rest) -> (N, rows, b, *rest): rows are block rows (shared layout) or (head, block row) pairs."""
        B, H = x.shape[:2]
        rest = tuple(x.shape[3:])
        x = pad_time(x, self.t_pad)
        if self.per_head:
            return x.reshape(B, H * self.nb, self.b, *rest)
        return x.reshape(B * H, self.nb, self.b, *rest)

    def _time(self, y: Tensor, B: int, H: int) -> Tensor:  # (N, rows, b, *rest) -> (B, H, nb, b, *rest)
        return y.reshape(B, H, self.nb, self.b, *y.shape[3:])

    def _gather_keys(self, x: Tensor, ch: _Chunk) -> Tensor:  # (N, rows, b, E) -> (N, R, K b, E)
        N, _, b, E = x.shape
        R = ch.rows.numel()
        return x.index_select(1, ch.flat_keys).view(N, R, -1, E)

    def forward(self, q, k, v, scale, kernel, keep, out=None, lse=None):
        B, H = q.shape[:2]
        qr, kr, vr = self._rows_view(q), self._rows_view(k), self._rows_view(v)
        o_all = qr.new_zeros(qr.shape[:3] + (v.shape[-1],))
        l_all = torch.full(qr.shape[:3], float("-inf"), dtype=acc_dtype(q.dtype), device=q.device)
        for ch in self.chunks:
            o, l_ = tile_forward(
                qr.index_select(1, ch.rows), self._gather_keys(kr, ch), self._gather_keys(vr, ch),
                scale=scale, mask=ch.mask, empty=ch.empty, kernel=kernel,
            )  # fmt: skip
            o_all.index_copy_(1, ch.rows, o)
            l_all.index_copy_(1, ch.rows, l_)
        out = emit(self._time(o_all, B, H), self.n, out)
        return out, emit(self._time(l_all, B, H), self.n, lse), None

    def backward(
        self, state, dout, q, k, v, out, lse, scale, kernel, grads=(None, None, None), accumulate=False
    ) -> Grads:
        B, H = q.shape[:2]
        qr, kr, vr = self._rows_view(q), self._rows_view(k), self._rows_view(v)
        dor, orr = self._rows_view(dout), self._rows_view(out)
        lr = self._rows_view(lse)
        dq, dk, dv = torch.zeros_like(qr), torch.zeros_like(kr), torch.zeros_like(vr)
        for ch in self.chunks:
            gq, gk, gv = tile_backward(
                dor.index_select(1, ch.rows), qr.index_select(1, ch.rows), self._gather_keys(kr, ch),
                self._gather_keys(vr, ch), orr.index_select(1, ch.rows), lr.index_select(1, ch.rows),
                scale=scale, mask=ch.mask, kernel=kernel,
            )  # fmt: skip
            N, R = gq.shape[:2]
            dq.index_copy_(1, ch.rows, gq)
            dk.index_add_(1, ch.flat_keys, gk.reshape(N, -1, self.b, gk.shape[-1]))
            dv.index_add_(1, ch.flat_keys, gv.reshape(N, -1, self.b, gv.shape[-1]))
        return tuple(emit(self._time(g, B, H), self.n, d, accumulate) for g, d in zip((dq, dk, dv), grads))
