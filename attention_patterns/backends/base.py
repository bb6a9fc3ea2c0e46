"""The attention backend interface: *how* attention is computed for a component.

A backend knows nothing about a specific pattern beyond what the component exposes (its element
mask, block layout, ``mask_mod`` or the parts it is made of). Every backend computes::

    out[b, h, i] = sum_j softmax_j(q_i . k_j * scale over allowed j) v_j     # (B, H, T, Dv)

over exactly the keys that ``component.mask(T, layer)[h, i]`` allows. Query rows with no allowed
key get a zero output (never NaN), in the forward and the backward pass.

:meth:`AttentionBackend.attention_probs` returns those softmax weights for chosen query rows, so
that pictures of a trained model show exactly what it computed (``probs @ v`` equals the rows of
``attend``); by default it is the dense masked reference restricted to the rows asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..base import AttentionPattern


class AttentionBackend:
    """Base class; subclasses set ``name`` and implement :meth:`attend`."""

    name: str = ""
    #: True if the backend computes gradients (False for inference-only backends)
    supports_backward: bool = True

    def __init__(self, **options: Any) -> None:
        if options:
            raise ValueError(f"backend {self.name!r} takes no options, got {sorted(options)}")

    @classmethod
    def availability(cls, device: torch.device | str = "cpu") -> tuple[bool, str]:
        """``(available, reason)`` for ``device``; the reason explains an unavailable backend."""
        return True, ""

    def attend(
        self,
        q: Tensor,  # (B, H, T, Dqk)
        k: Tensor,  # (B, H, T, Dqk)
        v: Tensor,  # (B, H, T, Dv)
        component: AttentionPattern,
        layer: int = 0,
        scale: float | None = None,
    ) -> Tensor:  # (B, H, T, Dv)
        raise NotImplementedError

    def attention_probs(
        self,
        q: Tensor,  # (B, H, T, Dqk)
        k: Tensor,  # (B, H, T, Dqk)
        component: AttentionPattern,
        layer: int = 0,
        rows: Tensor | Sequence[int] | None = None,
        scale: float | None = None,
    ) -> Tensor:  # (B, H, R, T)
        """Attention probabilities of query ``rows`` (default: every row) over all ``T`` keys.

        ``probs[b, h, r, j] = softmax_j(q[b, h, rows[r]] . k[b, h, j] * scale)`` over the keys that
        ``component`` allows (``scale`` defaults to ``Dqk ** -0.5``, as in :meth:`attend`): the weights
        :meth:`attend` averages the values with, so ``probs @ v == attend(q, k, v)[:, :, rows]``. Each
        row sums to 1 over its allowed keys and is exactly 0 on the others; a row with no allowed
        key is all zeros. Float32 at least (float64 stays float64).

        The default is the dense masked reference on those rows (``O(R T)`` per head, no ``T x T``
        mask): every backend computes this same softmax, so block-sparse and fused backends delegate
        to it for the few rows a picture needs; a backend that keeps its probabilities may override it.
        """
        from .dense import dense_attention_probs

        check_qk(q, k)
        T = q.shape[2]
        rows = torch.arange(T, device=q.device) if rows is None else torch.as_tensor(rows, device=q.device)
        allowed = component.row_mask(rows, T, layer, device=q.device)  # (H', R, T)
        return dense_attention_probs(q[:, :, rows.reshape(-1).long()], k, allowed, scale)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def check_qkv(q: Tensor, k: Tensor, v: Tensor) -> None:
    """Shapes must be ``(B, H, T, D)`` with matching B, H, T and q/k head dims."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"q, k, v must be (B, H, T, D); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[:3] != k.shape[:3] or q.shape[:3] != v.shape[:3] or q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q, k, v must share (B, H, T) and q, k the head dim; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )


def check_qk(q: Tensor, k: Tensor) -> None:
    """Shapes must be ``(B, H, T, Dqk)``, the same for ``q`` and ``k``."""
    if q.dim() != 4 or q.shape != k.shape:
        raise ValueError(f"q and k must be (B, H, T, D) of the same shape; got {tuple(q.shape)}, {tuple(k.shape)}")
