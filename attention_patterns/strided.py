"""Strided attention (Child et al. 2019, §4.2, Figure 3b).

With stride ``l`` close to ``sqrt(n)``, one head attends to the previous ``l`` positions and the
other to every ``l``-th position, so every position reaches every earlier one in two steps::

    A1_i = {j : i - l < j <= i}            (local)
    A2_i = {j : (i - j) mod l = 0, j <= i} (strided)

Natural for data with periodic structure such as images (``l`` = the row width). Both parts are
defined by differences ``i - j`` only, so any ``n`` works: ``n`` need not be a multiple of ``l``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import check_positive
from .parts import EveryLth, Window
from .registry import register_attention
from .two_part import TwoPartPattern


@dataclass
class StridedConfig:
    """Strided pattern; ``mode`` says how the two parts map to heads and layers (§5.1)."""

    name: str = "strided"
    stride: int = 128  # l: local window length and step of the strided part
    mode: str = "split"  # split (head h uses part h mod 2) | merged (union) | interleaved (layer k: part k mod 2)
    num_heads: int | None = None  # set by the model


@register_attention("strided", StridedConfig)
class Strided(TwoPartPattern):
    """Strided sparse attention, paper §4.2 (``A1`` local window ``l``, ``A2`` every ``l``-th position)."""

    def validate(self):
        super().validate()
        check_positive("stride", self.config.stride)

    def parts(self):
        ell = self.config.stride
        return [Window(ell), EveryLth(ell)]
