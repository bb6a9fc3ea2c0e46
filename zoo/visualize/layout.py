"""Where a byte position sits in a picture, and figures turned into PNG files or arrays.

A sequence of ``T`` bytes has a ``data_shape`` in byte order (:mod:`zoo.data.base`): ``[H, W]`` grey
images, ``[H, W, C]`` interleaved channels, ``[C, H, W]`` channel planes, or a 1-D stream ``[T]``
(text, audio). :class:`Layout` maps per-position values onto the image grid ``(H, W)`` (combining
the channels of a pixel) or onto a strip of ``wrap`` positions per row for 1-D data.

Figures are matplotlib :class:`~matplotlib.figure.Figure` objects on the Agg canvas (no display and
no pyplot state, like :mod:`attention_patterns.plotting`); :func:`save_png` writes one,
:func:`to_array` renders it to an ``(H, W, 3)`` uint8 array (for ``logger.log_images``).
"""

from __future__ import annotations

import contextlib
import io
import math
import operator
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor, nn

#: cells per row of the strip that shows 1-D data (text, audio)
STRIP_WRAP = 64


@dataclass(frozen=True)
class Layout:
    """The picture grid of one example: ``rows x cols`` pixels of ``channels`` bytes, or a 1-D strip.

    ``channel_axis`` is ``-1`` for interleaved ``[H, W, C]`` bytes, ``0`` for planes ``[C, H, W]``;
    ``image`` is False for 1-D data, which is drawn as a strip of :data:`STRIP_WRAP` positions per row.
    """

    length: int  # T, bytes per example
    rows: int
    cols: int
    channels: int = 1
    channel_axis: int = -1
    image: bool = True

    @classmethod
    def of(cls, data_shape: Sequence[int]) -> Layout:
        """The layout of ``data_shape`` (any shape that is not an image is read as a 1-D stream)."""
        shape = [int(s) for s in data_shape]
        if not shape or any(s < 1 for s in shape):
            raise ValueError(f"data_shape must be a non-empty list of positive sizes, got {list(data_shape)}")
        T = math.prod(shape)
        if len(shape) == 2:
            return cls(T, shape[0], shape[1])
        if len(shape) == 3 and shape[2] in (1, 3):
            return cls(T, shape[0], shape[1], shape[2], -1)
        if len(shape) == 3 and shape[0] in (1, 3):
            return cls(T, shape[1], shape[2], shape[0], 0)
        return cls(T, -(-T // STRIP_WRAP), min(T, STRIP_WRAP), image=False)

    # ------------------------------------------------------------------ positions
    def pixel(self, position: int) -> tuple[int, int, int]:
        """``(row, col, channel)`` of a byte position (for 1-D data: its cell in the strip, channel 0)."""
        if not 0 <= position < self.length:
            raise ValueError(
                f"position {position} is outside the example: positions lie in [0, {self.length - 1}]"
            )
        if not self.image:
            return position // self.cols, position % self.cols, 0
        if self.channel_axis == 0:
            c, rest = divmod(position, self.rows * self.cols)
            return rest // self.cols, rest % self.cols, c
        pix, c = divmod(position, self.channels)
        return pix // self.cols, pix % self.cols, c

    def position(self, row: int, col: int, channel: int | None = None) -> int:
        """The byte position of a pixel (``channel`` default: the last channel, the pixel's last byte)."""
        c = self.channels - 1 if channel is None else channel
        if self.channel_axis == 0:
            return (c * self.rows + row) * self.cols + col
        return (row * self.cols + col) * self.channels + c

    def describe(self, position: int) -> str:
        """``"position 406 (row 14, col 14)"``, with the channel for colour images."""
        if not self.image:
            return f"position {position}"
        r, c, ch = self.pixel(position)
        return f"position {position} (row {r}, col {c}" + (f", channel {ch})" if self.channels > 1 else ")")

    def default_queries(self) -> list[int]:
        """The centre pixel and a late one (last channel) for images; the middle and a late position for 1-D."""
        if not self.image:
            return sorted({self.length // 2, self.length - 1 - self.length // 16})
        return [
            self.position(self.rows // 2, self.cols // 2),
            self.position(self.rows - 1 - self.rows // 8, self.cols - 1 - self.cols // 4),
        ]

    # ------------------------------------------------------------------ values -> grids
    def grid(self, values: Tensor | np.ndarray, reduce: str = "mean") -> np.ndarray:
        """Per-position ``values`` ``(T,)`` -> ``(rows, cols)``, channels of a pixel combined by ``reduce``
        (``mean``, ``sum`` or ``any``); 1-D data fills a strip row by row, NaN after the last position."""
        arr = np.asarray(values.detach().cpu() if isinstance(values, Tensor) else values)
        if arr.shape != (self.length,):
            raise ValueError(f"expected {self.length} per-position values, got shape {arr.shape}")
        if not self.image:
            return strip(arr, 0, self.length, self.cols)
        cube = self.cube(arr)
        if reduce == "mean":
            return cube.mean(-1)
        if reduce == "sum":
            return cube.sum(-1)
        if reduce == "any":
            return cube.any(-1)
        raise ValueError(f"reduce must be 'mean', 'sum' or 'any', got {reduce!r}")

    def cube(self, values: Tensor | np.ndarray) -> np.ndarray:
        """Per-position values ``(T,)`` of an image as ``(rows, cols, channels)``."""
        arr = np.asarray(values.detach().cpu() if isinstance(values, Tensor) else values)
        if not self.image:
            raise ValueError("1-D data has no image grid; draw it as a strip")
        if self.channel_axis == 0:
            return np.moveaxis(arr.reshape(self.channels, self.rows, self.cols), 0, -1)
        return arr.reshape(self.rows, self.cols, self.channels)

    def picture(self, example: Tensor) -> np.ndarray:
        """The example's bytes as an image: uint8 ``(rows, cols)`` grey or ``(rows, cols, 3)`` colour."""
        cube = self.cube(example.detach().cpu().numpy().astype(np.uint8))
        return cube[..., 0] if self.channels == 1 else cube


def strip(values: np.ndarray, start: int, stop: int, wrap: int = STRIP_WRAP) -> np.ndarray:
    """Positions ``start..stop-1`` of ``values`` ``(T,)`` as rows of ``wrap`` cells ``(ceil(n / wrap), wrap)``;
    cells after the last position are NaN (False for bool values)."""
    part = np.asarray(values)[start:stop]
    rows = -(-len(part) // wrap)
    out = np.full(
        rows * wrap, False if part.dtype == bool else np.nan, dtype=bool if part.dtype == bool else float
    )
    out[: len(part)] = part
    return out.reshape(rows, wrap)


def is_text(example: Tensor, threshold: float = 0.9) -> bool:
    """True when at least ``threshold`` of the bytes are printable ASCII or newlines (enwik8-like text)."""
    b = example.detach().cpu().long()
    printable = ((b >= 32) & (b < 127)) | (b == 10) | (b == 9)
    return bool(printable.float().mean() >= threshold)


def glyph(byte: int) -> str:
    """A one-character label of a byte for the text strip (``⏎`` newline, ``·`` other control bytes)."""
    if byte == 10:
        return "\u23ce"
    if 32 <= byte < 127:
        return chr(byte)
    return "\u00b7"


def draw_glyphs(
    ax: Any, data: Sequence[int], shades: np.ndarray, wrap: int = STRIP_WRAP, fontsize: float = 5.0
) -> None:
    """Print byte ``data[i]`` in strip cell ``divmod(i, wrap)`` of ``ax``, black on light cells and white on
    dark ones (``shades``: the cells' RGBA colours, ``(rows, wrap, 4)``)."""
    for i, byte in enumerate(data):
        r, c = divmod(i, wrap)
        red, green, blue = shades[r, c, :3]
        ink = "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"
        ax.text(c, r, glyph(byte), ha="center", va="center", fontsize=fontsize, color=ink, family="monospace")


# ---------------------------------------------------------------------------------- figures
def new_figure(width: float, height: float) -> Figure:
    """A figure on the Agg canvas (no display needed)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG (folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def to_png(fig: Figure, dpi: int = 110) -> bytes:
    """The PNG bytes of ``fig`` (e.g. for ``IPython.display.Image``)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def to_array(fig: Figure, dpi: int = 90) -> np.ndarray:
    """``fig`` rendered to an ``(H, W, 3)`` uint8 RGB array (what ``logger.log_images`` takes)."""
    fig.set_dpi(dpi)
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def as_long(example: Tensor | np.ndarray | Sequence[int]) -> Tensor:
    """One example as a long ``(T,)`` tensor of bytes."""
    t = torch.as_tensor(example)
    if t.dim() != 1:
        raise ValueError(f"an example must be one sequence of bytes (T,), got shape {tuple(t.shape)}")
    return t.long()


def example_shape(model: nn.Module, example: Tensor) -> list[int]:
    """The model's ``data_shape`` when ``example`` has its length, else the 1-D shape ``[T]``."""
    shape = list(getattr(getattr(model, "config", None), "data_shape", None) or [example.numel()])
    return shape if math.prod(shape) == example.numel() else [example.numel()]


def check_positions(name: str, positions: Sequence[int], length: int) -> list[int]:
    """``positions`` as ints, each in ``[0, length)``; raises ``ValueError`` naming the bad one."""
    out = []
    for p in positions:
        try:
            if isinstance(p, bool):
                raise TypeError
            value = operator.index(p)
        except TypeError:
            value = None
        if value is None or not 0 <= value < length:
            raise ValueError(
                f"{name} {p!r} is not a position of the example: its positions are 0..{length - 1}"
            )
        out.append(value)
    return out


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode without gradients inside the block; its mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)
