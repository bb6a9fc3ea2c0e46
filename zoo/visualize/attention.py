"""Attention maps of a trained model (Child et al. 2019, Figure 2): where each head looks while it
predicts one byte.

:func:`attention_maps` runs the model's own forward pass on one example. During that pass every
:class:`zoo.attention.CausalSelfAttention` block's backend is wrapped by a recorder that, after the
backend's real ``attend``, asks the same backend for the probabilities of the chosen query rows
(:meth:`attention_patterns.backends.AttentionBackend.attention_probs`) with the very ``q`` and ``k``
the block computed. The recorder also checks ``probs @ v`` against the backend's output rows
(:attr:`AttentionMaps.max_output_error`), so the pictures show exactly what the model computed.

:func:`plot_attention_grid` draws a layer x head grid for one query, :func:`plot_attention_queries`
one head across queries (every layer). On images the weights are drawn on the 2-D pixel grid (the
weights of a pixel's channels summed); 1-D data (text, audio) is drawn as a strip of the positions
before the query, with the characters shown for text. Positions the pattern forbids (the future
included) are black, the query is outlined in red, and the colour scale is a square root
(``PowerNorm(0.5)``) so that small weights stay visible. Position ``j`` holds the model's state at
``j``, which has read the bytes before ``j`` (the input is shifted right by one, §5.3).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor, nn

from ..attention import CausalSelfAttention
from .layout import (
    Layout,
    as_long,
    check_positions,
    draw_glyphs,
    eval_mode,
    example_shape,
    is_text,
    new_figure,
    strip,
)

log = logging.getLogger(__name__)

#: colour map of the attention weights; forbidden positions are drawn black
WEIGHT_CMAP = "viridis"
QUERY_COLOR = "#ff2a2a"
#: positions of a 1-D strip (text, audio) shown before the query
STRIP_WINDOW = 256
#: at most this many layers in a grid (evenly spaced, first and last included) unless chosen
MAX_GRID_LAYERS = 8
#: characters are printed on text strips only when a figure has at most this many panels
MAX_TEXT_PANELS = 16
#: float32 tolerance of ``probs @ v`` against the backend's own output rows
OUTPUT_TOLERANCE = 1e-3


@dataclass
class AttentionRecord:
    """What one block's backend computed for the chosen rows during the recorded forward pass."""

    layer: int
    probs: Tensor  # (B, H, R, T) float32: softmax weights of the rows
    allowed: Tensor  # (H, R, T) bool: keys the pattern allows
    output_error: float  # max |probs @ v - attend(q, k, v)[rows]|


class _RowRecorder:
    """Stands in for a block's backend during one forward pass: the real ``attend``, then the
    probabilities of ``rows`` from the same backend on the same ``q``, ``k`` (other attributes pass through)."""

    def __init__(self, backend: Any, rows: Tensor, records: list[AttentionRecord]) -> None:
        self.backend, self.rows, self.records = backend, rows, records

    def attend(self, q, k, v, component, layer=0, scale=None):  # q, k: (B, H, T, Dqk), v: (B, H, T, Dv)
        out = self.backend.attend(q, k, v, component, layer=layer, scale=scale)  # (B, H, T, Dv)
        B, H, T, _ = q.shape
        rows = self.rows.to(q.device)
        probs = self.backend.attention_probs(q, k, component, layer, rows, scale)  # (B, H, R, T)
        allowed = component.row_mask(rows, T, layer, device=q.device).expand(H, -1, -1)  # (H, R, T)
        error = float((probs @ v.to(probs.dtype) - out[:, :, rows].to(probs.dtype)).abs().max())
        self.records.append(AttentionRecord(layer, probs.detach().cpu(), allowed.cpu(), error))
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)


@contextlib.contextmanager
def record_attention(model: nn.Module, rows: Sequence[int] | Tensor) -> Iterator[list[AttentionRecord]]:
    """Within the block, every forward of ``model``'s attention blocks records the probabilities of
    query ``rows`` (one :class:`AttentionRecord` per block call, in call order); the backends are
    restored on exit, even after an error."""
    rows = torch.as_tensor(rows, dtype=torch.long).reshape(-1)
    blocks = [m for m in model.modules() if isinstance(m, CausalSelfAttention)]
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no zoo.attention.CausalSelfAttention blocks to record")
    records: list[AttentionRecord] = []
    saved = [m.backend for m in blocks]
    try:
        for m in blocks:
            m.backend = _RowRecorder(m.backend, rows, records)  # type: ignore[assignment]
        yield records
    finally:
        for m, backend in zip(blocks, saved):
            m.backend = backend


@dataclass
class AttentionMaps:
    """Attention probabilities of ``queries`` in every layer and head for one example."""

    example: Tensor  # (T,) long: the bytes the model read
    queries: list[int]  # the query positions (rows)
    probs: Tensor  # (L, H, R, T) float32
    allowed: Tensor  # (L, H, R, T) bool
    data_shape: list[int]
    pattern: str
    backend: str
    head_parts: list[list[str]] = field(default_factory=list)  # [layer][head]: the parts a head uses
    max_output_error: float = 0.0  # max |probs @ v - the backend's output| over the recorded blocks

    @property
    def layout(self) -> Layout:
        return Layout.of(self.data_shape)


def _head_parts(component: Any, layers: int) -> list[list[str]]:
    names = [type(p).__name__ for p in component.parts()]
    table = [component.members(layer).tolist() for layer in range(layers)]  # (H, parts) per layer
    return [[" + ".join(n for n, used in zip(names, row) if used) or "none" for row in t] for t in table]


def attention_maps(model: nn.Module, example: Tensor, queries: Sequence[int] | None = None) -> AttentionMaps:
    """Record the attention of ``queries`` (default :meth:`Layout.default_queries`) while ``model``
    reads ``example`` (``(T,)`` bytes) in eval mode; the model and its backends are left as they were."""
    example = as_long(example)
    data_shape = example_shape(model, example)
    layout = Layout.of(data_shape)
    queries = check_positions(
        "query", layout.default_queries() if queries is None else queries, layout.length
    )
    device = next(model.parameters()).device
    with eval_mode(model), record_attention(model, queries) as records:
        model(example[None].to(device))
    records.sort(key=lambda r: r.layer)
    error = max(r.output_error for r in records)
    if error > OUTPUT_TOLERANCE:
        log.warning(
            "attention probabilities differ from the backend's output by up to %.2g: the maps may not "
            "show exactly what the model computed", error,
        )  # fmt: skip
    component = getattr(model, "component", None)
    backend = getattr(model, "backend", None)
    return AttentionMaps(
        example=example.cpu(),
        queries=queries,
        probs=torch.stack([r.probs[0] for r in records]),  # (L, H, R, T)
        allowed=torch.stack([r.allowed for r in records]),  # (L, H, R, T)
        data_shape=data_shape,
        pattern=getattr(component, "name", "?"),
        backend=getattr(backend, "name", type(backend).__name__),
        head_parts=_head_parts(component, len(records)) if component is not None else [],
        max_output_error=error,
    )


# ---------------------------------------------------------------------------------- drawing
def weight_image(
    maps: AttentionMaps, layer: int, head: int, query: int
) -> tuple[np.ma.MaskedArray, tuple[int, int]]:
    """The picture of one head's weights for ``maps.queries[query]``: a masked array (forbidden
    positions masked) on the image grid or the strip, and the ``(row, col)`` cell of the query."""
    layout = maps.layout
    q = maps.queries[query]
    weights = maps.probs[layer, head, query].numpy()  # (T,)
    allowed = maps.allowed[layer, head, query].numpy()  # (T,)
    if layout.image:
        grid, ok = layout.grid(weights, "sum"), layout.grid(allowed, "any")
        r, c, _ = layout.pixel(q)
    else:
        start = strip_start(q, maps.example.numel())
        grid, ok = strip(weights, start, q + 1, layout.cols), strip(allowed, start, q + 1, layout.cols)
        r, c = divmod(q - start, layout.cols)
    return np.ma.masked_where(~ok, grid), (r, c)


def strip_start(query: int, length: int, window: int = STRIP_WINDOW) -> int:
    """First position of the 1-D strip drawn for ``query``: the ``window`` positions ending at it."""
    return max(0, min(query + 1, length) - window)


def _draw(fig: Figure, ax: Any, maps: AttentionMaps, layer: int, head: int, query: int, text: bool) -> Any:
    image, (r, c) = weight_image(maps, layer, head, query)
    cmap = colormaps[WEIGHT_CMAP].copy()
    cmap.set_bad("black")
    vmax = float(image.max()) if image.count() else 1.0
    norm = PowerNorm(0.5, vmin=0.0, vmax=max(vmax, 1e-6))
    im = ax.imshow(image, cmap=cmap, norm=norm, interpolation="nearest")
    ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor=QUERY_COLOR, linewidth=1.5))
    if text:
        q = maps.queries[query]
        data = maps.example[strip_start(q, maps.example.numel()) : q + 1].tolist()
        draw_glyphs(ax, data, cmap(norm(image)), maps.layout.cols)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
    return im


def _layers(maps: AttentionMaps, layers: Sequence[int] | None) -> list[int]:
    L = maps.probs.shape[0]
    if layers is not None:
        for layer in layers:
            if not 0 <= layer < L:
                raise ValueError(f"layer {layer} does not exist: the model has layers 0..{L - 1}")
        return list(layers)
    if L <= MAX_GRID_LAYERS:
        return list(range(L))
    return sorted({round(i * (L - 1) / (MAX_GRID_LAYERS - 1)) for i in range(MAX_GRID_LAYERS)})


def _show_text(maps: AttentionMaps, panels: int) -> bool:
    return not maps.layout.image and is_text(maps.example) and panels <= MAX_TEXT_PANELS


def _title(maps: AttentionMaps, layer: int, head: int) -> str:
    part = maps.head_parts[layer][head] if maps.head_parts else ""
    return f"layer {layer}, head {head}" + (f"\n{part}" if part else "")


def _figure(maps: AttentionMaps, rows: int, cols: int, title_lines: int) -> Figure:
    """A figure sized for ``rows x cols`` panels (each with its colour bar and a title of ``title_lines``)."""
    layout = maps.layout
    width = 2.4 if layout.image else 6.4  # inches per panel, colour bar included
    aspect = layout.rows / layout.cols if layout.image else (STRIP_WINDOW / layout.cols) / layout.cols
    height = (width - 0.55) * aspect + 0.14 * title_lines + 0.15
    return new_figure(width * cols + 0.2, height * rows + 0.5)


def plot_attention_grid(
    maps: AttentionMaps,
    query: int = 0,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
) -> Figure:
    """Layer x head grid of the weights of ``maps.queries[query]`` (paper Figure 2 for one pixel)."""
    if not 0 <= query < len(maps.queries):
        raise ValueError(f"query index {query} out of range: maps hold {len(maps.queries)} queries")
    rows = _layers(maps, layers)
    cols = list(range(maps.probs.shape[1]) if heads is None else heads)
    fig = _figure(maps, len(rows), len(cols), title_lines=2)
    axes = fig.subplots(len(rows), len(cols), squeeze=False)
    text = _show_text(maps, len(rows) * len(cols))
    for i, layer in enumerate(rows):
        for j, head in enumerate(cols):
            _draw(fig, axes[i, j], maps, layer, head, query, text)
            axes[i, j].set_title(_title(maps, layer, head), fontsize=7)
    fig.suptitle(
        f"{maps.pattern} attention while predicting {maps.layout.describe(maps.queries[query])}\n"
        f"(backend {maps.backend}; red: the query, black: positions the pattern forbids)",
        fontsize=8,
    )
    return fig


def plot_attention_queries(maps: AttentionMaps, head: int = 0, layers: Sequence[int] | None = None) -> Figure:
    """One head across the queries: a row per layer, a column per query."""
    H = maps.probs.shape[1]
    if not 0 <= head < H:
        raise ValueError(f"head {head} does not exist: the model has heads 0..{H - 1}")
    rows = _layers(maps, layers)
    R = len(maps.queries)
    fig = _figure(maps, len(rows), R, title_lines=3)
    axes = fig.subplots(len(rows), R, squeeze=False)
    text = _show_text(maps, len(rows) * R)
    for i, layer in enumerate(rows):
        for j in range(R):
            _draw(fig, axes[i, j], maps, layer, head, j, text)
            axes[i, j].set_title(
                f"{_title(maps, layer, head)}\n{maps.layout.describe(maps.queries[j])}", fontsize=6.5
            )
    fig.suptitle(
        f"{maps.pattern} attention of head {head} across queries\n"
        f"(backend {maps.backend}; red: the query, black: positions the pattern forbids)",
        fontsize=8,
    )
    return fig
