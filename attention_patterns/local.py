"""Local (sliding-window) causal attention: the previous ``window`` positions (paper §4.2, A^(1) of strided)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import AttentionPattern, check_positive
from .parts import Window
from .registry import register_attention


@dataclass
class LocalConfig:
    """``A_i = {j : i - window < j <= i}``."""

    name: str = "local"
    window: int = 128  # number of keys per query, itself included
    num_heads: int | None = None  # set by the model


@register_attention("local", LocalConfig)
class Local(AttentionPattern):
    """Sliding-window attention (Child et al. 2019, §4.2: the first head of the strided pattern).

    Works for any ``n``; the first ``window - 1`` queries simply see fewer keys.
    """

    def validate(self):
        super().validate()
        check_positive("window", self.config.window)

    def parts(self):
        return [Window(self.config.window)]

    def members(self, layer):
        return torch.ones((self.num_heads, 1), dtype=torch.bool)
