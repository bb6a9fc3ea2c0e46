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

        The two scalings ride on the matmuls (``addmm``'s ``alpha``/``beta``): ``u = a fc1(x)`` comes out
        of the first one and ``1/a`` goes into the second, leaving one fused SiLU pass forward and
        one backward over the hidden activations (the same function and gradients as
        ``fc2(quick_gelu(fc1(x)))``, in fewer passes over memory).
        """
        a = GELU_SCALE
        x2 = x.reshape(-1, x.shape[-1])  # (B T, d)
        u = torch.addmm(self.fc1.bias, x2, self.fc1.weight.t(), beta=a, alpha=a)  # a (W_1 x + b_1): (B T, hidden)
        y = torch.addmm(self.fc2.bias, F.silu(u), self.fc2.weight.t(), alpha=1.0 / a)  # (B T, d)
        return y.view(*x.shape[:-1], y.shape[-1])  # (B, T, d)

    def extra_repr(self) -> str:
        return "activation=x*sigmoid(1.702x)"
