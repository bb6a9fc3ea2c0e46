"""BigBird block-sparse attention (Zaheer et al. 2020), causal form on a block grid.

Each query block ``P`` attends to

* a sliding window of ``window_blocks`` blocks: ``P - window_blocks < Q <= P``;
* ``global_blocks`` global blocks: the first blocks are attended by everyone and attend to every
  earlier block (``Q < g`` or ``P < g``);
* ``random_blocks`` random blocks drawn from the blocks outside the window and the global ones
  (``g <= Q <= P - window_blocks``), seeded and reproducible: the draw for block row ``P`` depends
  only on ``(seed, head, P)``, so it is the same for every sequence length and every device.

This is the block-sparse relative of the paper's factorised patterns (Child et al. 2019 §4 and §8
related work); DeepSpeed's ``BigBirdSparsityConfig`` is the reference for the parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import check_positive
from .block_grid import BlockGridPattern, random_blocks
from .registry import register_attention


@dataclass
class BigBirdConfig:
    """BigBird: window + global + random blocks."""

    name: str = "bigbird"
    block_size: int = 64  # positions per block
    window_blocks: int = 3  # causal sliding window, in blocks, own block included
    global_blocks: int = 1  # the first global_blocks blocks are global
    random_blocks: int = 1  # random key blocks per query block
    seed: int = 0  # seed of the random blocks
    different_layout_per_head: bool = False  # draw random blocks per head
    num_heads: int | None = None  # set by the model


@register_attention("bigbird", BigBirdConfig)
class BigBird(BlockGridPattern):
    """BigBird window + global + random block attention (causal; see module docstring)."""

    def validate(self):
        super().validate()
        cfg = self.config
        check_positive("window_blocks", cfg.window_blocks)
        check_positive("global_blocks", cfg.global_blocks, minimum=0)
        check_positive("random_blocks", cfg.random_blocks, minimum=0)
        check_positive("seed", cfg.seed, minimum=0)

    @property
    def per_head(self):
        return self.config.different_layout_per_head and self.config.random_blocks > 0

    def block_active(self, h, p, q):
        cfg = self.config
        g = cfg.global_blocks
        out = ((p - q) < cfg.window_blocks) | (q < g) | (p < g)
        if cfg.random_blocks:
            head = h if cfg.different_layout_per_head else torch.zeros_like(h)
            out = out | random_blocks(cfg.seed, head, p, q, cfg.random_blocks, g, p - cfg.window_blocks)
        return out
