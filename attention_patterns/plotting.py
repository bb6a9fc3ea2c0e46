"""Pictures of attention patterns in the spirit of Figure 3 of Child et al. 2019 (arXiv 1904.10509).

:func:`plot` draws, for each distinct head of a layer (heads with identical masks are drawn once):

* top row - the ``n x n`` connectivity matrix (query ``i`` down, key ``j`` across), one colour per
  head; for long sequences the block layout is drawn instead, so no ``n x n`` tensor is formed;
* bottom row (image data) - the 2-D grid of positions with the pixels that output ``query`` attends
  to, in the head's colour, and ``query`` itself in black (the paper's Figure 3 top row).

When heads differ, a last column overlays all heads, blending the colours where they overlap.
Figures are built on matplotlib's Agg canvas (no display, no pyplot state), ready for ``savefig``.
"""

from __future__ import annotations

import dataclasses
import math
import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from .base import AttentionPattern
from .registry import build_attention

__all__ = ["plot", "HEAD_COLORS", "QUERY_COLOR"]

#: one colour per distinct head (cycled); light-on-white like the paper's figure
HEAD_COLORS = ("#4c8fd6", "#e6862e", "#3fa34d", "#c94c4c", "#8c6bc8", "#8c5a44", "#d66fb5", "#7f7f7f")
QUERY_COLOR = "#111111"


def _image_shape(n: int, image_shape: Sequence[int] | None) -> tuple[int, int, int] | None:
    """``(rows, cols, channels)`` of the grid, inferred as a square when ``n`` is one, else ``None``."""
    if image_shape is None:
        side = math.isqrt(n)
        return (side, side, 1) if side * side == n else None
    shape = tuple(image_shape)
    if len(shape) not in (2, 3) or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(
            f"image_shape must be (rows, cols) or (rows, cols, channels) of positive ints, got {image_shape!r}"
        )
    if math.prod(shape) != n:
        raise ValueError(f"image_shape {shape} has {math.prod(shape)} positions but n={n}")
    return (shape[0], shape[1], shape[2] if len(shape) == 3 else 1)


def _default_query(n: int, grid: tuple[int, int, int] | None) -> int:
    """The last channel of the middle pixel for images, else the middle position."""
    if grid is None:
        return n // 2
    rows, cols, ch = grid
    return ((rows // 2) * cols + cols // 2) * ch + ch - 1


def _head_groups(matrix: torch.Tensor, heads: int) -> list[list[int]]:
    """Heads grouped by identical ``matrix[h]`` (matrix has 1 or ``heads`` rows)."""
    if matrix.shape[0] == 1:
        return [list(range(heads))]
    groups: list[list[int]] = []
    for h in range(heads):
        for g in groups:
            if torch.equal(matrix[g[0]], matrix[h]):
                g.append(h)
                break
        else:
            groups.append([h])
    return groups


def _paint(masks: Sequence[np.ndarray], colors: Sequence[tuple[float, float, float]]) -> np.ndarray:
    """RGB image: white background, each mask in its colour, overlapping colours averaged."""
    shape = masks[0].shape
    total = np.zeros((*shape, 3))
    count = np.zeros(shape)
    for m, c in zip(masks, colors):
        total += m[..., None] * np.asarray(c)
        count += m
    rgb = np.ones((*shape, 3))
    hit = count > 0
    rgb[hit] = total[hit] / count[hit][:, None]
    return rgb


def _heads_label(heads: list[int]) -> str:
    if len(heads) == 1:
        return f"head {heads[0]}"
    shown = ", ".join(map(str, heads[:4]))
    return f"heads {shown}{', ...' if len(heads) > 4 else ''} ({len(heads)})"


def _config_label(component: AttentionPattern) -> str:
    cfg = component.config
    items = dataclasses.asdict(cfg).items() if dataclasses.is_dataclass(cfg) else ()
    return ", ".join(f"{k}={v}" for k, v in items if k not in ("name", "num_heads") and v is not None)


def plot(
    component: AttentionPattern | Any,
    n: int,
    layer: int = 0,
    image_shape: Sequence[int] | None = None,
    query: int | None = None,
    *,
    union: bool = False,
    max_matrix: int = 512,
    colors: Sequence[str] = HEAD_COLORS,
    panel_inches: float = 2.8,
    title: str | None = None,
) -> Figure:
    """Figure of the connectivity of ``component`` for sequences of length ``n`` (paper Figure 3 style).

    Args:
        component: an :class:`AttentionPattern`, or anything :func:`build_attention` accepts.
        n: sequence length.
        layer: layer index (matters for ``interleaved`` patterns, §5.1).
        image_shape: ``(rows, cols)`` or ``(rows, cols, channels)`` (channels interleaved, as in the
            byte order of RGB images) with product ``n``; inferred as a square when ``n`` is one.
            Without a grid, only the connectivity matrices are drawn.
        query: the output position whose attended inputs are shown on the grid (default: the middle
            pixel); its row is marked on the matrices.
        union: draw the union of all heads as a single head.
        max_matrix: above this length the top row shows the block layout with
            ``b = ceil(n / max_matrix)`` instead of the element mask.
        colors: colours of the distinct heads (cycled).
        panel_inches: size of one panel.
        title: figure title (default: pattern name and configuration).

    Returns:
        a :class:`matplotlib.figure.Figure` on an Agg canvas.
    """
    comp = component if isinstance(component, AttentionPattern) else build_attention(component)
    comp.validate_length(n)
    grid = _image_shape(n, image_shape)
    query = _default_query(n, grid) if query is None else query
    if isinstance(query, bool) or not isinstance(query, int) or not 0 <= query < n:
        raise ValueError(f"query must be a position in [0, {n}), got {query!r}")
    if max_matrix < 1:
        raise ValueError(f"max_matrix must be >= 1, got {max_matrix!r}")

    heads = comp.num_heads
    block = 1 if n <= max_matrix else -(-n // max_matrix)
    matrix = comp.mask(n, layer) if block == 1 else comp.layout(n, block, layer)  # (H', m, m)
    mod = comp.mask_mod(layer)
    keys = torch.arange(n)
    query_rows = torch.stack(
        [mod(torch.tensor(0), torch.tensor(h), torch.tensor(query), keys) for h in range(heads)]
    )  # (H, n)

    groups = [list(range(heads))] if union else _head_groups(matrix, heads)
    palette = [to_rgb(colors[g % len(colors)]) for g in range(len(groups))]
    group_matrix = [matrix[[min(h, matrix.shape[0] - 1) for h in g]].any(0).numpy() for g in groups]
    group_query = [query_rows[g].any(0).numpy() for g in groups]

    columns = [
        (f"{_heads_label(g)}" if not union else f"union of {heads} heads", [k]) for k, g in enumerate(groups)
    ]
    if len(groups) > 1:
        columns.append(("all heads", list(range(len(groups)))))
    n_rows = 2 if grid is not None else 1
    width = panel_inches * max(len(columns), 2)  # room for the title when a single head is drawn
    fig = Figure(figsize=(width, panel_inches * n_rows + 0.7), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, len(columns), squeeze=False)
    span = matrix.shape[-1] * block
    what = "element mask" if block == 1 else f"block layout, b={block}"
    for col, (label, members) in enumerate(columns):
        ax = axes[0, col]
        rgb = _paint([group_matrix[k] for k in members], [palette[k] for k in members])
        ax.imshow(
            rgb,
            interpolation="antialiased",
            interpolation_stage="rgba",
            extent=(-0.5, span - 0.5, span - 0.5, -0.5),
        )
        ax.axhline(query, color=QUERY_COLOR, linewidth=0.6, alpha=0.6)
        ax.set_xlim(-0.5, n - 0.5)
        ax.set_ylim(n - 0.5, -0.5)
        ax.set_title(label, fontsize=9)
        ax.tick_params(labelsize=7)
        if col == 0:
            ax.set_ylabel(f"query i ({what})", fontsize=8)
        ax.set_xlabel("key j", fontsize=8)
        if grid is not None:
            rows, cols, ch = grid
            ax = axes[1, col]
            pixels = [group_query[k].reshape(rows, cols, ch).any(-1) for k in members]
            rgb = _paint(pixels, [palette[k] for k in members])
            rgb[query // ch // cols, query // ch % cols] = to_rgb(QUERY_COLOR)
            ax.imshow(rgb, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            attended = int(np.logical_or.reduce([group_query[k] for k in members]).sum())
            ax.set_title(f"output {query}: {attended} inputs", fontsize=8)
            if col == 0:
                ax.set_ylabel(f"{rows} x {cols}" + (f" x {ch}" if ch > 1 else ""), fontsize=8)
    heading = title if title is not None else f"{comp.name}({_config_label(comp)})  n={n}, layer {layer}"
    fig.suptitle(textwrap.fill(heading, width=int(11 * width)), fontsize=10)
    return fig
