"""Bits per dim, the Sparse Transformer's metric (Child et al. 2019, Tables 1-2, bits per byte/dim).

The model's loss is the mean negative log-likelihood in nats of each byte given the bytes before it;
bits per dim is that mean divided by ``ln 2`` (a dim being one byte of the sequence: a sub-pixel of an
image, a character of text, a sample of audio).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

LN2 = math.log(2.0)


def bits_per_dim(nats: float | Tensor) -> float | Tensor:
    """Convert a mean negative log-likelihood per dim from nats to bits: ``nats / ln 2``."""
    return nats / LN2


def nll_nats(logits: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood in nats of ``targets`` (B, T) under ``logits`` (B, T, V).

    ``reduction`` is ``mean`` (per dim), ``sum`` or ``none`` ((B, T)); computed in float32 at least so
    that low-precision logits still give an accurate metric.
    """
    if logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} do not match targets {tuple(targets.shape)}; "
            "expected (B, T, V) and (B, T)"
        )
    flat = logits.reshape(-1, logits.shape[-1])  # (B*T, V)
    if flat.dtype in (torch.float16, torch.bfloat16):
        flat = flat.float()
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    loss = F.cross_entropy(flat, targets.reshape(-1), reduction=reduction)
    return loss.view(targets.shape) if reduction == "none" else loss


class BitsPerDimMeter:
    """Accumulates summed nats and counted dims over batches; :attr:`bits_per_dim` is their ratio.

    Sums are kept as Python floats (float64), so the order of batches does not matter to float32
    precision and a whole test split is averaged exactly per dim, not per batch.
    """

    def __init__(self) -> None:
        self.nats = 0.0
        self.dims = 0

    def update(self, nats_sum: float | Tensor, dims: int) -> None:
        self.nats += float(nats_sum)
        self.dims += int(dims)

    @property
    def nats_per_dim(self) -> float:
        if self.dims == 0:
            raise ValueError("BitsPerDimMeter has no dims yet: update() it before reading")
        return self.nats / self.dims

    @property
    def bits_per_dim(self) -> float:
        return float(bits_per_dim(self.nats_per_dim))
