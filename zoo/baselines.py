"""Reference compressors and a byte context model: what a learned model's bits per dim is read against.

Both kinds of baseline see the training split and are scored on the test split, as the model is:

* :func:`compressor_bits` - gzip -9 (deflate), bzip2 -9 and xz -9e (LZMA2, preset 9 extreme) *conditioned
  on the training split*: ``8 * (|C(train + test)| - |C(train)|) / len(test)`` bits per byte, the
  cost of the test bytes for a compressor that has already read the training bytes (headers cancel).
  Python's ``zlib``, ``bz2`` and ``lzma`` modules at those settings produce the same streams as the
  command-line tools up to the container headers.
* :class:`ContextModel` - an order-``k`` byte model: the next byte's probability given the previous
  ``k`` bytes, from counts over the training split only (a static model, not adapted on the test
  bytes), with interpolated Witten-Bell smoothing (the PPM "method C" escape estimate) down to a
  uniform distribution over 256 values::

      P_k(x | c) = (n(c, x) + t(c) P_{k-1}(x | c')) / (n(c) + t(c))     if n(c) > 0, else P_{k-1}(x | c')
      P_{-1}(x)  = 1 / 256

  where ``c'`` is ``c`` without its oldest byte, ``n(c, x)`` the count of ``x`` after ``c``, ``n(c)``
  the count of ``c`` and ``t(c)`` the number of distinct bytes seen after it. Positions before the
  start of a sequence (an image, or the start of a text split) are a 257th symbol, so contexts never
  reach into the previous image.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable

import numpy as np

COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip -9": lambda b: zlib.compress(b, 9),
    "bz2 -9": lambda b: bz2.compress(b, 9),
    "xz -9e": lambda b: lzma.compress(b, preset=9 | lzma.PRESET_EXTREME),
}
#: The largest context order: keys ``context * 256 + byte`` of up to 6 symbols in base 257 fit in int64.
MAX_ORDER = 6
_PAD = 256  # the "before the start" symbol


def compressor_bits(train: bytes, test: bytes, name: str) -> float:
    """Bits per byte of ``test`` under compressor ``name`` (:data:`COMPRESSORS`) conditioned on ``train``."""
    compress = COMPRESSORS[name]
    extra = len(compress(train + test)) - len(compress(train)) if train else len(compress(test))
    return 8.0 * extra / len(test)


def _contexts(seqs: np.ndarray, order: int) -> np.ndarray:
    """Context codes of every position of ``seqs`` ``(N, T)`` uint8: the previous ``order`` bytes in base 257."""
    n, t = seqs.shape
    padded = np.full((n, t + order), _PAD, dtype=np.int64)
    padded[:, order:] = seqs
    ctx = np.zeros((n, t), dtype=np.int64)
    for j in range(1, order + 1):  # byte j positions back
        ctx = ctx * 257 + padded[:, order - j : order - j + t]
    return ctx.reshape(-1)


def _lookup(table_keys: np.ndarray, table_values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """``table_values`` at ``keys`` (0 where a key is absent); ``table_keys`` sorted."""
    idx = np.searchsorted(table_keys, keys)
    idx = np.minimum(idx, len(table_keys) - 1)
    hit = table_keys[idx] == keys
    return np.where(hit, table_values[idx], 0)


class ContextModel:
    """Order-``0..max_order`` byte models with interpolated Witten-Bell smoothing (module docstring).

    ``ContextModel(train, max_order)`` counts the training sequences ``(N, T)`` uint8 (a text split
    is one row); :meth:`bits` scores other sequences for every order at once.
    """

    def __init__(self, train: np.ndarray, max_order: int) -> None:
        if not 0 <= max_order <= MAX_ORDER:
            raise ValueError(f"max_order must be in [0, {MAX_ORDER}], got {max_order}")
        train = np.atleast_2d(np.asarray(train, dtype=np.uint8))
        self.max_order = max_order
        self.tables = []  # per order: (sorted keys, counts, sorted contexts, n(c), t(c))
        x = train.reshape(-1).astype(np.int64)
        for order in range(max_order + 1):
            keys, counts = np.unique(_contexts(train, order) * 256 + x, return_counts=True)
            ctx_of_key = keys // 256  # sorted, since keys are
            starts = np.flatnonzero(np.r_[True, ctx_of_key[1:] != ctx_of_key[:-1]])
            ctxs = ctx_of_key[starts]
            n_ctx = np.add.reduceat(counts, starts)
            t_ctx = np.diff(np.r_[starts, len(keys)])
            self.tables.append((keys, counts, ctxs, n_ctx, t_ctx))

    def probabilities(self, seqs: np.ndarray) -> np.ndarray:
        """``(max_order + 1, N * T)``: the probability of every byte of ``seqs`` under each order."""
        seqs = np.atleast_2d(np.asarray(seqs, dtype=np.uint8))
        x = seqs.reshape(-1).astype(np.int64)
        p = np.full(x.shape, 1.0 / 256)  # order -1
        out = []
        for order, (keys, counts, ctxs, n_ctx, t_ctx) in enumerate(self.tables):
            ctx = _contexts(seqs, order)
            c = _lookup(keys, counts, ctx * 256 + x)
            n = _lookup(ctxs, n_ctx, ctx)
            t = _lookup(ctxs, t_ctx, ctx)
            p = np.where(n > 0, (c + t * p) / np.maximum(n + t, 1), p)
            out.append(p)
        return np.stack(out)

    def bits(self, seqs: np.ndarray) -> list[float]:
        """Mean bits per byte of ``seqs`` for orders ``0..max_order``."""
        return [float(v) for v in -np.log2(self.probabilities(seqs)).mean(axis=1)]


def split_array(dataset, max_bytes: int | None = None, keep: str = "first") -> np.ndarray:
    """The bytes of a data split as ``(N, T)`` uint8: one row per sequence, or one row for a byte stream.

    Works with the in-memory sets (``.data``), memory-mapped rows (:class:`zoo.data.common.NpyRows`)
    and byte-file windows (:class:`~zoo.data.common.RandomWindows` / ``EvalWindows``: the whole span
    of the split, not the windows); any other data set is stacked item by item. ``max_bytes`` keeps
    the ``first`` (rows) or ``last`` (streams, with ``keep="last"``) bytes up to that many.
    """
    from zoo.data.common import EvalWindows, NpyRows, RandomWindows

    if isinstance(dataset, (EvalWindows, RandomWindows)):
        lo, hi = dataset.offset, dataset.offset + dataset.length
        if max_bytes is not None and hi - lo > max_bytes:
            lo, hi = (hi - max_bytes, hi) if keep == "last" else (lo, lo + max_bytes)
        return np.asarray(dataset._map.array[lo:hi], dtype=np.uint8)[None]
    data = getattr(dataset, "data", None)
    rows = len(dataset)
    if max_bytes is not None:
        seq_len = int(dataset[0].shape[0])
        rows = min(rows, max(1, max_bytes // seq_len))
    if data is not None and hasattr(data, "numpy"):
        return np.asarray(data[:rows].numpy(), dtype=np.uint8)
    if isinstance(dataset, NpyRows):
        idx = np.arange(rows) if dataset.indices is None else np.sort(dataset.indices[:rows])
        out = np.asarray(dataset._map.array[idx], dtype=np.uint8)
        return np.stack([dataset.transform(r) for r in out]) if dataset.transform is not None else out
    return np.stack([dataset[i].numpy().astype(np.uint8) for i in range(rows)])
