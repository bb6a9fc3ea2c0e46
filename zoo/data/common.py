"""Shared pieces of the on-disk data loaders (CIFAR-10, ImageNet 64x64, enwik8, audio).

* :func:`resolve_root` -- where a data set lives (``root`` option, else ``$ZOO_DATA_ROOT/<name>``,
  else ``data/<name>``), and :class:`DataNotFoundError`, the one error type for "the files are not
  there", whose message names the folder looked in and how to get the data.
* Option checks with messages naming the bad value and the valid ones (:func:`reject_unknown`,
  :func:`check_int`, :func:`check_choice`, :func:`check_split`, :func:`to_uint8`).
* Byte order of images (:data:`ORDERS`): ``planes`` (R plane, G plane, B plane: how CIFAR-10 and
  downsampled ImageNet store pixels) or ``interleaved`` (raster order, R G B per pixel).
* Memory-mapped data sets, safe to pickle into ``DataLoader`` workers (the memmap is opened lazily
  in each process and never pickled): :class:`NpyRows` (rows of a 2-D ``.npy``),
  :class:`RandomWindows` and :class:`EvalWindows` (windows of a 1-D byte stream).
* :func:`build_cache` -- write a ``.npy`` cache once, atomically (temporary file, then rename), under
  a file lock so that several DDP ranks starting together build it only once.

All items are ``torch.long`` tensors of shape ``(seq_len,)`` with values 0..255 (see
:mod:`zoo.data.base`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

ROOT_ENV = "ZOO_DATA_ROOT"
ORDERS = ("interleaved", "planes")


class DataNotFoundError(FileNotFoundError):
    """The files of a data set are not where the loader looked; the message says where and what to do."""


# --------------------------------------------------------------------------- options


def resolve_root(root: str | os.PathLike | None, name: str, option: str = "data.root") -> Path:
    """The data set folder: ``root`` if given, else ``$ZOO_DATA_ROOT/<name>``, else ``./data/<name>``.

    A path that names a file raises :class:`DataNotFoundError` saying so (``option`` names the setting).
    """
    if root is None or str(root) == "":
        root = Path(os.environ.get(ROOT_ENV, "data")) / name
    path = Path(os.path.expandvars(str(root))).expanduser().absolute()
    check_folder(path, name, option)
    return path


def check_folder(path: Path, name: str, option: str = "data.root") -> None:
    """Raise :class:`DataNotFoundError` if ``path`` is a file: the data options name folders."""
    if path.is_file():
        raise DataNotFoundError(
            f"{option}={path} is a file, not a folder: point {option} at the folder that holds the {name} "
            f"files (here perhaps {option}={path.parent})"
        )


def not_text(path: Path, sample: int = 1 << 16) -> str | None:
    """Why the file at ``path`` does not look like text (a PNG given as enwik8, say), or ``None``.

    Looks at the first ``sample`` bytes: control bytes other than tab / newline / carriage return, and
    whether they decode as UTF-8 (a multi-byte character cut at the end of the sample is fine).
    """
    with open(path, "rb") as fh:
        head = fh.read(sample)
    if not head:
        return None
    control = sum(1 for b in head if b < 32 and b not in (9, 10, 13))
    reasons = []
    if control > len(head) // 100:  # real text (enwik8's XML) has none
        reasons.append(f"{control / len(head):.0%} of its first {len(head):,} bytes are control or NUL bytes")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 3:
            reasons.append(f"it is not UTF-8 from byte {err.start:,} on")
    return "; ".join(reasons) or None


def reject_unknown(dataset: str, unknown: dict[str, Any], valid: Sequence[str]) -> None:
    """Raise ``TypeError`` naming unknown options of ``dataset`` and the valid ones."""
    if unknown:
        raise TypeError(
            f"unknown option(s) {sorted(unknown)} for data set {dataset!r}; valid options are {list(valid)}"
        )


def check_int(
    name: str, value: Any, low: int | None = None, high: int | None = None, allow_none: bool = False
) -> Any:
    """``value`` as an int in ``[low, high]`` (``None`` passes if ``allow_none``), else ``ValueError``."""
    if value is None and allow_none:
        return None
    bounds = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        extra = " or null" if allow_none else ""
        raise ValueError(f"{name} must be an integer in {bounds}{extra}, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be an integer in {bounds}, got {value}")
    return int(value)


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return str(value)


def check_split(name: str, fractions: Any) -> tuple[float, float, float]:
    """Three non-negative train/val/test fractions summing to 1 (within 1e-6); train must be positive."""
    try:
        values = tuple(float(f) for f in fractions)
    except TypeError as err:
        raise ValueError(
            f"{name} must be a list of three fractions [train, val, test], got {fractions!r}"
        ) from err
    if len(values) != 3 or any(not np.isfinite(v) or v < 0 for v in values) or values[0] <= 0:
        raise ValueError(
            f"{name} must be three non-negative fractions [train, val, test] with train > 0, got {list(fractions)}"
        )
    if abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(f"{name} fractions must sum to 1, got {list(values)} (sum {sum(values)})")
    return values  # type: ignore[return-value]


def split_sizes(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Integer train/val/test sizes: ``val = floor(n * f_val)``, ``test = floor(n * f_test)``, train = the rest.

    For the 100,000,000-byte enwik8 file and ``(0.9, 0.05, 0.05)`` this is exactly 90M / 5M / 5M.
    """
    n_val = int(np.floor(n * fractions[1] + 1e-9))
    n_test = int(np.floor(n * fractions[2] + 1e-9))
    return n - n_val - n_test, n_val, n_test


def to_uint8(array: np.ndarray, what: str) -> np.ndarray:
    """``array`` as ``uint8``; integer arrays must hold values in 0..255, other dtypes are refused."""
    if array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{what}: expected bytes (uint8 values 0..255), got dtype {array.dtype}")
    if array.size:
        lo, hi = int(array.min()), int(array.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"{what}: byte values must lie in 0..255, found values from {lo} to {hi}")
    return array.astype(np.uint8)


# --------------------------------------------------------------------------- image byte order


def image_shape(order: str, channels: int, height: int, width: int) -> list[int]:
    """``data_shape`` of one image: ``[H, W, C]`` for interleaved bytes, ``[C, H, W]`` for planes."""
    check_choice("order", order, ORDERS)
    return [height, width, channels] if order == "interleaved" else [channels, height, width]


def planes_to_interleaved(rows: np.ndarray, channels: int, height: int, width: int) -> np.ndarray:
    """``(..., C*H*W)`` bytes in plane order -> ``(..., H*W*C)`` in raster order with channels interleaved."""
    lead = rows.shape[:-1]
    images = rows.reshape(*lead, channels, height, width)  # (..., C, H, W)
    return np.ascontiguousarray(np.moveaxis(images, -3, -1)).reshape(*lead, height * width * channels)


# --------------------------------------------------------------------------- memory-mapped data sets


class _LazyMemmap:
    """Opens a ``.npy`` (``np.load(mmap_mode='r')``) or raw byte file (``np.memmap``) on first use.

    The open map is dropped when pickled, so ``DataLoader`` workers (fork or spawn) each map the
    file themselves instead of receiving a copy of its contents.
    """

    def __init__(self, path: str | os.PathLike, raw: bool = False) -> None:
        self.path = str(path)
        self.raw = raw
        self._array: np.ndarray | None = None

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            if self.raw:
                self._array = np.memmap(self.path, dtype=np.uint8, mode="r")
            else:
                self._array = np.load(self.path, mmap_mode="r")
        return self._array

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "raw": self.raw, "_array": None}


class NpyRows(Dataset):
    """Rows of a 2-D ``uint8`` ``.npy`` file, memory-mapped, as ``torch.long`` sequences ``(seq_len,)``.

    ``indices`` selects (and orders) the rows of this split; ``transform`` maps one ``uint8`` row to
    another (e.g. :func:`planes_to_interleaved`) before it becomes a tensor.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        indices: np.ndarray | None = None,
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self._map = _LazyMemmap(path)
        array = self._map.array
        if array.ndim != 2 or array.dtype != np.uint8:
            raise ValueError(
                f"{path}: expected a 2-D uint8 array, got dtype {array.dtype} shape {array.shape}"
            )
        self.num_rows, self.seq_len = int(array.shape[0]), int(array.shape[1])
        self.indices = None if indices is None else np.asarray(indices, dtype=np.int64)
        if (
            self.indices is not None
            and self.indices.size
            and (self.indices.min() < 0 or self.indices.max() >= self.num_rows)
        ):
            raise IndexError(f"row indices out of range for {path} with {self.num_rows} rows")
        self.transform = transform

    def __len__(self) -> int:
        return self.num_rows if self.indices is None else int(self.indices.shape[0])

    def __getitem__(self, index: int) -> Tensor:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a split of {len(self)} sequences")
        row = int(index) if self.indices is None else int(self.indices[index])
        data = np.array(self._map.array[row])  # (T,) uint8, copied out of the map
        if self.transform is not None:
            data = self.transform(data)
        return torch.from_numpy(data).long()  # (T,)

    def __repr__(self) -> str:
        return f"NpyRows({self._map.path!r}, n={len(self)}, seq_len={self.seq_len})"


def _check_stream(length: int, seq_len: int, what: str) -> None:
    if length < seq_len:
        raise ValueError(
            f"{what} holds {length:,} bytes, fewer than one window of seq_len={seq_len:,}; "
            "use a shorter seq_len or more data"
        )


class RandomWindows(Dataset):
    """Training windows of ``seq_len`` bytes at random starts in ``[offset, offset + length)`` of a byte file.

    Item ``i`` of epoch ``e`` starts at a position drawn from ``np.random.default_rng((seed, e, i))``:
    the same (seed, epoch, index) always gives the same window, whichever worker or rank reads it, so
    runs are reproducible and a resumed run sees the windows of an uninterrupted one. Call
    :meth:`set_epoch` at the start of every epoch (like ``DistributedSampler.set_epoch``) for fresh
    windows; ``len()`` is the number of windows per epoch.
    """

    def __init__(
        self, path: str | os.PathLike, offset: int, length: int, seq_len: int, num_windows: int, seed: int = 0
    ) -> None:
        _check_stream(length, seq_len, f"the training split of {path}")
        self._map = _LazyMemmap(path, raw=True)
        self.offset, self.length, self.seq_len = int(offset), int(length), int(seq_len)
        self.num_windows = check_int("windows_per_epoch", num_windows, low=1)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = check_int("epoch", epoch, low=0)

    def start(self, index: int) -> int:
        """Absolute byte offset of window ``index`` in the current epoch."""
        rng = np.random.default_rng((self.seed, self.epoch, int(index)))
        return self.offset + int(rng.integers(0, self.length - self.seq_len + 1))

    def __len__(self) -> int:
        return self.num_windows

    def __getitem__(self, index: int) -> Tensor:
        if not 0 <= index < self.num_windows:
            raise IndexError(f"index {index} out of range for {self.num_windows} windows per epoch")
        s = self.start(index)
        return torch.from_numpy(np.array(self._map.array[s : s + self.seq_len])).long()  # (T,)


def eval_windows(length: int, seq_len: int, min_context: int = 0) -> list[tuple[int, int]]:
    """Windows ``(start, scored_from)`` covering a stream of ``length`` bytes, each byte scored once.

    Window ``k`` holds bytes ``[start, start + seq_len)``; its positions ``>= scored_from`` are the
    ones to score. With ``min_context = 0`` the windows are non-overlapping (every ``scored_from`` is
    0) except the last, which ends at the end of the stream and scores only the bytes not yet
    covered. With ``min_context = m > 0`` the windows advance by ``seq_len - m`` and every scored
    byte after the first window sees at least ``m`` bytes of context (paper, enwik8 Table 3).
    """
    _check_stream(length, seq_len, "the evaluation split")
    check_int("min_context", min_context, low=0, high=seq_len - 1)
    windows = [(0, 0)]
    covered = seq_len  # bytes [0, covered) are scored
    while covered < length:
        start = min(covered - min_context, length - seq_len)
        windows.append((start, covered - start))
        covered = start + seq_len
    return windows


class EvalWindows(Dataset):
    """Evaluation windows over a split ``[offset, offset + length)`` of a byte file (:func:`eval_windows`).

    Item ``k`` is the window's bytes; :meth:`scored_from` says from which position on its
    predictions count, so that the loss summed over ``positions >= scored_from(k)`` of all windows
    covers every byte of the split exactly once (total :attr:`num_scored` = ``length``).
    """

    def __init__(
        self, path: str | os.PathLike, offset: int, length: int, seq_len: int, min_context: int = 0
    ) -> None:
        self._map = _LazyMemmap(path, raw=True)
        self.offset, self.length, self.seq_len = int(offset), int(length), int(seq_len)
        self.min_context = int(min_context)
        windows = eval_windows(self.length, self.seq_len, self.min_context)
        self.starts = np.array([s for s, _ in windows], dtype=np.int64)
        self.scored = np.array([f for _, f in windows], dtype=np.int64)

    @property
    def num_scored(self) -> int:
        return int(sum(self.seq_len - f for f in self.scored))

    def scored_from(self, index: int) -> int:
        return int(self.scored[index])

    def score_mask(self, index: int) -> Tensor:
        """``(seq_len,)`` bool: the positions of window ``index`` whose loss counts."""
        return torch.arange(self.seq_len) >= self.scored_from(index)

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    def __getitem__(self, index: int) -> Tensor:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} evaluation windows")
        s = self.offset + int(self.starts[index])
        return torch.from_numpy(np.array(self._map.array[s : s + self.seq_len])).long()  # (T,)


# --------------------------------------------------------------------------- caches


def file_signature(paths: Sequence[Path], base: Path) -> list[list[Any]]:
    """``[relative path, size, mtime_ns]`` of each file: a cache built from them is stale when this changes."""
    out = []
    for p in paths:
        st = p.stat()
        out.append(
            [str(p.relative_to(base)) if p.is_relative_to(base) else str(p), st.st_size, st.st_mtime_ns]
        )
    return out


def short_hash(obj: Any) -> str:
    """A 16-hex-digit SHA-1 of ``obj``'s sorted JSON: a cache file name that changes with its inputs."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``fcntl`` lock on ``path`` (no-op where ``fcntl`` does not exist)."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock; concurrent builders then each write their own temporary file
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def writable_dir(directory: Path, what: str) -> Path:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PermissionError(
            f"cannot create the cache folder {directory} for {what} ({err}); set data.cache_dir to a writable folder"
        ) from err
    if not os.access(directory, os.W_OK):
        raise PermissionError(
            f"the cache folder {directory} for {what} is not writable; set data.cache_dir to a writable folder"
        )
    return directory


def build_cache(
    path: Path,
    meta: dict[str, Any],
    shape: tuple[int, ...],
    fill: Callable[[np.ndarray], None],
    what: str,
) -> Path:
    """Make sure ``path`` is a ``uint8`` ``.npy`` of ``shape`` built from ``meta``; build it with ``fill`` if not.

    The cache is valid when ``path`` and ``path + '.json'`` exist, the JSON equals ``meta`` and the
    array has ``shape``. Otherwise ``fill(out)`` writes into a memory-mapped temporary ``.npy``
    (never the whole array in RAM), which is then renamed into place; the JSON is written last, so
    an interrupted build is never mistaken for a finished one.
    """
    meta_path = path.with_name(path.name + ".json")

    def valid() -> bool:
        if not (path.is_file() and meta_path.is_file()):
            return False
        try:
            if json.loads(meta_path.read_text()) != json.loads(json.dumps(meta)):
                return False
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError):
            return False
        return array.dtype == np.uint8 and tuple(array.shape) == tuple(shape)

    if valid():  # a finished cache is used as it is, even in a read-only folder
        return path
    writable_dir(path.parent, what)
    with file_lock(path.with_name(path.name + ".lock")):
        if valid():  # another process built it while we waited
            return path
        meta_path.unlink(missing_ok=True)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}.npy")
        try:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            fill(out)
            out.flush()
            del out
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        tmp_meta = meta_path.with_name(f"{meta_path.name}.tmp{os.getpid()}")
        tmp_meta.write_text(json.dumps(meta, indent=1, sort_keys=True))
        os.replace(tmp_meta, meta_path)
    return path
