"""Multi-head self-attention of the Sparse Transformer (Child et al. 2019, §4.2-§5.1).

The module only does the linear algebra that every pattern shares::

    q, k, v = W_q x, W_k x, W_v x            # q, k: d -> d_qk (d or d/2 with half_qk, §6); v: d -> d
    out     = W_p attend(q, k, v, S)          # eq. (5)/(8): heads concatenated, W_p the output projection

*Which* positions each head sees (``S``, the attention component from :mod:`attention_patterns`) and
*how* ``attend`` is computed (a backend from :mod:`attention_patterns.backends`) are plugged in from
outside: the module never inspects the pattern, so new patterns and new backends (block-sparse,
FlexAttention, xFormers, ...) need no change here. It passes its layer index to the backend so
that ``interleaved`` patterns (§5.1, eq. 6) alternate their parts from block to block.

No dropout on the attention weights (§5.4).
"""

from __future__ import annotations

from torch import Tensor, nn

from attention_patterns import AttentionPattern
from attention_patterns.backends import AttentionBackend


class CausalSelfAttention(nn.Module):
    """Multi-head attention over the positions allowed by ``component`` (paper eq. 5-8).

    Args:
        d: model width ``n_embd``.
        n_head: number of heads ``n_h``; each head has ``d_qk / n_h`` query/key and ``d / n_h``
            value dimensions (the per-head sizes shrink by ``1/n_h``, §5.1).
        qk_dim: total query/key width ``d_qk`` (``d``, or ``d/2`` with ``half_qk``, §6).
        layer: index of the residual block holding this module (for interleaved patterns).
        component: the attention pattern, shared by every block of a model.
        backend: the attention backend, shared by every block of a model.
    """

    def __init__(
        self,
        d: int,
        n_head: int,
        qk_dim: int,
        layer: int,
        component: AttentionPattern,
        backend: AttentionBackend,
    ) -> None:
        super().__init__()
        if d % n_head or qk_dim % n_head:
            raise ValueError(
                f"n_embd={d} and the query/key width {qk_dim} must be divisible by n_head={n_head}"
            )
        self.n_head = n_head
        self.qk_dim = qk_dim
        self.layer = layer
        self.component = component
        self.backend = backend
        # q, k and v in one matmul: (d) -> (d_qk + d_qk + d)
        self.qkv = nn.Linear(d, 2 * qk_dim + d)
        self.proj = nn.Linear(d, d)  # W_p (residual output)
        self.proj.is_residual_output = True  # read by SparseTransformer.reset_parameters

    def qkv_heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # x: (B, T, d)
        """Queries, keys and values split into heads: ``(B, nh, T, hs_qk)`` twice and ``(B, nh, T, hs)``."""
        B, T, C = x.shape
        nh = self.n_head
        q, k, v = self.qkv(x).split([self.qk_dim, self.qk_dim, C], dim=-1)
        q = q.view(B, T, nh, self.qk_dim // nh).transpose(1, 2)  # (B, nh, T, hs_qk)
        k = k.view(B, T, nh, self.qk_dim // nh).transpose(1, 2)  # (B, nh, T, hs_qk)
        v = v.view(B, T, nh, C // nh).transpose(1, 2)  # (B, nh, T, hs)
        return q, k, v

    def merge_heads(self, y: Tensor) -> Tensor:  # y: (B, nh, T, hs)
        """Heads concatenated (eq. 8) and projected by ``W_p``: ``(B, T, d)``."""
        B, nh, T, hs = y.shape
        return self.proj(y.transpose(1, 2).contiguous().view(B, T, nh * hs))  # (B, T, d)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, T, d)
        q, k, v = self.qkv_heads(x)
        # scale 1/sqrt(hs_qk), the inner dimension of queries and keys (eq. 3)
        y = self.backend.attend(q, k, v, self.component, layer=self.layer)  # (B, nh, T, hs)
        return self.merge_heads(y)  # (B, T, d)

    def extra_repr(self) -> str:
        return (
            f"layer={self.layer}, n_head={self.n_head}, qk_dim={self.qk_dim}, pattern={self.component.name!r}"
        )
