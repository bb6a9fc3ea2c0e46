"""The ``xformers`` backend: ``xformers.ops.memory_efficient_attention`` with exact attention biases.

xFormers' fused CUDA kernels take structured ``attn_bias`` objects that they never materialise.
Every head group whose attention set is a single part of the pattern (paper §4.3 ``split`` and
``interleaved`` modes, and the one-part patterns) maps onto one kernel call exactly:

=================  ============================================================================
part               call
=================  ============================================================================
``AllPast``        ``LowerTriangularMask`` on the sequence (dense causal, §3)
``Window(w)``      ``LowerTriangularFromBottomRightLocalAttentionMask(w)``: ``i - w < j <= i``
``SameBlock(l)``   sequence cut into chunks of ``l`` (batched), ``LowerTriangularMask``
``EveryLth(l)``    positions with equal residue mod ``l`` (a transpose, batched), ``LowerTriangularMask``
=================  ============================================================================

Unions of parts (``merged`` mode), summary columns (``fixed``'s ``A2``) and block-grid patterns have
no exact bias here: :meth:`XFormersBackend.supports` says so and :meth:`attend` raises, naming the
backends that do serve them (``blocksparse``, ``flex``).

The backend is available only when ``xformers.ops`` imports and the device is CUDA; otherwise
:meth:`availability` returns ``(False, reason)``. Inputs are ``(B, H, T, D)`` like every backend;
xFormers wants ``(B, M, H, K)``, which is a transpose view.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor

from ..base import AttentionPattern
from ..parts import AllPast, EveryLth, Part, SameBlock, Window
from . import register_backend
from .base import AttentionBackend, check_qkv
from .structured import head_groups


def load_xformers_ops() -> SimpleNamespace:
    """The xFormers entry points this backend uses (raises ImportError without xFormers)."""
    import xformers.ops as xops
    from xformers.ops.fmha import attn_bias

    return SimpleNamespace(
        memory_efficient_attention=xops.memory_efficient_attention,
        LowerTriangularMask=attn_bias.LowerTriangularMask,
        LowerTriangularFromBottomRightLocalAttentionMask=attn_bias.LowerTriangularFromBottomRightLocalAttentionMask,
    )


def single_part_kind(parts: list[Part]) -> tuple[str, int] | None:
    """``(kind, length)`` for a head group served by one exact xFormers call, else None."""
    if any(isinstance(p, AllPast) for p in parts):
        return "causal", 0
    if len(parts) != 1:
        return None if parts else ("empty", 0)
    p = parts[0]
    if getattr(p, "per_head", False):
        return None
    if isinstance(p, Window):
        return "window", p.width
    if isinstance(p, SameBlock):
        return "chunks", p.length
    if isinstance(p, EveryLth):
        return "residue", p.stride
    return None


class XFormersBackend(AttentionBackend):
    """xFormers memory-efficient attention, one exact call per head group (CUDA only).

    ``ops`` replaces the xFormers entry points (a namespace like :func:`load_xformers_ops` returns);
    the default imports ``xformers.ops``. Tests inject a stand-in to check the decompositions.
    """

    name = "xformers"

    def __init__(self, ops: Any | None = None, **options: Any) -> None:
        super().__init__(**options)
        self._ops = ops

    @classmethod
    def availability(cls, device: torch.device | str = "cpu") -> tuple[bool, str]:
        try:
            load_xformers_ops()
        except Exception as e:  # ImportError, or a broken build raising at import
            return (
                False,
                f"xformers is not importable ({type(e).__name__}: {e}); install the 'xformers' extra",
            )
        dev = torch.device(device)
        if dev.type != "cuda":
            return False, f"xformers kernels need a CUDA device, got {dev.type}"
        if not torch.cuda.is_available():
            return False, "CUDA is not available"
        return True, ""

    @property
    def ops(self) -> SimpleNamespace:
        if self._ops is None:
            try:
                self._ops = load_xformers_ops()
            except Exception as e:
                raise RuntimeError(
                    f"the xformers backend needs xFormers with CUDA ({type(e).__name__}: {e}); "
                    "use attention_backend='blocksparse' or 'flex' instead"
                ) from e
        return self._ops

    @staticmethod
    def supports(component: AttentionPattern, layer: int = 0, num_heads: int | None = None) -> bool:
        """True if every head group of ``layer`` maps to a single exact xFormers call."""
        heads = component.num_heads if num_heads is None else num_heads
        try:
            groups = head_groups(component, layer, heads)
        except ValueError:
            return False
        return all(single_part_kind(parts) is not None for _, parts in groups)

    def _call(self, kind: str, length: int, q: Tensor, k: Tensor, v: Tensor, scale: float | None) -> Tensor:
        """One group: ``(B, Hg, T, D)`` in, ``(B, Hg, T, Dv)`` out."""
        B, Hg, T, _ = q.shape
        ops = self.ops
        if kind == "empty":
            return q.new_zeros((B, Hg, T, v.shape[-1]))
        if kind in ("causal", "window"):
            bias = (
                ops.LowerTriangularMask()
                if kind == "causal"
                else ops.LowerTriangularFromBottomRightLocalAttentionMask(length)
            )
            x = [t.transpose(1, 2) for t in (q, k, v)]  # (B, T, Hg, D)
            return ops.memory_efficient_attention(*x, attn_bias=bias, scale=scale).transpose(1, 2)
        ell = length
        t_pad = -(-T // ell) * ell
        m = t_pad // ell
        out = []
        for t in (q, k, v):
            t = torch.nn.functional.pad(t, (0, 0, 0, t_pad - T))  # future positions: causality hides them
            E = t.shape[-1]
            if kind == "chunks":  # (B, Hg, m, l, E) -> (B m, l, Hg, E)
                t = t.reshape(B, Hg, m, ell, E).permute(0, 2, 3, 1, 4).reshape(B * m, ell, Hg, E)
            else:  # residue: (B, Hg, m, l, E) -> (B l, m, Hg, E)
                t = t.reshape(B, Hg, m, ell, E).permute(0, 3, 2, 1, 4).reshape(B * ell, m, Hg, E)
            out.append(t)
        y = ops.memory_efficient_attention(*out, attn_bias=ops.LowerTriangularMask(), scale=scale)
        Ev = y.shape[-1]
        if kind == "chunks":
            y = y.reshape(B, m, ell, Hg, Ev).permute(0, 3, 1, 2, 4)
        else:
            y = y.reshape(B, ell, m, Hg, Ev).permute(0, 3, 2, 1, 4)
        return y.reshape(B, Hg, t_pad, Ev)[:, :, :T]

    def attend(self, q, k, v, component, layer=0, scale=None):
        check_qkv(q, k, v)
        B, H, T, _ = q.shape
        component.validate_length(T)
        groups = head_groups(component, layer, H)
        kinds = [single_part_kind(parts) for _, parts in groups]
        if any(kd is None for kd in kinds):
            raise ValueError(
                f"the xformers backend has no exact attention bias for pattern {component.name!r} "
                f"({component.config}) at layer {layer}: it serves heads that use a single causal, window, "
                "same-block or every-l-th part; use attention_backend='blocksparse' or 'flex' for this pattern"
            )
        if len(groups) == 1:
            kind, length = kinds[0]
            return self._call(kind, length, q, k, v, scale)
        outs = []
        index = []
        for (heads, _), (kind, length) in zip(groups, kinds):
            sel = torch.tensor(heads, device=q.device)
            outs.append(self._call(kind, length, q[:, sel], k[:, sel], v[:, sel], scale))
            index.extend(heads)
        order = torch.argsort(torch.tensor(index, device=q.device))
        return torch.cat(outs, dim=1)[:, order]  # (B, H, T, Dv)


register_backend(XFormersBackend)
