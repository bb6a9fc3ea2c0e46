"""Fashion-MNIST (Xiao et al. 2017) as 784-byte sequences: the embedded default data set.

Each 28x28 grayscale image is read in raster order (row by row), giving ``seq_len = 784`` bytes
with ``data_shape = [28, 28]``, the 2-D image layout the Sparse Transformer's strided pattern
(stride 28 = one row) and data embeddings (row, column; Child et al. 2019, §5.3) are made for.

Where the files come from, in this order (the first that has all four idx files wins):

1. the configured data root (``root``; also ``root/fashion-mnist`` and ``root/FashionMNIST/raw``);
2. the system copy of Debian's ``dataset-fashion-mnist`` package, ``/usr/share/datasets/fashion-mnist``;
3. torchvision's ``FashionMNIST(root, download=True)``, which writes ``root/FashionMNIST/raw``.

If all three fail, a ``DataNotFoundError`` (a ``FileNotFoundError``) names exactly these three ways
out. The idx files (``.gz`` or uncompressed) are parsed here (:func:`read_idx`), so no torchvision
is needed to read them.

Splits: ``train`` = the 60,000 training images minus a seeded held-out ``val`` set (2,000 by
default), ``test`` = the 10,000 test images. ``limit_*`` subsample a split (seeded) for speed.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .base import DataBundle, register_dataset
from .common import DataNotFoundError, check_folder
from .tensor_dataset import ByteSequenceDataset

SYSTEM_ROOT = "/usr/share/datasets/fashion-mnist"
DEBIAN_PACKAGE = "dataset-fashion-mnist"
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
IMAGE_SHAPE = [28, 28]
SEQ_LEN = 28 * 28

# idx type codes (http://yann.lecun.com/exdb/mnist/): only unsigned bytes occur in (Fashion-)MNIST.
_IDX_UBYTE = 0x08
_IDX_TYPES = {0x08: "ubyte", 0x09: "byte", 0x0B: "short", 0x0C: "int", 0x0D: "float", 0x0E: "double"}


def read_idx(path: str | os.PathLike) -> Tensor:
    """Parse an idx file (gzip-compressed or not) of unsigned bytes into a ``uint8`` tensor.

    Layout: two zero bytes, a type code (``0x08`` = unsigned byte), the number of dimensions ``k``,
    ``k`` big-endian ``int32`` sizes, then the data in C order. Raises ``ValueError`` naming the file
    for a bad magic number, an unsupported type or a size that does not match the header.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        raw = fh.read()
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file name says
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an idx file (the first two bytes must be zero, got {raw[:4]!r})")
    type_code, ndim = raw[2], raw[3]
    if type_code != _IDX_UBYTE:
        kind = _IDX_TYPES.get(type_code, "unknown")
        raise ValueError(
            f"{path}: idx type code {type_code:#04x} ({kind}) is not supported; only 0x08 (ubyte) is"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated idx header ({len(raw)} bytes for {ndim} dimensions)")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = 1
    for d in dims:
        expected *= d
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: idx header says shape {dims} ({expected} bytes) "
            f"but {len(raw) - header} data bytes follow"
        )
    data = (
        torch.frombuffer(bytearray(raw[header:]), dtype=torch.uint8)
        if expected
        else torch.empty(0, dtype=torch.uint8)
    )
    return data.reshape(dims)


def _file_in(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def find_files(directory: str | os.PathLike) -> dict[str, Path] | None:
    """The four idx files in ``directory`` (each plain or ``.gz``), or ``None`` if any is missing."""
    directory = Path(directory)
    found = {key: _file_in(directory, stem) for key, stem in FILES.items()}
    if any(p is None for p in found.values()):
        return None
    return found  # type: ignore[return-value]


def root_candidates(root: str | os.PathLike) -> list[Path]:
    """Folders under the data root that may hold the files, in search order."""
    root = Path(root).expanduser().absolute()
    return [root, root / "fashion-mnist", root / "fashion_mnist", root / "FashionMNIST" / "raw"]


def torchvision_download(root: Path) -> Path:
    """Download with torchvision into ``root/FashionMNIST/raw`` and return that folder."""
    from torchvision.datasets import FashionMNIST

    FashionMNIST(str(root), train=True, download=True)  # fetches all four files
    return root / "FashionMNIST" / "raw"


def locate(
    root: str | os.PathLike, system_root: str | os.PathLike | None = SYSTEM_ROOT, download: bool = True
) -> dict[str, Path]:
    """Find the four idx files: data root, then the Debian system copy, then torchvision's download.

    Raises :class:`~zoo.data.common.DataNotFoundError` (a ``FileNotFoundError``) listing where it looked
    and the three ways out.
    """
    root = Path(root).expanduser().absolute()
    check_folder(root, "Fashion-MNIST")  # e.g. data.root=.../train-images-idx3-ubyte.gz
    for directory in root_candidates(root):
        found = find_files(directory)
        if found is not None:
            return found
    if system_root:
        found = find_files(system_root)
        if found is not None:
            return found
    reason = "skipped (download=false)"
    if download:
        try:
            found = find_files(torchvision_download(root))
        except Exception as err:  # no network, no torchvision, a bad mirror...: all end in the message below
            reason = f"failed: {type(err).__name__}: {err}"
        else:
            if found is not None:
                return found
            reason = "finished but the four files are still missing"
    names = ", ".join(f"{stem}[.gz]" for stem in FILES.values())
    looked = ", ".join(str(p) for p in root_candidates(root))
    raise DataNotFoundError(
        f"Fashion-MNIST not found: none of {looked} nor the system copy {system_root} holds all of {names}; "
        f"torchvision's download into {root / 'FashionMNIST' / 'raw'} {reason}.\n"
        "Three ways out:\n"
        "  1. put the four idx files (from https://github.com/zalandoresearch/fashion-mnist) "
        "in the data root "
        f"{root} (set it with data.root=PATH or the ZOO_DATA_ROOT environment variable);\n"
        f"  2. install Debian's package, which puts them in {SYSTEM_ROOT}: "
        f"sudo apt-get install {DEBIAN_PACKAGE};\n"
        "  3. allow network access with data.download=true so torchvision downloads them into "
        f"{root}/FashionMNIST/raw."
    )


def _check_limit(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer or null (no limit), got {value!r}")
    return value


_OPTIONS = (
    "root",
    "system_root",
    "download",
    "val_size",
    "split_seed",
    "limit_train",
    "limit_val",
    "limit_test",
)


@register_dataset("fashion_mnist")
def fashion_mnist(
    root: str = "data",
    system_root: str | None = SYSTEM_ROOT,
    download: bool = True,
    val_size: int = 2000,
    split_seed: int = 0,
    limit_train: int | None = None,
    limit_val: int | None = None,
    limit_test: int | None = None,
    **unknown: Any,
) -> DataBundle:
    """Fashion-MNIST as ``(784,)`` byte sequences, ``data_shape = [28, 28]``.

    ``val_size`` images are held out of the 60,000 training images (seeded by ``split_seed``);
    ``limit_train`` / ``limit_val`` / ``limit_test`` keep a seeded random subset of a split.
    """
    if unknown:
        raise TypeError(
            f"unknown option(s) {sorted(unknown)} for data set 'fashion_mnist'; "
            f"valid options are {list(_OPTIONS)}"
        )
    limits = {
        k: _check_limit(k, v)
        for k, v in (("limit_train", limit_train), ("limit_val", limit_val), ("limit_test", limit_test))
    }
    files = locate(root, system_root, download)
    train_x, train_y = (
        read_idx(files["train_images"]),
        read_idx(files["train_labels"]),
    )  # (60000, 28, 28), (60000,)
    test_x, test_y = (
        read_idx(files["test_images"]),
        read_idx(files["test_labels"]),
    )  # (10000, 28, 28), (10000,)
    for x, y, split in ((train_x, train_y, "train"), (test_x, test_y, "test")):
        if x.dim() != 3 or list(x.shape[1:]) != IMAGE_SHAPE or y.shape != x.shape[:1]:
            raise ValueError(
                f"Fashion-MNIST {split} files in {files[split + '_images'].parent} have images "
                f"{tuple(x.shape)} and labels "
                f"{tuple(y.shape)}; expected (N, 28, 28) and (N,)"
            )
    n_train = train_x.shape[0]
    if isinstance(val_size, bool) or not isinstance(val_size, int) or not 0 <= val_size < n_train:
        raise ValueError(f"val_size must be an integer in [0, {n_train}), got {val_size!r}")
    train_all = ByteSequenceDataset(train_x.reshape(n_train, SEQ_LEN), train_y)
    test_all = ByteSequenceDataset(test_x.reshape(test_x.shape[0], SEQ_LEN), test_y)

    gen = torch.Generator().manual_seed(split_seed)
    order = torch.randperm(n_train, generator=gen)
    val_idx, train_idx = order[:val_size], order[val_size:]
    if limits["limit_train"] is not None:
        train_idx = train_idx[: limits["limit_train"]]
    if limits["limit_val"] is not None:
        val_idx = val_idx[: limits["limit_val"]]
    if limits["limit_test"] is None:
        test_idx = torch.arange(len(test_all))  # the whole test set in its canonical order
    else:
        test_idx = torch.randperm(len(test_all), generator=gen)[: limits["limit_test"]]
    return DataBundle(
        train=train_all.subset(train_idx),
        val=train_all.subset(val_idx),
        test=test_all.subset(test_idx),
        seq_len=SEQ_LEN,
        data_shape=list(IMAGE_SHAPE),
        name="fashion_mnist",
        info={
            "source": str(files["train_images"].parent),
            "classes": CLASSES,
            "byte_order": "raster (row-major)",
        },
    )
