"""The attention backend interface: *how* attention is computed for a component.

A backend knows nothing about a specific pattern beyond what the component exposes (its element
mask, block layout, ``mask_mod`` or the parts it is made of). Every backend computes::

    out[b, h, i] = sum_j softmax_j(q_i . k_j * scale over allowed j) v_j     # (B, H, T, Dv)

over exactly the keys that ``component.mask(T, layer)[h, i]`` allows. Query rows with no allowed
key get a zero output (never NaN), in the forward and the backward pass.
"""

from __future__ import annotations

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
