"""Position-wise layers of the Sparse Transformer block (Child et al. 2019, §5.2 and §6).

* :class:`QuickGELU` - the paper's GELU approximation ``f(x) = x * sigmoid(1.702 x)`` (§5.2, as in
  Radford et al. 2018);
* :class:`FeedForward` - ``ff(x) = W_2 f(W_1 x + b_1) + b_2`` with hidden width ``4d``, or ``2d`` for
  the "half-size" feed-forward network (§6, §7.1).

No dropout here: the paper applies dropout only at the end of each residual branch (§5.4), which
the block in :mod:`zoo.model` does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GELU_SCALE = 1.702


class _QuickGELUFn(torch.autograd.Function):
    """``x sigmoid(a x) = silu(a x) / a`` with ``a = 1.702``: its derivative is ``silu'(a x)``.

    Written with PyTorch's fused SiLU kernels: 3 passes over the tensor forward and 2 backward (plain
    autograd of ``x * sigmoid(a x)`` takes 3 and 5), and only ``x`` is kept for the backward pass.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return F.silu(x * GELU_SCALE).mul_(1.0 / GELU_SCALE)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return torch.ops.aten.silu_backward(grad, x * GELU_SCALE)


def quick_gelu(x: Tensor) -> Tensor:
    """``x * sigmoid(1.702 x)``: the sigmoid approximation of GELU used by the paper (§5.2)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _QuickGELUFn.apply(x)
    return F.silu(x * GELU_SCALE).mul_(1.0 / GELU_SCALE)


class QuickGELU(nn.Module):
    """Module form of :func:`quick_gelu` (so that it shows up when the model is printed)."""

    def forward(self, x: Tensor) -> Tensor:
        return quick_gelu(x)


class _FeedForwardFn(torch.autograd.Function):
    """``y = W_2 f(W_1 x + b_1) + b_2`` with ``f(h) = silu(a h) / a`` and a hand-written backward.

    With ``u = a (W_1 x + b_1)`` and ``s = silu(u)``: ``y = (W_2 / a) s + b_2``. Backward, with
    ``g_s = g_y (W_2 / a)`` and ``g_u = silu'(u) g_s``: ``g_x = g_u (a W_1)``, ``g_{W_1} = a g_u^T x``,
    ``g_{b_1} = a sum(g_u)``, ``g_{W_2} = g_y^T s / a``, ``g_{b_2} = sum(g_y)``. Every scaling lands on a
    weight-sized tensor, so the only passes over the ``(N, hidden)`` activations are one SiLU forward
    and one SiLU backward (plain autograd of ``addmm`` with ``alpha`` adds two more).
    """

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2):  # x: (N, d), w1: (hidden, d), w2: (d, hidden)
        a = GELU_SCALE
        u = torch.addmm(b1, x, w1.t(), beta=a, alpha=a)  # (N, hidden)
        s = F.silu(u)  # (N, hidden)
        ctx.save_for_backward(x, w1, w2, u, s)
        return torch.addmm(b2, s, w2.t(), alpha=1.0 / a)  # (N, d)

    @staticmethod
    def backward(ctx, gy):  # gy: (N, d)
        x, w1, w2, u, s = ctx.saved_tensors
        a = GELU_SCALE
        need = ctx.needs_input_grad
        gy = gy.contiguous()
        gu = torch.ops.aten.silu_backward(torch.mm(gy, w2 * (1.0 / a)), u)  # (N, hidden)
        gx = torch.mm(gu, w1 * a) if need[0] else None  # (N, d)
        gw1 = torch.mm(gu.t(), x).mul_(a) if need[1] else None
        gb1 = gu.sum(0).mul_(a) if need[2] else None
        gw2 = torch.mm(gy.t(), s).mul_(1.0 / a) if need[3] else None
        gb2 = gy.sum(0) if need[4] else None
        return gx, gw1, gb1, gw2, gb2


class FeedForward(nn.Module):
    """Position-wise feed-forward network ``W_2 f(W_1 x + b_1) + b_2`` (§5.2).

    ``hidden`` is ``4 d`` by default and ``2 d`` for the paper's "half-size" network (§6). ``fc2`` is
    the residual output projection whose initialisation the model scales by ``1/sqrt(2N)`` (§5.2).
    """

    def __init__(self, d: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d, hidden)  # W_1, b_1
        self.fc2 = nn.Linear(hidden, d)  # W_2, b_2 (residual output)
        self.fc2.is_residual_output = True  # read by SparseTransformer.reset_parameters

    def forward(self, x: Tensor) -> Tensor:  # x: (B, T, d)
        """``fc2(f(fc1(x)))`` with ``f = x sigmoid(a x) = silu(a x) / a``, ``a = 1.702``.

        The scalings by ``a`` and ``1/a`` ride on the matmuls, leaving one fused SiLU pass forward and
        one backward over the hidden activations: the same function and gradients as
        ``fc2(quick_gelu(fc1(x)))`` in fewer passes over memory (:class:`_FeedForwardFn`; under
        autocast, ``addmm`` with ``alpha``/``beta`` and autograd).
        """
        x2 = x.reshape(-1, x.shape[-1])  # (B T, d)
        w1, b1, w2, b2 = self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias
        if torch.is_autocast_enabled(x.device.type) or not torch.is_grad_enabled():
            a = GELU_SCALE
            u = torch.addmm(b1, x2, w1.t(), beta=a, alpha=a)  # a (W_1 x + b_1): (B T, hidden)
            y = torch.addmm(b2, F.silu(u), w2.t(), alpha=1.0 / a)  # (B T, d)
        else:
            y = _FeedForwardFn.apply(x2, w1, b1, w2, b2)
        return y.view(*x.shape[:-1], y.shape[-1])  # (B, T, d)

    def extra_repr(self) -> str:
        return "activation=x*sigmoid(1.702x)"
