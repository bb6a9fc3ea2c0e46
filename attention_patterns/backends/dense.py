"""The dense masked reference backend: PyTorch SDPA with the component's boolean element mask.

Costs the full ``O(n^2)`` whatever the pattern; it is the reference every other backend is tested
against. Masks are cached per ``(component, layer, device)``: the mask of the longest ``n`` seen, whose
top-left corner serves every shorter ``n`` (bounded memory however many lengths are served). The mask is passed
to SDPA as a 4-D ``(1, H or 1, T, T)`` tensor (3-D masks send SDPA to its slow math path). Rows with
no allowed key are given their own position so that SDPA stays finite, and their output is set to
zero; the zero is a constant, so no gradient flows through those rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..base import AttentionPattern
from .base import AttentionBackend, check_qkv
from .lru import DEFAULT_SIZE, BoundedCache


class DenseMaskCache:
    """Cache of ``(mask4d, empty_rows)`` keyed by ``(component, layer parity, device)``.

    Each entry holds the mask of the longest ``n`` asked for so far; a shorter ``n`` gets its
    top-left ``n x n`` corner (a view: masks depend on ``i`` and ``j`` only, and row emptiness on
    ``j <= i``), so the memory is bounded by the longest length, not by how many lengths were seen,
    and at most ``size`` entries are kept (least recently used evicted).
    """

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self._cache = BoundedCache(size)

    def get(self, component: AttentionPattern, n: int, layer: int, device: torch.device) -> tuple[Tensor, Tensor | None]:
        key = (layer % component.num_layers_period, str(device))
        hit = self._cache.lookup(component, key)
        if hit is None or hit[0] < n:
            mask = component.mask(n, layer, device=device)  # (H', T, T)
            empty = ~mask.any(-1, keepdim=True)  # (H', T, 1)
            if bool(empty.any()):
                eye = torch.eye(n, dtype=torch.bool, device=device)
                mask = mask | (empty & eye)
                hit = (n, mask.unsqueeze(0), empty.unsqueeze(0))  # (1, H', T, T), (1, H', T, 1)
            else:
                hit = (n, mask.unsqueeze(0), None)
            self._cache.store(component, key, hit)
        elif hit[0] > n:
            component.validate_length(n)
        N, mask, empty = hit
        if N == n:
            return mask, empty
        return mask[..., :n, :n], None if empty is None else empty[..., :n, :]


class DenseBackend(AttentionBackend):
    """SDPA with the dense boolean mask (the reference)."""

    name = "dense"

    def __init__(self) -> None:
        super().__init__()
        self.masks = DenseMaskCache()

    def attend(self, q, k, v, component, layer=0, scale=None):
        check_qkv(q, k, v)
        T = q.shape[2]
        mask, empty = self.masks.get(component, T, layer, q.device)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)  # (B, H, T, Dv)
        if empty is not None:
            out = out.masked_fill(empty, 0.0)
        return out


def dense_attention_probs(q: Tensor, k: Tensor, allowed: Tensor, scale: float | None = None) -> Tensor:
    """Masked softmax weights of the query rows ``q`` ``(B, H, R, D)`` over the keys ``k`` ``(B, H, T, D)``.

    ``allowed`` is bool ``(H or 1, R, T)`` (:meth:`AttentionPattern.row_mask`); returns ``(B, H, R, T)``
    in float32 at least, 0 on forbidden keys, all zeros for a row with no allowed key (never NaN).
    """
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    dtype = torch.promote_types(q.dtype, torch.float32)
    scores = (q.to(dtype) @ k.to(dtype).transpose(-1, -2)) * scale  # (B, H, R, T)
    empty = ~allowed.any(-1, keepdim=True)  # (H', R, 1)
    scores = scores.masked_fill(~allowed, float("-inf")).masked_fill(empty, 0.0)
    return torch.softmax(scores, dim=-1).masked_fill(~allowed, 0.0)  # (B, H, R, T)


def dense_attention_reference(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, scale: float | None = None) -> Tensor:
    """Plain-PyTorch masked softmax attention (no SDPA), for tests: rows with no key give zeros.

    ``mask`` is bool ``(H or 1, T, T)``; computed in float64-safe fashion by the caller's dtype.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = (q @ k.transpose(-1, -2)) * scale  # (B, H, T, T)
    scores = scores.masked_fill(~mask, float("-inf"))
    empty = ~mask.any(-1, keepdim=True)
    probs = torch.softmax(scores.masked_fill(empty, 0.0), dim=-1).masked_fill(~mask, 0.0)
    return probs @ v  # (B, H, T, Dv)
