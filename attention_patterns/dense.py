"""Dense causal attention: every position attends to all earlier positions (the paper's baseline, §3)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import AttentionPattern
from .parts import AllPast
from .registry import register_attention


@dataclass
class DenseConfig:
    """Full causal attention ``A_i = {j : j <= i}``."""

    name: str = "dense"
    num_heads: int | None = None  # set by the model; None = 1 when used on its own


@register_attention("dense", DenseConfig)
class Dense(AttentionPattern):
    """Full causal self-attention, ``O(n^2)`` (Child et al. 2019, §3 and §4.1 Figure 3a)."""

    def parts(self):
        return [AllPast()]

    def members(self, layer):
        return torch.ones((self.num_heads, 1), dtype=torch.bool)
