"""Learned position embeddings of a trained model (Child et al. 2019, §5.3, eq. 15).

The input at position ``i`` is ``x_i W_e + sum_j o_i^(j) W_j``: one learned table ``W_j`` per
position dimension (:class:`zoo.embeddings.PositionEmbedding`): row, column (and channel) for the
``data`` embedding of images, the row ``i // l`` and column ``i mod l`` of the ``attention``
embedding, or one ``absolute`` table.

* :func:`plot_position_tables` - each table as an image (entries down, the ``d`` features across)
  beside the cosine similarity of its entries: a model that has learned the geometry has smooth
  tables, whose neighbouring rows (columns) are similar and distant ones not;
* :func:`plot_position_similarity` - for a few positions of an image, the cosine similarity of the
  summed position embedding ``sum_j o_i^(j) W_j`` to every other position of the same channel, on
  the image grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor, nn

from .layout import Layout, new_figure

SIMILARITY_CMAP = "RdBu_r"
TABLE_CMAP = "RdBu_r"


@dataclass
class PositionTable:
    """One learned position table ``W_j``: its name and weights ``(entries, d)``."""

    name: str
    weight: Tensor  # (size, d) float32, detached on CPU

    def similarity(self) -> Tensor:
        """Cosine similarity of the table's entries, ``(size, size)`` in ``[-1, 1]``."""
        return cosine_matrix(self.weight)


def cosine_matrix(x: Tensor) -> Tensor:
    """Cosine similarity of the rows of ``x`` ``(N, d)``: ``(N, N)``."""
    unit = F.normalize(x.float(), dim=-1)
    return unit @ unit.T


def _position_embedding(model: nn.Module):
    embed = getattr(model, "embed_in", None)
    position = getattr(embed, "position", None)
    if position is None:
        raise ValueError(
            f"{type(model).__name__} has no learned position embedding (model.embed_in.position)"
        )
    return position


def table_names(kind: str, data_shape: Sequence[int]) -> list[str]:
    """Names of the tables of a ``kind`` position embedding (§5.3) for ``data_shape``."""
    if kind == "attention":
        return ["row (i // stride)", "column (i mod stride)"]
    if kind == "absolute" or len(data_shape) == 1:
        return ["position"]
    layout = Layout.of(data_shape)
    if layout.image and len(data_shape) == 2:
        return ["row", "column"]
    if layout.image:
        return ["channel", "row", "column"] if layout.channel_axis == 0 else ["row", "column", "channel"]
    return [f"dimension {i} (size {s})" for i, s in enumerate(data_shape)]


def position_tables(model: nn.Module) -> list[PositionTable]:
    """The model's learned position tables, in the order of the position dimensions."""
    position = _position_embedding(model)
    data_shape = list(getattr(model.config, "data_shape", [position.seq_len]))
    names = table_names(position.kind, data_shape)
    return [PositionTable(n, t.weight.detach().float().cpu()) for n, t in zip(names, position.tables)]


@torch.no_grad()
def summed_positions(model: nn.Module) -> Tensor:
    """``sum_j o_i^(j) W_j`` for every position ``i`` of the model: ``(seq_len, d)``."""
    position = _position_embedding(model)
    return position(position.seq_len).detach().float().cpu()


def position_similarity(model: nn.Module, positions: Sequence[int]) -> Tensor:
    """Cosine similarity of the summed position embedding of ``positions`` to every position: ``(P, T)``."""
    summed = summed_positions(model)  # (T, d)
    T = summed.shape[0]
    for p in positions:
        if not 0 <= p < T:
            raise ValueError(f"position {p} is outside the model's {T} positions")
    unit = F.normalize(summed, dim=-1)
    return unit[list(positions)] @ unit.T  # (P, T)


def default_similarity_positions(layout: Layout) -> list[int]:
    """Four pixels spread over the image (last channel): top-left quarter, centre, top-right, bottom."""
    r, c = layout.rows, layout.cols
    cells = [(r // 4, c // 4), (r // 2, c // 2), (r // 4, 3 * c // 4), (3 * r // 4, c // 2)]
    return [layout.position(i, j) for i, j in cells]


# ---------------------------------------------------------------------------------- drawing
def plot_position_tables(model: nn.Module) -> Figure:
    """Each position table as an image, and the cosine similarity of its entries (§5.3)."""
    tables = position_tables(model)
    kind = _position_embedding(model).kind
    fig = new_figure(8.0, 3.1 * len(tables) + 0.4)
    axes = fig.subplots(len(tables), 2, squeeze=False)
    for i, table in enumerate(tables):
        w = table.weight.numpy()
        lim = float(np.abs(w).max()) or 1.0
        ax = axes[i, 0]
        im = ax.imshow(w, cmap=TABLE_CMAP, vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest")
        ax.set_title(f"{table.name} table: {w.shape[0]} entries x {w.shape[1]} features", fontsize=8)
        ax.set_xlabel("feature", fontsize=7)
        ax.set_ylabel("entry", fontsize=7)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        ax = axes[i, 1]
        im = ax.imshow(
            table.similarity().numpy(), cmap=SIMILARITY_CMAP, vmin=-1, vmax=1, interpolation="nearest"
        )
        ax.set_title(f"{table.name}: cosine similarity of entries", fontsize=8)
        ax.set_xlabel("entry", fontsize=7)
        ax.set_ylabel("entry", fontsize=7)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        for a in axes[i]:
            a.tick_params(labelsize=6)
    fig.suptitle(f"learned position embeddings ({kind}, §5.3)", fontsize=9)
    return fig


def plot_position_similarity(model: nn.Module, positions: Sequence[int] | None = None) -> Figure:
    """For a few pixels (outlined), the cosine similarity of their summed position embedding to every
    other pixel of the same channel, on the image grid. Image-shaped data only."""
    layout = Layout.of(list(model.config.data_shape))
    if not layout.image or layout.length != model.config.seq_len:
        raise ValueError(
            f"the position similarity is drawn on an image grid; data_shape {list(model.config.data_shape)} "
            "is not an image (use plot_position_tables)"
        )
    positions = list(default_similarity_positions(layout) if positions is None else positions)
    sims = position_similarity(model, positions)  # (P, T)
    fig = new_figure(2.6 * len(positions) + 0.6, 2.8)
    axes = fig.subplots(1, len(positions), squeeze=False)[0]
    for ax, p, sim in zip(axes, positions, sims):
        r, c, ch = layout.pixel(p)
        im = ax.imshow(
            layout.cube(sim)[..., ch], cmap=SIMILARITY_CMAP, vmin=-1, vmax=1, interpolation="nearest"
        )
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.5))
        ax.set_title(layout.describe(p), fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=list(axes), fraction=0.03, pad=0.02, label="cosine similarity")
    fig.suptitle("similarity of the summed position embedding to every pixel (§5.3)", fontsize=9)
    return fig
