"""What a trained model predicts: the 256-way distribution of chosen bytes, and the bits it spends on
every position of an example.

The model's output at position ``t`` is a categorical distribution over the 256 byte values given
the bytes before ``t`` (Child et al. 2019, eq. 11); the cost of the true byte is
``-log2 p(x_t | x_<t)`` bits, and the mean over positions is the example's bits per dim (§7), the
number the trainer reports (:func:`zoo.metrics.nll_nats`, the trainer's own loss function).

* :func:`plot_distributions` - bar charts of the distribution at chosen positions, the true byte
  marked with its probability and bits;
* :func:`plot_bits_map` - the bits of every position: for images a heatmap beside the image (the
  mean over a pixel's channels, so the map averages to the bits per dim), for text the bytes
  coloured by their bits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from torch import Tensor, nn

from ..metrics import LN2, nll_nats
from .layout import (
    STRIP_WRAP,
    Layout,
    as_long,
    check_positions,
    draw_glyphs,
    eval_mode,
    example_shape,
    glyph,
    is_text,
    new_figure,
    strip,
)

BITS_CMAP = "magma"
TRUE_COLOR = "#d62728"
#: positions of a 1-D example drawn in its bits map (the last ones: the most context)
STRIP_POSITIONS = 1024


@dataclass
class Predictions:
    """The model's predicted distributions on one example."""

    example: Tensor  # (T,) long
    probs: Tensor  # (T, V) float32: p(byte | bytes before) at every position
    bits: Tensor  # (T,) float64: -log2 p(true byte)
    data_shape: list[int]

    @property
    def layout(self) -> Layout:
        return Layout.of(self.data_shape)

    @property
    def bits_per_dim(self) -> float:
        """Mean bits over the example's positions (its bits per dim)."""
        return float(self.bits.mean())

    def default_positions(self) -> list[int]:
        """The first position, the default attention queries and the position that costs the most bits."""
        picks = [0, *self.layout.default_queries(), int(self.bits.argmax())]
        return list(dict.fromkeys(picks))  # unique, in order


def predict(model: nn.Module, example: Tensor) -> Predictions:
    """Run ``model`` (eval mode, restored after) on ``example`` ``(T,)`` and keep its predictions."""
    example = as_long(example)
    device = next(model.parameters()).device
    with eval_mode(model):
        logits = model(example[None].to(device)).float()  # (1, T, V)
        nats = nll_nats(logits, example[None].to(device), reduction="none")[0]  # (T,): the trainer's loss
    data_shape = example_shape(model, example)
    return Predictions(
        example=example.cpu(),
        probs=torch.softmax(logits[0], dim=-1).cpu(),
        bits=(nats.double() / LN2).cpu(),
        data_shape=data_shape,
    )


# ---------------------------------------------------------------------------------- drawing
def plot_distributions(pred: Predictions, positions: Sequence[int] | None = None) -> Figure:
    """The predicted 256-way distribution at each of ``positions`` (default :meth:`Predictions.default_positions`),
    the true byte in red with its probability and cost in bits."""
    T, V = pred.probs.shape
    positions = check_positions("position", pred.default_positions() if positions is None else positions, T)
    cols = min(len(positions), 2)
    rows = -(-len(positions) // cols)
    fig = new_figure(4.6 * cols, 2.4 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    layout = pred.layout
    for ax, p in zip(axes, positions):
        probs = pred.probs[p].numpy()
        true = int(pred.example[p])
        colors = ["#7f7f7f"] * V
        colors[true] = TRUE_COLOR
        ax.bar(np.arange(V), probs, width=1.0, color=colors)
        ax.axvline(true, color=TRUE_COLOR, linewidth=0.8, linestyle="--")
        ax.set_xlim(-1, V)
        ax.set_ylim(0, max(float(probs.max()) * 1.1, 1e-3))
        label = f"'{glyph(true)}' " if not layout.image and is_text(pred.example) else ""
        ax.set_title(
            f"{layout.describe(p)}: true byte {true} {label}p={_prob(float(probs[true]))}, {float(pred.bits[p]):.2f} bits",
            fontsize=7.5,
        )
        ax.set_xlabel("byte value", fontsize=7)
        ax.set_ylabel("probability", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in axes[len(positions) :]:
        ax.set_visible(False)
    fig.suptitle(f"predicted distributions (example: {pred.bits_per_dim:.3f} bits/dim)", fontsize=9)
    return fig


def _prob(p: float) -> str:
    return f"{p:.3f}" if p >= 1e-3 else f"{p:.1e}"


def bits_image(pred: Predictions) -> tuple[np.ndarray, int]:
    """The bits map as drawn: ``(rows, cols)`` (mean over a pixel's channels) for images, or the
    strip of the last :data:`STRIP_POSITIONS` positions for 1-D data; and its first position."""
    layout = pred.layout
    bits = pred.bits.numpy()
    if layout.image:
        return layout.grid(bits, "mean"), 0
    start = max(0, layout.length - STRIP_POSITIONS)
    return strip(bits, start, layout.length, STRIP_WRAP), start


def plot_bits_map(pred: Predictions) -> Figure:
    """Bits per position of the whole example: a heatmap beside the image, or the bytes coloured by bits."""
    layout = pred.layout
    image, start = bits_image(pred)
    norm = Normalize(vmin=0.0, vmax=max(float(np.nanmax(image)), 1e-6))
    title = f"bits per position: {pred.bits_per_dim:.3f} bits/dim"
    if layout.image:
        fig = new_figure(6.4, 3.2)
        ax_img, ax_bits = fig.subplots(1, 2)
        picture = layout.picture(pred.example)
        ax_img.imshow(
            picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest"
        )
        ax_img.set_title("example", fontsize=8)
        im = ax_bits.imshow(image, cmap=BITS_CMAP, norm=norm, interpolation="nearest")
        ax_bits.set_title("-log2 p(byte | bytes before)" + (" (mean of channels)" if layout.channels > 1 else ""),
                          fontsize=8)  # fmt: skip
        for ax in (ax_img, ax_bits):
            ax.set_xticks([])
            ax.set_yticks([])
        fig.colorbar(im, ax=ax_bits, fraction=0.046, pad=0.02, label="bits")
    else:
        rows = image.shape[0]
        fig = new_figure(11.0, 0.19 * rows + 1.0)
        ax = fig.subplots()
        im = ax.imshow(image, cmap=BITS_CMAP, norm=norm, aspect="auto", interpolation="nearest")
        if is_text(pred.example):
            draw_glyphs(ax, pred.example[start:].tolist(), colormaps[BITS_CMAP](norm(image)), STRIP_WRAP, 7.5)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01, label="bits")
        if start:
            title += f" (positions {start}..{layout.length - 1} shown)"
    fig.suptitle(title, fontsize=9)
    return fig
