"""Axial (row and column) attention for data laid out as ``rows x width`` (e.g. images).

The paper's strided pattern with ``l`` equal to the row width attends to the previous ``l``
positions and to the same column (§4.1: "for images, the row and column"). Axial attention makes
the row part exact::

    A1_i = {j : floor(j / width) = floor(i / width)}   (same row, up to i)
    A2_i = {j : (i - j) mod width = 0}                 (same column, above i)

For images with interleaved channels use ``width = cols * channels`` (CIFAR-10: 96). ``height``
is optional: when given, sequences must have exactly ``height * width`` positions; when omitted any
``n`` works and the last row may be incomplete (ragged). ``mode`` works as for ``strided`` (§5.1).
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import check_positive
from .parts import EveryLth, SameBlock
from .registry import register_attention
from .two_part import TwoPartPattern


@dataclass
class AxialConfig:
    """Row attention + column attention on a ``height x width`` grid."""

    name: str = "axial"
    width: int = 32  # positions per row
    height: int | None = None  # rows; if set, n must equal height * width
    mode: str = "split"  # split (head h: row if h even, column if odd) | merged | interleaved
    num_heads: int | None = None  # set by the model


@register_attention("axial", AxialConfig)
class Axial(TwoPartPattern):
    """Row/column attention on a 2-D grid (Child et al. 2019 §4.1; Ho et al. 2019, axial attention)."""

    def validate(self):
        super().validate()
        check_positive("width", self.config.width)
        if self.config.height is not None:
            check_positive("height", self.config.height)

    def validate_length(self, n):
        super().validate_length(n)
        h, w = self.config.height, self.config.width
        if h is not None and n != h * w:
            raise ValueError(f"axial attention with height={h}, width={w} needs n = {h * w}, got n={n}")

    def parts(self):
        w = self.config.width
        return [SameBlock(w), EveryLth(w)]
