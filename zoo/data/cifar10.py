"""CIFAR-10 (Krizhevsky 2009) as 3072-byte sequences (Child et al. 2019, §7.1).

Files: torchvision's layout, ``<root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``
(the pickled "python version" batches: a dict with ``data``, a ``(10000, 3072)`` ``uint8`` array
holding each image as its red, green and blue 32x32 planes, and ``labels``). With ``download: true``
a missing folder is fetched by ``torchvision.datasets.CIFAR10(download=True)`` (which checks the MD5
sums of what it downloads); an archive ``cifar-10-python.tar.gz`` already in the root is unpacked.
The batches are then read here directly (:func:`read_batch`), so copies that torchvision's MD5
check would reject (e.g. test fixtures) still load; ``verify_checksums: true`` restores that check.

Splits (the paper's): ``train`` = 48,000 and ``val`` = 2,000 images of the 50,000 training images,
the validation images chosen by ``torch.randperm(50000, generator=manual_seed(split_seed))[:2000]``
(``split_seed = 0``; both index sets sorted); ``test`` = the 10,000 test images, for the final
number only.

Byte order (``order``): ``interleaved`` (default, ``data_shape = [32, 32, 3]``: raster order, the
R, G, B bytes of a pixel next to each other) or ``planes`` (``[3, 32, 32]``: as stored, the whole
red plane, then green, then blue). The paper configs use ``interleaved``: the data embedding
(§5.3) adds a row, a column and a channel embedding to each byte, which both orders support, but
only in raster order is a byte's spatial neighbourhood -- the pixel to its left and the row above,
and the other channels of its own pixel -- within the recent past that the local ("row") part of
the strided pattern attends to (one image row = 96 bytes); in plane order the green byte of a pixel
is 1024 positions away from its red byte, so every channel plane would start without its own pixel's
other colours nearby.
"""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import DataBundle, register_dataset
from .common import (
    ORDERS,
    DataNotFoundError,
    check_choice,
    check_int,
    image_shape,
    planes_to_interleaved,
    reject_unknown,
    resolve_root,
    to_uint8,
)
from .tensor_dataset import ByteSequenceDataset

NAME = "cifar10"
BASE_FOLDER = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
META = "batches.meta"
CHANNELS, HEIGHT, WIDTH = 3, 32, 32
SEQ_LEN = CHANNELS * HEIGHT * WIDTH  # 3072
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

_OPTIONS = (
    "root",
    "download",
    "order",
    "val_size",
    "split_seed",
    "verify_checksums",
    "limit_train",
    "limit_val",
    "limit_test",
)


def _str_keys(entry: dict) -> dict[str, Any]:
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in entry.items()}


def read_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled CIFAR-10 batch -> ``(data (N, 3072) uint8 in plane order, labels (N,) int64)``.

    Raises ``ValueError`` naming the file when it is not such a batch.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            entry = pickle.load(fh, encoding="latin1")
    except (
        pickle.UnpicklingError,
        EOFError,
        AttributeError,
        ImportError,
        IndexError,
        KeyError,
        TypeError,
        ValueError,
    ) as err:
        raise ValueError(f"{path}: not a pickled CIFAR-10 batch ({type(err).__name__}: {err})") from err
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: a CIFAR-10 batch is a pickled dict, got {type(entry).__name__}")
    entry = _str_keys(entry)
    if "data" not in entry or "labels" not in entry:
        raise ValueError(
            f"{path}: a CIFAR-10 batch needs the keys 'data' and 'labels', found {sorted(entry)}"
        )
    data = np.asarray(entry["data"])
    if data.ndim != 2 or data.shape[1] != SEQ_LEN:
        raise ValueError(f"{path}: 'data' must have shape (N, {SEQ_LEN}), got {data.shape}")
    data = to_uint8(data, f"{path} 'data'")
    labels = np.asarray(entry["labels"], dtype=np.int64)
    if labels.shape != (data.shape[0],):
        raise ValueError(
            f"{path}: {labels.shape[0] if labels.ndim else 'scalar'} labels for {data.shape[0]} images"
        )
    return data, labels


def _has_batches(folder: Path) -> bool:
    return all((folder / name).is_file() for name in [*TRAIN_BATCHES, TEST_BATCH])


def _download(root: Path) -> None:
    from torchvision.datasets import CIFAR10

    CIFAR10(str(root), train=True, download=True)


def locate(root: Path, download: bool) -> Path:
    """The ``cifar-10-batches-py`` folder under ``root``: present, unpacked from the archive, or downloaded."""
    folder = root / BASE_FOLDER
    if _has_batches(folder):
        return folder
    archive = root / ARCHIVE
    if archive.is_file():
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(root, filter="data")
        except (tarfile.TarError, OSError, EOFError) as err:
            raise ValueError(
                f"{archive}: not a readable CIFAR-10 archive ({type(err).__name__}: {err}); delete it and retry"
            ) from err
        if _has_batches(folder):
            return folder
    if download:
        try:
            _download(root)
        # no network, a bad mirror, a read-only root...: all end in the message below
        except Exception as err:
            reason = f"torchvision's download failed ({type(err).__name__}: {err})"
        else:
            if _has_batches(folder):
                return folder
            reason = "torchvision's download finished but the batches are still missing"
    else:
        reason = "download is off (data.download=false)"
    missing = [n for n in [*TRAIN_BATCHES, TEST_BATCH] if not (folder / n).is_file()]
    raise DataNotFoundError(
        f"CIFAR-10 not found: the data root {root} has no {BASE_FOLDER}/ with all batches "
        f"(missing: {', '.join(missing)}); {reason}.\n"
        "Ways out:\n"
        f"  1. with network access, set data.download=true (torchvision fetches {URL} into {root});\n"
        f"  2. download {URL} yourself and put it in {root} (it is unpacked there) or unpack it so that "
        f"{folder}/data_batch_1 exists;\n"
        "  3. point data.root (or the ZOO_DATA_ROOT environment variable, used as ZOO_DATA_ROOT/cifar10) at "
        "the folder that holds cifar-10-batches-py/."
    )


def verify(folder: Path) -> None:
    """Compare every batch with torchvision's MD5 sums; ``ValueError`` names the first that differs."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity

    for name, md5 in CIFAR10.train_list + CIFAR10.test_list:
        if not check_integrity(str(folder / name), md5):
            raise ValueError(
                f"{folder / name} does not match the official CIFAR-10 MD5 {md5}: the file is corrupt or not the "
                "original; delete the folder and download again (or set data.verify_checksums=false)"
            )


def _limit(indices: np.ndarray, limit: int | None) -> np.ndarray:
    return indices if limit is None else indices[:limit]


@register_dataset(NAME)
def cifar10(
    root: str | None = None,
    download: bool = True,
    order: str = "interleaved",
    val_size: int = 2000,
    split_seed: int = 0,
    verify_checksums: bool = False,
    limit_train: int | None = None,
    limit_val: int | None = None,
    limit_test: int | None = None,
    **unknown: Any,
) -> DataBundle:
    """CIFAR-10 as ``(3072,)`` byte sequences with the paper's 48,000 / 2,000 / 10,000 split (§7.1).

    ``order`` is ``interleaved`` (``data_shape [32, 32, 3]``) or ``planes`` (``[3, 32, 32]``);
    ``limit_*`` keep the first ``k`` images of a split (for smoke runs).
    """
    reject_unknown(NAME, unknown, _OPTIONS)
    order = check_choice("order", order, ORDERS)
    limits = [
        check_int(k, v, low=1, allow_none=True)
        for k, v in (("limit_train", limit_train), ("limit_val", limit_val), ("limit_test", limit_test))
    ]
    check_int("split_seed", split_seed, low=0)
    folder = locate(resolve_root(root, NAME), bool(download))
    if verify_checksums:
        verify(folder)

    train_parts = [read_batch(folder / name) for name in TRAIN_BATCHES]
    train_x = np.concatenate([x for x, _ in train_parts])  # (50000, 3072) planes
    train_y = np.concatenate([y for _, y in train_parts])  # (50000,)
    test_x, test_y = read_batch(folder / TEST_BATCH)  # (10000, 3072), (10000,)
    n_train = train_x.shape[0]
    val_size = check_int("val_size", val_size, low=0, high=n_train - 1)
    if order == "interleaved":
        train_x = planes_to_interleaved(train_x, CHANNELS, HEIGHT, WIDTH)  # (50000, 3072) raster RGB
        test_x = planes_to_interleaved(test_x, CHANNELS, HEIGHT, WIDTH)

    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(split_seed)).numpy()
    val_idx, train_idx = np.sort(perm[:val_size]), np.sort(perm[val_size:])
    train_idx, val_idx = _limit(train_idx, limits[0]), _limit(val_idx, limits[1])
    test_idx = _limit(np.arange(test_x.shape[0]), limits[2])

    train_all = ByteSequenceDataset(torch.from_numpy(train_x), torch.from_numpy(train_y))
    test_all = ByteSequenceDataset(torch.from_numpy(test_x), torch.from_numpy(test_y))
    train = train_all.subset(torch.from_numpy(train_idx))
    val = train_all.subset(torch.from_numpy(val_idx))
    test = test_all.subset(torch.from_numpy(test_idx))
    return DataBundle(
        train=train,
        val=val,
        test=test,
        seq_len=SEQ_LEN,
        data_shape=image_shape(order, CHANNELS, HEIGHT, WIDTH),
        name=NAME,
        info={
            "source": str(folder),
            "byte_order": order,
            "bits_per": "dim",
            "classes": CLASSES,
            "splits": {"train": len(train), "val": len(val), "test": len(test)},
            "val_from": f"{val_size} training images, torch.randperm seed {split_seed}",
        },
    )
