"""How a two-part factorised pattern is used by a multi-head model (paper §5.1).

The paper gives three ways to integrate the sets ``A^(1)`` and ``A^(2)`` of a factorised pattern:

* ``interleaved`` - one part per residual block: layer ``k`` uses part ``k mod 2`` (every head);
* ``merged`` - every head attends to the union ``A^(1) ∪ A^(2)``;
* ``split`` - multi-head attention where head ``h`` uses part ``h mod 2`` (any number of heads,
  so with 4 heads, heads 0 and 2 use ``A^(1)`` and heads 1 and 3 use ``A^(2)``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import AttentionPattern, check_choice

MODES = ("merged", "split", "interleaved")


class TwoPartPattern(AttentionPattern):
    """A pattern made of a first part (index 0) and second parts (indices 1..G).

    Subclasses return the parts as ``[A1, A2_0, ..., A2_{G-1}]`` and implement
    :meth:`second_part_index` to choose which ``A2`` variant a head uses (``G = 1`` for all
    patterns except ``fixed`` with distinct summary sub-blocks per head).
    """

    def validate(self) -> None:
        super().validate()
        check_choice("mode", self.config.mode, MODES)
        heads = self.config.num_heads
        if self.config.mode == "split" and heads is not None and heads < 2:
            raise ValueError(
                f"mode='split' gives head h the part h mod 2 and needs num_heads >= 2, got num_heads={heads}; "
                "use mode='merged' or 'interleaved' with a single head"
            )

    @property
    def num_heads(self) -> int:
        """The configured head count; when unset, the fewest heads that show every part."""
        if self.config.num_heads is not None:
            return int(self.config.num_heads)
        variants = getattr(self.config, "num_different_global_patterns", 1)
        return 2 * variants if self.config.mode == "split" else variants

    def second_part_index(self, head: int) -> int:
        return 0

    @property
    def num_layers_period(self) -> int:
        return 2 if self.config.mode == "interleaved" else 1

    def members(self, layer: int) -> Tensor:
        heads = self.num_heads
        table = torch.zeros((heads, len(self.parts())), dtype=torch.bool)
        mode = self.config.mode
        for h in range(heads):
            if mode == "merged":
                uses = (True, True)
            elif mode == "split":
                uses = (h % 2 == 0, h % 2 == 1)
            else:  # interleaved
                uses = (layer % 2 == 0, layer % 2 == 1)
            table[h, 0] = uses[0]
            if uses[1]:
                table[h, 1 + self.second_part_index(h)] = True
        return table
