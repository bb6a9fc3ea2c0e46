"""Downsampled ImageNet 64x64 (Chrabaszcz et al. 2017; van den Oord et al. 2016) as 12,288-byte sequences (§7.3).

Files (downloaded by the user from https://image-net.org/download-images.php, "Downsampled
ImageNet 64x64", after registering): the ``.npz`` batches ``train_data_batch_1.npz`` ..
``train_data_batch_10.npz`` and ``val_data.npz`` (also found under the names
``Imagenet64_train*.npz`` / ``Imagenet64_val*.npz``, anywhere up to two folders below the root).
Each holds ``data``, an ``(N, 12288)`` ``uint8`` array of images stored as their red, green and
blue 64x64 planes, and ``labels`` (unused: the model is unconditional).

Memory: an ``.npz`` is a zip archive, and ``np.load(..., mmap_mode='r')`` cannot map an array
inside one (each batch would be read whole, 15 GB for the 1.28M training images). So on first use
the batches are streamed, 64 MB at a time, into one ``uint8`` ``(N, 12288)`` ``.npy`` cache per
split (``imagenet64_train.npy`` / ``imagenet64_val.npy`` next to the data, or in ``cache_dir``),
which is then memory-mapped: a run holds only the rows it reads. A JSON file next to each cache
lists the source files with their sizes and modification times; when they change the cache is
rebuilt. Building is atomic and locked, so DDP ranks starting together build it once.

Splits: as in the paper (and the prior work it compares with), the official 50,000-image
validation set is the ``test`` set. The paper does not say what it validated on; here ``val`` is
``val_size`` (10,000) training images held out with ``torch.randperm(N, seed=split_seed)``, and
``train`` the remaining ones. ``val_size: 0`` trains on all training images and uses the official
validation set for both ``val`` and ``test``.

Byte order (``order``): ``interleaved`` (default, raster order with R, G, B per pixel,
``data_shape = [64, 64, 3]``, the order that keeps a pixel's neighbourhood local; see
:mod:`zoo.data.cifar10`) or ``planes`` (as stored, ``[3, 64, 64]``). Interleaving is done per image
as it is read.
"""

from __future__ import annotations

import functools
import re
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from .base import DataBundle, register_dataset
from .common import (
    ORDERS,
    DataNotFoundError,
    NpyRows,
    build_cache,
    check_choice,
    check_int,
    file_signature,
    image_shape,
    planes_to_interleaved,
    reject_unknown,
    resolve_root,
    to_uint8,
)

NAME = "imagenet64"
CHANNELS, HEIGHT, WIDTH = 3, 64, 64
SEQ_LEN = CHANNELS * HEIGHT * WIDTH  # 12288
TRAIN_PATTERNS = ("train_data_batch_*.npz", "Imagenet64_train*.npz")
VAL_PATTERNS = ("val_data.npz", "Imagenet64_val*.npz")
URL = "https://image-net.org/download-images.php"
CHUNK_BYTES = 64 * 2**20  # bytes streamed per read while building the cache
CACHE_FORMAT = 1

_OPTIONS = ("root", "cache_dir", "order", "val_size", "split_seed", "limit_train", "limit_val", "limit_test")


def _natural_key(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def find_batches(root: Path, patterns: tuple[str, ...]) -> list[Path]:
    """Files matching ``patterns`` in ``root`` or up to two folders below, in natural order (batch_2 < batch_10)."""
    found: set[Path] = set()
    for depth in ("", "*/", "*/*/"):
        for pattern in patterns:
            found.update(p for p in root.glob(depth + pattern) if p.is_file())
    return sorted(found, key=_natural_key)


def _open_data_member(path: Path) -> tuple[zipfile.ZipFile, BinaryIO, tuple[int, ...], np.dtype, bool]:
    """Open the ``data`` array inside an ``.npz`` and read its ``.npy`` header (the stream is left at the data)."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise ValueError(f"{path}: not an .npz archive ({type(err).__name__}: {err})") from err
    names = archive.namelist()
    if "data.npy" not in names:
        archive.close()
        keys = [n.removesuffix(".npy") for n in names]
        raise ValueError(f"{path}: a downsampled-ImageNet batch needs the array 'data', found {keys}")
    stream = archive.open("data.npy")
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except ValueError as err:
        stream.close()
        archive.close()
        raise ValueError(f"{path}: 'data' is not a readable .npy array ({err})") from err
    return archive, stream, tuple(shape), np.dtype(dtype), bool(fortran)


def batch_rows(path: Path) -> int:
    """Number of images in one ``.npz`` batch, from its header only; ``ValueError`` for a wrong layout."""
    archive, stream, shape, dtype, _ = _open_data_member(path)
    stream.close()
    archive.close()
    if len(shape) != 2 or shape[1] != SEQ_LEN:
        raise ValueError(f"{path}: 'data' must have shape (N, {SEQ_LEN}) (64x64 RGB planes), got {shape}")
    if dtype.kind not in "ui":
        raise ValueError(f"{path}: 'data' must hold bytes (uint8), got dtype {dtype}")
    return int(shape[0])


def copy_batch(path: Path, out: np.ndarray, start: int) -> int:
    """Stream the ``data`` rows of ``path`` into ``out[start:]`` in 64 MB pieces; returns the row count."""
    archive, stream, shape, dtype, fortran = _open_data_member(path)
    try:
        n = int(shape[0])
        if fortran:  # column-major data cannot be streamed by rows: load it (never so in the official files)
            stream.close()
            with np.load(path) as npz:
                out[start : start + n] = to_uint8(np.asarray(npz["data"]), f"{path} 'data'")
            return n
        row_bytes = SEQ_LEN * dtype.itemsize
        step = max(1, CHUNK_BYTES // row_bytes)
        for first in range(0, n, step):
            count = min(step, n - first)
            raw = stream.read(count * row_bytes)
            if len(raw) != count * row_bytes:
                raise ValueError(
                    f"{path}: 'data' is truncated ({first + len(raw) // row_bytes} of {n} rows readable)"
                )
            rows = np.frombuffer(raw, dtype=dtype).reshape(count, SEQ_LEN)  # (count, 12288)
            out[start + first : start + first + count] = to_uint8(rows, f"{path} 'data'")
        return n
    finally:
        stream.close()
        archive.close()


def cached_split(files: list[Path], cache: Path, root: Path) -> Path:
    """The ``(N, 12288)`` ``uint8`` ``.npy`` cache of ``files`` (built once, see the module docstring)."""
    counts = [batch_rows(p) for p in files]
    meta = {"format": CACHE_FORMAT, "sources": file_signature(files, root), "rows": counts}

    def fill(out: np.ndarray) -> None:
        start = 0
        for path, count in zip(files, counts):
            if copy_batch(path, out, start) != count:
                raise ValueError(f"{path} changed while the cache was being built")
            start += count

    return build_cache(cache, meta, (sum(counts), SEQ_LEN), fill, what="the downsampled-ImageNet cache")


def _missing(root: Path, what: str, patterns: tuple[str, ...]) -> DataNotFoundError:
    return DataNotFoundError(
        f"ImageNet 64x64 {what} batches not found: no file matching {' or '.join(patterns)} in the data root {root} "
        "(or up to two folders below it).\n"
        f"Download 'Downsampled ImageNet 64x64' (npz format: Imagenet64_train_part1/part2 and Imagenet64_val) from {URL} "
        f"after registering, unpack it into {root}, or point data.root (or ZOO_DATA_ROOT, used as ZOO_DATA_ROOT/imagenet64) "
        "at the folder that holds the .npz files."
    )


@register_dataset(NAME)
def imagenet64(
    root: str | None = None,
    cache_dir: str | None = None,
    order: str = "interleaved",
    val_size: int = 10000,
    split_seed: int = 0,
    limit_train: int | None = None,
    limit_val: int | None = None,
    limit_test: int | None = None,
    **unknown: Any,
) -> DataBundle:
    """ImageNet 64x64 as ``(12288,)`` byte sequences, memory-mapped from a ``.npy`` cache of the ``.npz`` batches.

    ``order``: ``interleaved`` (``data_shape [64, 64, 3]``) or ``planes`` (``[3, 64, 64]``);
    ``cache_dir``: where the caches go (default: the folder of the first training batch);
    ``limit_*``: keep the first ``k`` images of a split (for smoke runs).
    """
    reject_unknown(NAME, unknown, _OPTIONS)
    order = check_choice("order", order, ORDERS)
    limits = [
        check_int(k, v, low=1, allow_none=True)
        for k, v in (("limit_train", limit_train), ("limit_val", limit_val), ("limit_test", limit_test))
    ]
    check_int("split_seed", split_seed, low=0)
    data_root = resolve_root(root, NAME)
    if not data_root.is_dir():
        raise _missing(data_root, "training", TRAIN_PATTERNS)
    train_files = find_batches(data_root, TRAIN_PATTERNS)
    val_files = find_batches(data_root, VAL_PATTERNS)
    if not train_files:
        raise _missing(data_root, "training", TRAIN_PATTERNS)
    if not val_files:
        raise _missing(data_root, "validation", VAL_PATTERNS)
    folder = resolve_root(cache_dir, NAME, "data.cache_dir") if cache_dir else train_files[0].parent
    train_npy = cached_split(train_files, folder / "imagenet64_train.npy", data_root)
    val_npy = cached_split(val_files, folder / "imagenet64_val.npy", data_root)

    transform = (
        functools.partial(planes_to_interleaved, channels=CHANNELS, height=HEIGHT, width=WIDTH)
        if order == "interleaved"
        else None
    )
    n_train = NpyRows(train_npy).num_rows
    val_size = check_int("val_size", val_size, low=0, high=n_train - 1)
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(split_seed)).numpy()
    held_idx, train_idx = np.sort(perm[:val_size]), np.sort(perm[val_size:])
    n_test = NpyRows(val_npy).num_rows

    def rows(path: Path, indices: np.ndarray, limit: int | None) -> NpyRows:
        return NpyRows(path, indices if limit is None else indices[:limit], transform)

    train = rows(train_npy, train_idx, limits[0])
    test = rows(val_npy, np.arange(n_test), limits[2])
    val = rows(train_npy, held_idx, limits[1]) if val_size else rows(val_npy, np.arange(n_test), limits[1])
    return DataBundle(
        train=train,
        val=val,
        test=test,
        seq_len=SEQ_LEN,
        data_shape=image_shape(order, CHANNELS, HEIGHT, WIDTH),
        name=NAME,
        info={
            "source": str(data_root),
            "cache": [str(train_npy), str(val_npy)],
            "byte_order": order,
            "bits_per": "dim",
            "splits": {"train": len(train), "val": len(val), "test": len(test)},
            "val_from": (
                f"{val_size} training images, torch.randperm seed {split_seed}"
                if val_size
                else "the official validation set (same as test)"
            ),
            "test_from": "the official 50,000-image validation set (as in the paper)",
        },
    )
