"""The ``blocksparse`` backend: exact sparse attention in pure PyTorch, forward and backward, any device.

Child et al. 2019 (§5.5) make factorised attention fast with kernels that compute only the
non-zero blocks of the attention matrix. This backend does the same with PyTorch operators:

1. heads are grouped by the parts of the pattern they use (§4.3: split heads use different parts,
   merged heads their union, interleaved layers alternate);
2. each group's attention set is split into disjoint *pieces* with an exact dense form
   (:mod:`.structured`: a band for local windows, causal attention among equal residues for the
   strided part, chunks for same-block parts, gathered columns for summaries), or, for any other
   pattern, into gathered key blocks of ``component.layout(n, block_size)`` with the element mask
   inside (:mod:`.gather`);
3. every piece returns its output and log-sum-exp; the pieces are merged exactly
   (:mod:`.tile_kernel`), and the backward pass recomputes each piece from the merged output and
   log-sum-exp (a custom ``autograd.Function``: only ``q, k, v``, the output and one float per row are
   kept, memory ``O(n)`` per head).

On CPU the tiles run through PyTorch's fused flash-attention kernels; elsewhere through a
matmul/softmax fallback. Rows with no allowed key give zero output and zero gradient.
Small bands and subsequences keep their softmax for the backward pass instead of recomputing it
(:func:`.tile_kernel.probs_forward`: a few batched matmuls and one fused softmax backward, no kernel
call overhead, no padding of half-size queries and keys; memory ``O(n w)`` per head, like the
activations around it). Options: ``block_size`` (16-128, the generic gather's block), ``structured``
(False forces the generic gather for every pattern), ``kernel`` (``auto``, ``flash``, ``math``),
``save_probs`` (``"auto"``, default: keep the softmax when queries/keys and values have different
head dims, e.g. the paper's half-size QK (§6), and the piece's tiles hold at most
:data:`.tile_kernel.PROBS_MAX_ELEMENTS` elements per head; True: for every piece that can; False:
never) and ``serial_glue``
(``"auto"``, default: when the CPU is shared with other processes, the many short operations of a
plan run on one thread and only large tile calls use all threads; True/False force it, see
:func:`.tile_kernel.serial_glue` and :func:`.tile_kernel.cpu_contended`) and ``cache_size`` (plans
kept, least recently used evicted: default :data:`.lru.DEFAULT_SIZE`; memory stays bounded however
many sequence lengths are served).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..base import AttentionPattern
from . import register_backend
from .base import AttentionBackend, check_qkv
from .gather import GatherPiece
from .lru import DEFAULT_SIZE, BoundedCache
from .pieces import CausalPiece, Piece
from .plan import AttentionPlan, HeadGroup
from .structured import head_groups, structured_pieces
from .tile_kernel import KERNELS, PROBS_MAX_ELEMENTS, resolve_kernel, serial_glue, use_serial_glue

BLOCK_SIZE_RANGE = (16, 128)
#: causal subsequences up to this length keep their softmax by default (``save_probs="auto"``)
SHORT_SUBSEQUENCE = 64


def device_usable(device: torch.device | str) -> tuple[bool, str]:
    """``(True, '')`` if tensors can be created on ``device``, else ``(False, reason)``."""
    try:
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError) as e:
        return False, f"device {device} is not usable here ({e})"
    return True, ""


def _pad_last(x: Tensor, D: int) -> Tensor:
    return x if x.shape[-1] == D else F.pad(x, (0, D - x.shape[-1]))


class _SparseAttention(torch.autograd.Function):
    """Forward through the plan; backward recomputes each piece from the merged output and lse.

    With ``pad_heads`` the q/k and v head dims are zero-padded to the larger one inside the function
    (the fused CPU kernel needs equal head dims; zero columns change no dot product), the padded
    tensors are kept for the backward pass and the gradients are returned as views of the unpadded
    columns.
    """

    @staticmethod
    def forward(ctx, q, k, v, plan: AttentionPlan, scale: float, kernel: str, serial, pad_heads: bool):
        keep = any(ctx.needs_input_grad[:3])
        Dqk, Dv = q.shape[-1], v.shape[-1]
        with serial_glue(use_serial_glue(serial, q.device)):
            if pad_heads and Dqk != Dv:
                D = max(Dqk, Dv)
                q, k, v = _pad_last(q, D), _pad_last(k, D), _pad_last(v, D)
            out, lse, states = plan.forward(q, k, v, scale, kernel, keep)
        # the pieces' states (kept softmaxes, gathered columns) are saved like q, k, v: autograd frees
        # them after the backward pass, or keeps them for another one with retain_graph=True
        template, kept = _flatten(states)
        ctx.save_for_backward(q, k, v, out, lse, *kept)
        ctx.plan, ctx.scale, ctx.kernel, ctx.template, ctx.serial = plan, scale, kernel, template, serial
        ctx.dims = (Dqk, Dv)
        return out[..., :Dv]

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        q, k, v, out, lse, *kept = ctx.saved_tensors
        states = _unflatten(ctx.template, kept)
        Dqk, Dv = ctx.dims
        with serial_glue(use_serial_glue(ctx.serial, q.device)):
            dout = _pad_last(dout, out.shape[-1])
            if not ctx.plan.all_probs and dout.stride(-1) != 1:  # the fused kernels want dense rows
                dout = dout.contiguous()
            dq, dk, dv = ctx.plan.backward(states, dout, q, k, v, out, lse, ctx.scale, ctx.kernel)
        return dq[..., :Dqk], dk[..., :Dqk], dv[..., :Dv], None, None, None, None, None


def _flatten(tree: Any) -> tuple[Any, list[Tensor]]:
    """Nested lists/tuples with tensors -> (the same structure with tensors replaced by their index, tensors)."""
    tensors: list[Tensor] = []

    def walk(x):
        if isinstance(x, Tensor):
            tensors.append(x)
            return _Slot(len(tensors) - 1)
        if isinstance(x, (list, tuple)):
            return type(x)(walk(y) for y in x)
        return x

    return walk(tree), tensors


def _unflatten(template: Any, tensors: list[Tensor]) -> Any:
    if isinstance(template, _Slot):
        return tensors[template.index]
    if isinstance(template, (list, tuple)):
        return type(template)(_unflatten(y, tensors) for y in template)
    return template


class _Slot:
    """Where a saved tensor goes back into a pieces' state (see :func:`_flatten`)."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


@register_backend
class BlockSparseBackend(AttentionBackend):
    """Exact block-sparse attention in PyTorch (structured pieces or generic block gather)."""

    name = "blocksparse"

    def __init__(
        self,
        block_size: int = 64,
        structured: bool = True,
        kernel: str = "auto",
        serial_glue: bool | str = "auto",
        save_probs: bool | str = "auto",
        cache_size: int = DEFAULT_SIZE,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        lo, hi = BLOCK_SIZE_RANGE
        if isinstance(block_size, bool) or not isinstance(block_size, int) or not lo <= block_size <= hi:
            raise ValueError(f"block_size must be an integer in [{lo}, {hi}], got {block_size!r}")
        if not isinstance(structured, bool):
            raise ValueError(f"structured must be True or False, got {structured!r}")
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {list(KERNELS)}, got {kernel!r}")
        if serial_glue not in (True, False, "auto"):
            raise ValueError(f"serial_glue must be True, False or 'auto', got {serial_glue!r}")
        if save_probs not in (True, False, "auto"):
            raise ValueError(f"save_probs must be True, False or 'auto', got {save_probs!r}")
        self.save_probs = save_probs
        self.block_size, self.structured, self.kernel, self.serial_glue = (
            block_size,
            structured,
            kernel,
            serial_glue,
        )
        self._plans = BoundedCache(cache_size)  # the last plans: bounded however many lengths are served

    @classmethod
    def availability(cls, device: torch.device | str = "cpu") -> tuple[bool, str]:
        return device_usable(device)

    def __repr__(self) -> str:
        return (
            f"BlockSparseBackend(block_size={self.block_size}, structured={self.structured}, "
            f"kernel={self.kernel!r}, save_probs={self.save_probs!r})"
        )

    def plan(
        self,
        component: AttentionPattern,
        n: int,
        layer: int,
        num_heads: int,
        device: torch.device,
        dtype: torch.dtype,
        unequal_dims: bool = False,
    ) -> AttentionPlan:
        """The cached plan for these arguments (built on first use); ``unequal_dims``: q/k and v head
        dims differ (half QK), which is when ``save_probs="auto"`` keeps small softmaxes."""
        key = (n, layer % component.num_layers_period, num_heads, str(device), dtype, unequal_dims)
        return self._plans.get(
            component,
            key,
            lambda: self._build_plan(component, n, layer, num_heads, torch.device(device), dtype, unequal_dims),
        )

    def _keeps_probs(self, piece: Piece, unequal_dims: bool) -> bool:
        """Whether a piece keeps its softmax (``save_probs``; see the module docstring)."""
        elements = piece.probs_elements()
        if elements is None or self.save_probs is False:
            return False
        if self.save_probs is True:
            return True
        # auto, measured on CPU (1 thread, CPU time): keeping P is 1.1-1.7x faster when the fused kernel
        # would need q and k zero-padded to the value head dim; with equal head dims it is 1.3x faster for
        # causal subsequences of <= 64 positions (the fused kernel's per-tile work dominates such short
        # tiles) and slower for bands and longer subsequences (0.8-1.0x)
        short = isinstance(piece, CausalPiece) and piece.subsequence_length <= SHORT_SUBSEQUENCE
        return (unequal_dims or short) and elements <= PROBS_MAX_ELEMENTS

    def _build_plan(self, component, n, layer, num_heads, device, dtype, unequal_dims=False) -> AttentionPlan:
        component.validate_length(n)
        if self.structured:
            groups = []
            for heads, parts in head_groups(component, layer, num_heads):
                pieces = structured_pieces(parts, n, device, dtype)
                if pieces is None:
                    break
                for piece in pieces:
                    piece.probs = self._keeps_probs(piece, unequal_dims)
                groups.append(HeadGroup(heads, pieces, num_heads, device))
            else:
                return AttentionPlan(groups, num_heads, structured=True)
        gather = GatherPiece(component, n, layer, num_heads, self.block_size, device, dtype)
        return AttentionPlan([HeadGroup(None, [gather], num_heads, device)], num_heads, structured=False)

    def attend(self, q, k, v, component, layer=0, scale=None):
        check_qkv(q, k, v)
        B, H, T, Dqk = q.shape
        Dv = v.shape[-1]
        scale = Dqk**-0.5 if scale is None else float(scale)
        plan = self.plan(component, T, layer, H, q.device, q.dtype, unequal_dims=Dqk != Dv)
        # the fused CPU kernel needs equal q/v head dims; pieces that keep their softmax do not
        pad = Dqk != Dv and self.kernel != "math" and q.device.type == "cpu" and not plan.all_probs
        kernel = resolve_kernel(self.kernel, q, q if pad or plan.all_probs else v)
        return _SparseAttention.apply(q, k, v, plan, scale, kernel, self.serial_glue, pad)  # (B, H, T, Dv)
