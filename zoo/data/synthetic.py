"""A deterministic, learnable synthetic byte data set, for tests and smoke runs (no files needed).

Each example is a "ramp" over its ``data_shape``: the byte at multi-index ``(i_1, ..., i_k)`` is
``(base + s_1 i_1 + ... + s_k i_k) mod vocab`` with a per-example ``base`` in ``[0, vocab)`` and
per-example slopes ``s_j`` in ``[0, max_slope]``, flattened in C (raster) order. After a few bytes
along each axis the rest is determined, so a causal model's loss falls well below the
``log2(vocab)`` bits of the marginal; ``noise`` replaces that fraction of bytes by uniform ones.
Everything is a pure function of ``seed``, so every call gives the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .base import DataBundle, register_dataset
from .tensor_dataset import ByteSequenceDataset

_OPTIONS = (
    "size",
    "val_size",
    "test_size",
    "seq_len",
    "data_shape",
    "vocab",
    "max_slope",
    "noise",
    "seed",
    "limit_train",
    "limit_val",
    "limit_test",
)


def ramps(
    n: int, data_shape: Sequence[int], vocab: int, max_slope: int, noise: float, generator: torch.Generator
) -> Tensor:
    """``n`` ramp examples as a ``(n, prod(data_shape))`` ``uint8`` tensor (see the module docstring)."""
    grids = torch.meshgrid(*[torch.arange(d) for d in data_shape], indexing="ij")
    coords = torch.stack([g.reshape(-1) for g in grids])  # (k, T)
    base = torch.randint(0, vocab, (n, 1), generator=generator)  # (n, 1)
    slopes = torch.randint(0, max_slope + 1, (n, len(data_shape)), generator=generator)  # (n, k)
    values = (base + slopes @ coords) % vocab  # (n, T)
    if noise > 0:
        flip = torch.rand(values.shape, generator=generator) < noise
        values = torch.where(flip, torch.randint(0, vocab, values.shape, generator=generator), values)
    return values.to(torch.uint8)


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


@register_dataset("synthetic")
def synthetic(
    size: int = 1024,
    val_size: int = 128,
    test_size: int = 128,
    seq_len: int = 64,
    data_shape: Sequence[int] | None = None,
    vocab: int = 16,
    max_slope: int = 3,
    noise: float = 0.0,
    seed: int = 0,
    limit_train: int | None = None,
    limit_val: int | None = None,
    limit_test: int | None = None,
    **unknown: Any,
) -> DataBundle:
    """Synthetic ramps of ``seq_len`` bytes; ``data_shape`` defaults to ``[seq_len]`` (1-D).

    ``limit_*`` cap the split sizes, as the same options subsample the file-based data sets.
    """
    if unknown:
        raise TypeError(
            f"unknown option(s) {sorted(unknown)} for data set 'synthetic'; "
            f"valid options are {list(_OPTIONS)}"
        )
    sizes = {
        k: _positive_int(k, v) for k, v in (("size", size), ("val_size", val_size), ("test_size", test_size))
    }
    for key, limit in (("size", limit_train), ("val_size", limit_val), ("test_size", limit_test)):
        if limit is not None:
            sizes[key] = min(sizes[key], _positive_int(f"limit for {key}", limit))
    _positive_int("seq_len", seq_len)
    shape = (
        [seq_len] if data_shape is None else [_positive_int("data_shape entry", int(d)) for d in data_shape]
    )
    if math.prod(shape) != seq_len:
        raise ValueError(
            f"data_shape {shape} has {math.prod(shape)} entries but seq_len is {seq_len}; they must match"
        )
    if not 2 <= _positive_int("vocab", vocab) <= 256:
        raise ValueError(f"vocab must be in [2, 256] (byte values), got {vocab}")
    _positive_int("max_slope", max_slope, minimum=0)
    if not 0.0 <= float(noise) <= 1.0:
        raise ValueError(f"noise must be a probability in [0, 1], got {noise!r}")
    splits = {}
    for offset, split in enumerate(("size", "val_size", "test_size")):  # one seeded stream per split
        gen = torch.Generator().manual_seed(seed * 3 + offset)
        splits[split] = ByteSequenceDataset(ramps(sizes[split], shape, vocab, max_slope, float(noise), gen))
    return DataBundle(
        train=splits["size"],
        val=splits["val_size"],
        test=splits["test_size"],
        seq_len=seq_len,
        data_shape=shape,
        name="synthetic",
        info={"vocab": vocab, "max_slope": max_slope, "noise": float(noise), "seed": seed},
    )
