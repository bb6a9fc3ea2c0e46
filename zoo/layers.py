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
from torch import Tensor, nn


def quick_gelu(x: Tensor) -> Tensor:
    """``x * sigmoid(1.702 x)``: the sigmoid approximation of GELU used by the paper (§5.2)."""
    return x * torch.sigmoid(1.702 * x)


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
        self.act = QuickGELU()
        self.fc2 = nn.Linear(hidden, d)  # W_2, b_2 (residual output)
        self.fc2.is_residual_output = True  # read by SparseTransformer.reset_parameters

    def forward(self, x: Tensor) -> Tensor:  # x: (B, T, d)
        return self.fc2(self.act(self.fc1(x)))  # (B, T, hidden) -> (B, T, d)
