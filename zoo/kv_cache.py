"""The key/value cache of incremental decoding (Child et al. 2019 §4: sparse rows need only their keys).

Sampling a byte model position by position (§7 samples) re-reads every earlier position's keys and
values at every step. Caching them turns each new position into one projection per layer plus one
attention row. What each layer keeps depends on how far back its attention pattern looks
(:meth:`attention_patterns.AttentionPattern.max_lookback`):

* a layer whose every head looks back at most ``w - 1`` positions (``local`` with window ``w``, the
  ``local`` layers of an ``interleaved`` strided model, ``block_local``) keeps a **rolling window**
  of ``w`` slots: position ``j`` lives in slot ``j mod w`` and is overwritten once no later query
  can attend to it, so its memory is bounded by the window, not by the sequence length;
* any other layer keeps one slot per position up to the decoder's capacity.

The cache is a small explicit object: per layer the keys ``(B, H, S, D_qk)`` and values
``(B, H, S, D_v)`` (half-size query/key heads (§6) simply have a smaller ``D_qk``), the number of
positions written (:attr:`KVCache.length`) and its memory (:meth:`KVCache.memory_bytes`). The
tensors are allocated on the first write, with the dtype and device of the keys written (so a model
run in bf16/fp16, or under autocast, caches half-precision keys and values).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class LayerCache:
    """Keys and values of one layer: ``slots`` positions, a rolling window when ``ring``."""

    slots: int  # S: positions held
    ring: bool  # True: position j is held in slot j % S (a layer that looks back at most S - 1)
    keys: Tensor | None = None  # (B, H, S, D_qk), allocated on the first write
    values: Tensor | None = None  # (B, H, S, D_v)

    def slot(self, positions: Tensor) -> Tensor:
        """Slots holding ``positions`` (long, any shape)."""
        return torch.remainder(positions, self.slots) if self.ring else positions

    def write(self, k: Tensor, v: Tensor, start: int) -> None:
        """Store ``k`` ``(B, H, T, D_qk)`` and ``v`` ``(B, H, T, D_v)`` of positions ``start .. start + T - 1``.

        A rolling window keeps the last ``S`` of them (earlier ones would be overwritten anyway).
        """
        T = k.shape[2]
        self._allocate(k, v)
        assert self.keys is not None and self.values is not None
        if self.ring and T > 1:
            keep = min(T, self.slots)
            k, v, start, T = k[:, :, T - keep :], v[:, :, T - keep :], start + T - keep, keep
            first = start % self.slots
            if first + T > self.slots:  # wraps around the end of the window: two slices
                cut = self.slots - first
                self.keys[:, :, first:] = k[:, :, :cut]
                self.values[:, :, first:] = v[:, :, :cut]
                self.keys[:, :, : T - cut] = k[:, :, cut:]
                self.values[:, :, : T - cut] = v[:, :, cut:]
                return
            start = first
        elif self.ring:
            start %= self.slots
        if start + T > self.slots:
            raise ValueError(
                f"the cache holds {self.slots} positions; cannot write positions up to {start + T - 1}"
            )
        self.keys[:, :, start : start + T] = k
        self.values[:, :, start : start + T] = v

    def _allocate(self, k: Tensor, v: Tensor) -> None:
        """At the first write: ``(B, H, S, D)`` zeros with the batch, heads, dtype and device of ``k`` / ``v``."""
        if self.keys is None:
            B, H = k.shape[:2]
            self.keys = k.new_zeros((B, H, self.slots, k.shape[-1]))
            self.values = v.new_zeros((B, H, self.slots, v.shape[-1]))

    def write_one(self, k: Tensor, v: Tensor, position: int) -> None:
        """Store the key ``(B, H, D_qk)`` and value ``(B, H, D_v)`` of one position (a decoding step)."""
        self._allocate(k, v)
        assert self.keys is not None and self.values is not None
        slot = position % self.slots if self.ring else position
        if slot >= self.slots:
            raise ValueError(f"the cache holds {self.slots} positions; cannot write position {position}")
        self.keys[:, :, slot] = k
        self.values[:, :, slot] = v

    def memory_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.keys, self.values) if t is not None)


class KVCache:
    """Per-layer keys and values of a batch being decoded (see the module docstring).

    ``lookbacks[layer]`` is the layer's :meth:`~attention_patterns.AttentionPattern.max_lookback`
    (``None``: unbounded); ``capacity`` the longest sequence the cache serves.
    """

    def __init__(self, lookbacks: list[int | None], capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"cache capacity must be an integer >= 1, got {capacity!r}")
        self.capacity = capacity
        self.layers = []
        for back in lookbacks:
            window = capacity if back is None else min(capacity, back + 1)
            self.layers.append(LayerCache(slots=window, ring=window < capacity))
        self.length = 0  # positions written to every layer

    @classmethod
    def for_model(cls, model, capacity: int) -> KVCache:
        """An empty cache for ``model`` (a :class:`~zoo.model.SparseTransformer`), ``capacity`` positions."""
        comp = model.component
        return cls([comp.max_lookback(layer) for layer in range(len(model.blocks))], capacity)

    def memory_bytes(self) -> int:
        """Bytes held by the keys and values of every layer."""
        return sum(layer.memory_bytes() for layer in self.layers)

    def __repr__(self) -> str:
        windows = [f"{c.slots}{' (window)' if c.ring else ''}" for c in self.layers]
        return (
            f"KVCache(length={self.length}, capacity={self.capacity}, slots per layer={windows}, "
            f"memory={self.memory_bytes()} bytes)"
        )
