"""Residual dropout: ``x + dropout(branch)`` in one pass (Child et al. 2019, §5.4).

The paper applies dropout only at the end of each residual branch, so every use in the model has
the form ``x + dropout(f(x))``. :class:`ResidualDropout` computes exactly that, and on the CPU it
does it faster than ``x + F.dropout(branch)``:

* **the mask.** PyTorch's CPU dropout draws one Bernoulli variable per element (about 8 ns each);
  here one 64-bit random word gives four 16-bit uniforms (its ``int16`` chunks; eight 8-bit ones
  when ``p`` is a multiple of ``2^-8``), and an element is kept when its chunk, read as an integer
  in ``[0, 2^16)``, is at least ``round(p * 2^16)``. The keep probability is therefore
  ``q = 1 - round(p * 2^16) / 2^16`` (``p`` rounded to a multiple of ``2^-16``, e.g. exactly 0.75
  for ``p = 0.25``), and kept values are scaled by ``1 / q``, so the expectation is exactly
  ``x + branch``, as in ``F.dropout``.
* **the arithmetic.** The scaled mask is built once (``{0, 1/q}`` as floats) and used by one
  ``addcmul`` forward and one multiply backward, instead of a mask, a division, a multiply and an
  add forward.

The random words come from the tensor's device generator (the global CPU generator by default), so
``torch.manual_seed`` reproduces the masks, and ``torch.utils.checkpoint`` (which restores the RNG
state before it recomputes a block) redraws the same mask. On other devices, where PyTorch's own
dropout kernel is already fused, the module falls back to ``x + F.dropout(branch)``.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LEVELS = 1 << 16
# random_(from, to) draws from + random64() % (to - from): with this range every bit is uniform up to
# a bias of 2^-64 (2^64 draws fold onto 2^64 - 1 values). Plain random_() leaves bit 63 at 0.
_WORD_FROM, _WORD_TO = -(1 << 63), (1 << 63) - 1


def keep_probability(p: float) -> float:
    """The exact keep probability of :func:`dropout_mask`: ``1 - round(p * 2^16) / 2^16``."""
    return 1.0 - round(p * _LEVELS) / _LEVELS


def dropout_mask(shape: torch.Size | tuple[int, ...], p: float, like: Tensor) -> Tensor:
    """Scaled keep mask with values in ``{0, 1/q}`` (``q`` = :func:`keep_probability`), shaped ``shape``,
    with ``like``'s dtype and device: the ``noise`` that ``F.dropout`` multiplies by."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p!r}")
    numel = 1
    for size in shape:
        numel *= size
    # 8-bit chunks when p is a multiple of 2^-8 (e.g. 0.25, 0.5): half the random words, same mask law
    bits, chunk_dtype = (8, torch.int8) if (p * 256).is_integer() else (16, torch.int16)
    words = torch.empty(-(-numel * bits // 64), dtype=torch.int64, device=like.device)
    words.random_(_WORD_FROM, _WORD_TO)
    chunks = words.view(chunk_dtype)[:numel]  # (numel,) uniform `bits`-bit values
    # a signed chunk is a uniform integer in [-2^(bits-1), 2^(bits-1)): keep it when
    # >= -2^(bits-1) + round(p 2^bits), i.e. with probability 1 - round(p 2^bits) / 2^bits
    threshold = -(1 << (bits - 1)) + round(p * (1 << bits))
    keep = chunks >= threshold
    return keep.to(like.dtype).mul_(1.0 / keep_probability(p)).view(shape)


class _ResidualDropoutFn(torch.autograd.Function):
    """``residual + branch * mask`` with ``mask`` from :func:`dropout_mask` (saved for backward)."""

    @staticmethod
    def forward(ctx, residual: Tensor, branch: Tensor, p: float) -> Tensor:
        mask = dropout_mask(branch.shape, p, branch)
        ctx.save_for_backward(mask)
        return torch.addcmul(residual, branch, mask)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (mask,) = ctx.saved_tensors
        return grad, grad * mask, None


_FAST_MASK_OK = sys.byteorder == "little"  # the int16 view of the random words assumes it


class ResidualDropout(nn.Dropout):
    """``residual + dropout(branch)`` (§5.4): dropout at the end of a residual branch, fused with the add.

    A :class:`torch.nn.Dropout` (same ``p``, same printing), called with two tensors. In eval mode or
    with ``p = 0`` it is ``residual + branch``. See the module docstring for the CPU fast path.
    """

    def forward(self, residual: Tensor, branch: Tensor) -> Tensor:  # type: ignore[override]
        if not self.training or self.p == 0.0:
            return residual + branch
        fast = (
            _FAST_MASK_OK
            and branch.device.type == "cpu"
            and branch.shape == residual.shape
            and branch.dtype == residual.dtype
        )
        if fast:
            return _ResidualDropoutFn.apply(residual, branch, self.p)
        return residual + F.dropout(branch, self.p, training=True)
