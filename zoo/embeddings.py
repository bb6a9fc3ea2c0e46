"""Input embeddings of the Sparse Transformer (Child et al. 2019, §5.3 eq. 15, initialisation §6).

Each input byte ``x_i`` is embedded as ``x_i W_e + sum_j o_i^(j) W_j`` where ``o_i^(j)`` is the
one-hot position of ``x_i`` along the ``j``-th of ``n_emb`` position dimensions. Three choices of
position dimensions (``ModelConfig.embedding``):

* ``data`` - ``n_emb = d_data``: one table per dimension of the example's shape in byte order
  (``data_shape``), e.g. row, column and channel for ``[32, 32, 3]`` interleaved RGB, channel, row
  and column for ``[3, 32, 32]`` channel planes, just the position for a 1-D stream ``[n]``.
  The paper uses this for images (§5.3);
* ``attention`` - ``n_emb = d_attn = 2``: the position's row ``i // l`` and column ``i % l`` in a
  matrix whose width is the attention stride ``l``. The paper uses this for text and audio (§5.3);
* ``absolute`` - ``n_emb = 1``: a plain learned table of ``seq_len`` positions (an ablation).

All three are one mechanism, :class:`PositionEmbedding`: a list of table sizes and, for every
position, its coordinate in each table.

The model is autoregressive with inputs shifted right by one: the input at position ``t`` is the
byte ``t - 1``, and position 0 receives a learned *start* embedding instead (:class:`InputEmbedding`),
so an example of ``n`` bytes gives ``n`` predictions and no prediction sees its own byte.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EMBEDDINGS = ("data", "attention", "absolute")


def position_coordinates(sizes: list[int], seq_len: int) -> Tensor:
    """Row-major coordinates of positions ``0..seq_len-1`` in a grid of ``sizes``: long ``(len(sizes), seq_len)``.

    The first dimension may be left unbounded by the caller (only the remaining sizes are used to
    unravel), which is how the ``attention`` embedding gets ``ceil(seq_len / stride)`` rows.
    """
    i = torch.arange(seq_len)
    coords = []
    for s in reversed(sizes[1:]):
        coords.append(i % s)
        i = torch.div(i, s, rounding_mode="floor")
    coords.append(i)
    return torch.stack(coords[::-1])  # (n_emb, seq_len)


class PositionEmbedding(nn.Module):
    """``sum_j o_i^(j) W_j`` of eq. (15): one learned table ``W_j`` of ``sizes[j]`` rows per position dimension.

    Tables are initialised from ``N(0, 0.125 / sqrt(d * n_emb))`` (§6) by :meth:`reset_parameters`.
    """

    def __init__(self, kind: str, sizes: list[int], seq_len: int, d: int) -> None:
        super().__init__()
        self.kind = kind
        self.sizes = [int(s) for s in sizes]
        self.seq_len = seq_len
        self.tables = nn.ModuleList(nn.Embedding(s, d) for s in self.sizes)
        coords = position_coordinates(self.sizes, seq_len)  # (n_emb, seq_len)
        if coords.device.type != "meta" and bool((coords.amax(dim=1) >= torch.tensor(self.sizes)).any()):
            raise ValueError(f"positions up to {seq_len} do not fit the {kind} embedding grid {self.sizes}")
        self.register_buffer("coords", coords, persistent=False)

    @property
    def n_emb(self) -> int:
        """Number of position dimensions (tables)."""
        return len(self.sizes)

    def reset_parameters(self) -> None:
        d = self.tables[0].embedding_dim
        std = 0.125 / math.sqrt(d * self.n_emb)  # §6
        for table in self.tables:
            nn.init.normal_(table.weight, mean=0.0, std=std)

    def forward(self, T: int) -> Tensor:
        """Position embeddings of the first ``T`` positions: ``(T, d)``."""
        if T > self.seq_len:
            raise ValueError(
                f"sequence of length {T} is longer than the model's seq_len={self.seq_len} "
                f"({self.kind} embedding grid {self.sizes}); positions beyond it have no embedding"
            )
        coords = self.coords[:, :T]  # (n_emb, T)
        out = self.tables[0](coords[0])  # (T, d)
        for table, c in zip(self.tables[1:], coords[1:]):
            out = out + table(c)  # (T, d)
        return out

    def at(self, t: int) -> Tensor:
        """The embedding of position ``t`` alone: ``(d,)``, equal to ``forward(T)[t]`` for any ``T > t``."""
        if not 0 <= t < self.seq_len:
            raise ValueError(f"position {t} is outside the model's seq_len={self.seq_len} ({self.kind} embedding)")
        coords = self.coords[:, t].tolist()  # n_emb coordinates
        out = self.tables[0].weight[coords[0]]  # (d,)
        for j in range(1, len(coords)):  # (indexing, not slicing, the ModuleList: no new module per call)
            out = out + self.tables[j].weight[coords[j]]  # (d,)
        return out

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, sizes={self.sizes}"


def attention_stride(attention_config: object) -> int:
    """The stride ``l`` of a built attention component's config (``width`` for ``axial``), for §5.3.

    Raises ``ValueError`` naming the pattern if it has no stride.
    """
    for key in ("stride", "width"):
        value = getattr(attention_config, key, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    name = getattr(attention_config, "name", type(attention_config).__name__)
    raise ValueError(
        f"embedding='attention' places each position in a matrix whose width is the attention stride, "
        f"but attention {name!r} has no 'stride' (strided, fixed) or 'width' (axial); "
        "use embedding='data' or 'absolute' with this pattern"
    )


def build_position_embedding(
    kind: str, seq_len: int, d: int, data_shape: list[int], attention_config: object
) -> PositionEmbedding:
    """The position embedding of ``kind`` in :data:`EMBEDDINGS` (§5.3); raises ``ValueError`` on bad values."""
    if kind == "data":
        shape = [int(s) for s in data_shape]
        if not shape or any(s < 1 for s in shape):
            raise ValueError(f"data_shape must be a non-empty list of positive sizes, got {list(data_shape)}")
        if math.prod(shape) != seq_len:
            raise ValueError(
                f"embedding='data' needs seq_len == prod(data_shape); got seq_len={seq_len} and "
                f"data_shape={shape} (prod {math.prod(shape)})"
            )
        return PositionEmbedding(kind, shape, seq_len, d)
    if kind == "attention":
        stride = attention_stride(attention_config)
        return PositionEmbedding(kind, [-(-seq_len // stride), stride], seq_len, d)
    if kind == "absolute":
        return PositionEmbedding(kind, [seq_len], seq_len, d)
    raise ValueError(f"embedding must be one of {list(EMBEDDINGS)}, got {kind!r}")


def embedding_sizes(kind: str, seq_len: int, data_shape: list[int], attention_config: object) -> list[int] | None:
    """The table sizes of the position embedding ``kind`` for this model, or None where it cannot be built
    (a data shape that does not match ``seq_len``, a pattern without a stride for ``attention``)."""
    if kind == "data":
        shape = [int(s) for s in data_shape]
        return shape if shape and all(s >= 1 for s in shape) and math.prod(shape) == seq_len else None
    if kind == "attention":
        try:
            stride = attention_stride(attention_config)
        except ValueError:
            return None
        return [-(-seq_len // stride), stride]
    if kind == "absolute":
        return [seq_len]
    raise ValueError(f"embedding must be one of {list(EMBEDDINGS)}, got {kind!r}")


def equivalent_embeddings(kind: str, seq_len: int, data_shape: list[int], attention_config: object) -> list[str]:
    """The other embeddings of :data:`EMBEDDINGS` that give exactly the same model as ``kind`` here.

    Position embeddings with the same table sizes have the same coordinates for every position
    (:func:`position_coordinates`), the same parameters and the same initialisation: the same model.
    E.g. ``attention`` with stride 28 and ``data`` on 28 x 28 images (both ``[28, 28]``), or ``absolute``
    and ``data`` on a 1-D stream (both ``[n]``).
    """
    mine = embedding_sizes(kind, seq_len, data_shape, attention_config)
    if mine is None:
        return []
    return [
        other
        for other in EMBEDDINGS
        if other != kind and embedding_sizes(other, seq_len, data_shape, attention_config) == mine
    ]


class InputEmbedding(nn.Module):
    """``H_0 = embed(X, W_e)`` (eq. 9, 15) of the inputs shifted right by one, with a learned start embedding.

    ``forward(idx)`` with ``idx`` ``(B, T)`` bytes returns ``(B, T, d)`` where position ``t`` holds
    ``W_e[idx[:, t-1]] + pos(t)`` and position 0 holds ``start + pos(0)``. The token table ``W_e``
    is initialised from ``N(0, 0.125 / sqrt(d))`` (§6); the start embedding, which the paper does not
    specify, is initialised like a row of ``W_e``.
    """

    def __init__(self, vocab_size: int, d: int, position: PositionEmbedding) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.token = nn.Embedding(vocab_size, d)  # W_e
        self.start = nn.Parameter(torch.empty(d))  # stands in for the byte before the first one
        self.position = position

    def reset_parameters(self) -> None:
        d = self.token.embedding_dim
        nn.init.normal_(self.token.weight, mean=0.0, std=0.125 / math.sqrt(d))  # §6
        nn.init.normal_(self.start, mean=0.0, std=0.125 / math.sqrt(d))  # our choice: like W_e
        self.position.reset_parameters()

    def forward(self, idx: Tensor) -> Tensor:  # idx: (B, T) long
        if idx.dim() != 2:
            raise ValueError(f"idx must be (B, T) byte indices, got shape {tuple(idx.shape)}")
        if idx.dtype not in (torch.long, torch.int32, torch.int16, torch.uint8, torch.int8):
            raise ValueError(f"idx must be an integer tensor of byte values, got dtype {idx.dtype}")
        B, T = idx.shape
        if T == 0:
            raise ValueError("idx must hold at least one position, got T=0")
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= self.vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"idx holds the value {bad}, outside the vocabulary [0, {self.vocab_size - 1}] (bytes)")
        tok = self.token(idx[:, :-1].long())  # (B, T-1, d): byte t-1 feeds position t
        start = self.start.view(1, 1, -1).expand(B, 1, -1)  # (B, 1, d)
        x = torch.cat([start, tok], dim=1)  # (B, T, d)
        return x + self.position(T)  # (B, T, d)

    def step(self, prev: Tensor | None, t: int, batch: int, position: Tensor | None = None) -> Tensor:
        """``H_0`` of position ``t`` alone, ``(B, 1, d)``, for incremental decoding: the embedding of byte
        ``t - 1`` (``prev``, long ``(B,)``, values already checked) plus position ``t`` (``position``: its
        ``(d,)`` embedding when the caller keeps a table of them); the start embedding at ``t = 0``.
        Equal to ``forward(idx)[:, t]`` for any ``idx`` holding ``prev`` at ``t - 1``."""
        if t == 0:
            x = self.start.view(1, 1, -1).expand(batch, 1, -1)  # (B, 1, d)
        else:
            assert prev is not None, "positions t > 0 need the byte t - 1"
            x = F.embedding(prev.view(batch, 1), self.token.weight)  # (B, 1, d): self.token, no module call
        return x + (self.position.at(t) if position is None else position)  # (B, 1, d)
