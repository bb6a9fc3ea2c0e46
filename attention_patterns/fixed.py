"""Fixed attention (Child et al. 2019, §4.2, Figure 3c).

Specific cells summarise previous positions and propagate that information to all future cells::

    A1_i = {j : floor(j / l) = floor(i / l)}          (same block of length l)
    A2_i = {j : j mod l in {l - c, ..., l - 1}}       (the last c "summary" positions of each block)

with ``c`` in ``{8, 16, 32}`` for ``l`` in ``{128, 256}`` in the paper. It suits data without
periodic structure, such as text. The paper also found that letting *different heads* attend to
*distinct* sub-blocks of length ``c`` within each block works better than all heads using the same
one: ``num_different_global_patterns = G`` (DeepSpeed's name) gives head ``h`` the summary columns
``j mod l in [l - (g + 1) c, l - g c)`` with ``g = h mod G`` (in ``split`` mode, where only every
other head uses ``A2``, ``g = (h // 2) mod G``). ``G = 1`` is the plain pattern.

Any ``n`` works: the last block may be shorter than ``l`` (ragged), its summary columns simply do not
exist yet. Queries before the first summary column (``i < l - c``) have no key in ``A2``: a head
that uses only ``A2`` gives them a zero output.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import check_positive
from .parts import SameBlock, SummaryColumns
from .registry import register_attention
from .two_part import TwoPartPattern


@dataclass
class FixedConfig:
    """Fixed pattern; ``mode`` says how the two parts map to heads and layers (§5.1)."""

    name: str = "fixed"
    stride: int = 128  # l: block length
    c: int = 16  # number of summary positions at the end of each block
    num_different_global_patterns: int = 1  # G: heads use G distinct summary sub-blocks (G * c <= l)
    mode: str = "split"  # split | merged | interleaved
    num_heads: int | None = None  # set by the model


@register_attention("fixed", FixedConfig)
class Fixed(TwoPartPattern):
    """Fixed sparse attention, paper §4.2 (``A1`` own block, ``A2`` summary columns)."""

    def validate(self):
        super().validate()
        cfg = self.config
        check_positive("stride", cfg.stride)
        check_positive("c", cfg.c)
        check_positive("num_different_global_patterns", cfg.num_different_global_patterns)
        if cfg.c > cfg.stride:
            raise ValueError(f"c must be <= stride ({cfg.stride}), got c={cfg.c}")
        if cfg.num_different_global_patterns * cfg.c > cfg.stride:
            raise ValueError(
                f"num_different_global_patterns * c must be <= stride ({cfg.stride}), got "
                f"num_different_global_patterns={cfg.num_different_global_patterns} with c={cfg.c}"
            )

    def parts(self):
        cfg = self.config
        ell, c = cfg.stride, cfg.c
        summaries = [SummaryColumns(ell, ell - (g + 1) * c, c) for g in range(cfg.num_different_global_patterns)]
        return [SameBlock(ell), *summaries]

    def second_part_index(self, head):
        g = self.config.num_different_global_patterns
        return ((head // 2) if self.config.mode == "split" else head) % g
