"""enwik8 (Hutter Prize; Mahoney 2006): the first 10^8 bytes of an English Wikipedia dump (§7.2).

Files: ``<root>/enwik8`` (100,000,000 bytes), or ``<root>/enwik8.zip`` (from
http://mattmahoney.net/dc/enwik8.zip), whose ``enwik8`` member is extracted once next to it (or
into ``cache_dir``) because a zip member cannot be memory-mapped. The byte file is then read with
``np.memmap``: nothing is loaded into RAM beyond the windows in use. ``file`` names another byte
file of the root (or ``<file>.zip``): any text in enwik8's format is read the same way, such as the
6 MB Wikipedia excerpt of ``data=wikipedia_excerpt`` (:mod:`zoo.data.wikipedia_excerpt`).

Splits: the standard one the paper uses, the first 90M bytes for training and the last 10M split
5M / 5M into validation and test. ``split: [0.9, 0.05, 0.05]`` gives exactly that for the real file
(``val = floor(0.05 n)``, ``test = floor(0.05 n)``, ``train`` = the rest, in this order in the
file) and the same proportions for any other file, such as the small ones of the tests. The loss
is reported in bits per byte (``bits_per: byte``).

Training (``train``): windows of ``seq_len`` bytes (12,288, the paper's context) starting at
random positions of the training split; ``len(train) = windows_per_epoch`` (default: training bytes
// ``seq_len``, so an epoch reads about as many bytes as the split holds). Window ``i`` of epoch
``e`` is drawn from ``(seed, e, i)`` alone (:class:`zoo.data.common.RandomWindows`): call
``train.set_epoch(e)`` each epoch; a resumed run sees the same windows as an uninterrupted one.

Evaluation (``val``, ``test``): every byte of the split is scored exactly once
(:class:`zoo.data.common.EvalWindows`). With ``eval_min_context: 0`` (default) the windows are
non-overlapping, so a byte sees between 0 and ``seq_len - 1`` bytes of context; the last window is
aligned with the end of the split and ``scored_from(k)`` tells the evaluator which of its positions
are new. The paper notes that a longer minimum context at evaluation helps: its Table 3 reports bits
per byte improving as the minimum context length during evaluation of its 12,288-byte model grows
towards the full context. ``eval_min_context: m`` evaluates that way: windows advance by
``seq_len - m`` and only their last ``seq_len - m`` positions are scored, so every byte after the
first window has at least ``m`` bytes of context (e.g. ``m = 12160`` scores 128 bytes per
window: 96x the evaluation cost of ``m = 0``).
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path
from typing import Any

from ..errors import warn_once
from .base import DataBundle, register_dataset
from .common import (
    DataNotFoundError,
    EvalWindows,
    RandomWindows,
    check_int,
    check_split,
    file_lock,
    not_text,
    reject_unknown,
    resolve_root,
    split_sizes,
    writable_dir,
)

log = logging.getLogger(__name__)

NAME = "enwik8"
FILE = "enwik8"
ARCHIVE = "enwik8.zip"
URL = "http://mattmahoney.net/dc/enwik8.zip"
STANDARD_SIZE = 100_000_000
ZIP_MAGIC = b"PK\x03\x04"

_OPTIONS = ("root", "file", "cache_dir", "seq_len", "split", "windows_per_epoch", "seed", "eval_min_context")


def extract(archive: Path, target: Path, file: str = FILE) -> Path:
    """Extract the ``file`` member of ``archive`` (or its only member) to ``target`` (atomically, once)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
            member = file if file in names else (names[0] if len(names) == 1 else None)
            if member is None:
                raise ValueError(
                    f"{archive}: expected a member named {file!r} (or a single file), found {names}"
                )
            writable_dir(target.parent, "the extracted enwik8 file")
            with file_lock(target.with_name(target.name + ".lock")):
                if target.is_file() and target.stat().st_size == zf.getinfo(member).file_size:
                    return target
                tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
                try:
                    with zf.open(member) as src, open(tmp, "wb") as dst:
                        while chunk := src.read(2**24):
                            dst.write(chunk)
                    os.replace(tmp, target)
                finally:
                    tmp.unlink(missing_ok=True)
    except zipfile.BadZipFile as err:
        raise ValueError(f"{archive}: not a zip archive ({err}); download it again from {URL}") from err
    return target


def locate(root: Path, cache_dir: Path | None, file: str = FILE) -> Path:
    """The raw byte file: ``root/<file>``, else extracted from ``root/<file>.zip`` (``enwik8``, ``enwik8.zip``)."""
    raw = root / file
    archive = root / f"{file}.zip"
    if raw.is_file():
        with open(raw, "rb") as fh:
            if fh.read(4) == ZIP_MAGIC:
                raise ValueError(f"{raw} is a zip archive, not the raw {file} bytes: rename it to {archive}")
        return raw
    if archive.is_file():
        return extract(archive, (cache_dir or root) / file, file)
    if file != FILE:
        raise DataNotFoundError(
            f"{file} not found: the data root {root} has neither {file} nor {archive.name}. "
            "For the Wikipedia excerpt (data=wikipedia_excerpt) run `make data-text`; otherwise point data.root "
            "at the folder that holds the file."
        )
    raise DataNotFoundError(
        f"enwik8 not found: the data root {root} has neither {FILE} nor {ARCHIVE}.\n"
        f"Download {URL} into {root} (it is extracted on first use), or point data.root "
        "(or ZOO_DATA_ROOT, used as ZOO_DATA_ROOT/enwik8) at the folder that holds it."
    )


@register_dataset(NAME)
def enwik8(
    root: str | None = None,
    file: str = FILE,
    cache_dir: str | None = None,
    seq_len: int = 12288,
    split: tuple[float, float, float] | list[float] = (0.9, 0.05, 0.05),
    windows_per_epoch: int | None = None,
    seed: int = 0,
    eval_min_context: int = 0,
    **unknown: Any,
) -> DataBundle:
    """enwik8 as ``(seq_len,)`` byte windows: random windows for training, every byte once for evaluation."""
    reject_unknown(NAME, unknown, _OPTIONS)
    seq_len = check_int("seq_len", seq_len, low=1)
    fractions = check_split("split", split)
    check_int("seed", seed, low=0)
    eval_min_context = check_int("eval_min_context", eval_min_context, low=0, high=seq_len - 1)
    if not isinstance(file, str) or not file or "/" in file or "\\" in file:
        raise ValueError(f"file must be the name of a byte file inside data.root (no folders), got {file!r}")
    data_root = resolve_root(root, NAME)
    path = locate(data_root, resolve_root(cache_dir, NAME, "data.cache_dir") if cache_dir else None, file)
    why = not_text(path)
    if why is not None:  # legal (any bytes train), but a binary file is rarely what was meant
        warn_once(log, "%s does not look like text (%s): enwik8 is the text of a Wikipedia XML dump", path, why)
    n = path.stat().st_size
    n_train, n_val, n_test = split_sizes(n, fractions)
    for split_name, size in (("validation", n_val), ("test", n_test)):
        if size < seq_len:
            raise ValueError(
                f"{path}: the {split_name} split holds {size:,} bytes ({n:,} bytes x split {list(fractions)}), fewer "
                f"than one window of seq_len={seq_len:,}; use a larger file, a larger fraction or a shorter seq_len"
            )
    if windows_per_epoch is None:
        windows_per_epoch = max(1, n_train // seq_len)
    windows_per_epoch = check_int("windows_per_epoch", windows_per_epoch, low=1)
    train = RandomWindows(path, 0, n_train, seq_len, windows_per_epoch, seed)
    val = EvalWindows(path, n_train, n_val, seq_len, eval_min_context)
    test = EvalWindows(path, n_train + n_val, n_test, seq_len, eval_min_context)
    return DataBundle(
        train=train,
        val=val,
        test=test,
        seq_len=seq_len,
        data_shape=[seq_len],
        name=NAME,
        info={
            "source": str(path),
            "bits_per": "byte",
            "split_bytes": {"train": n_train, "val": n_val, "test": n_test},
            "standard_split": n == STANDARD_SIZE
            and (n_train, n_val, n_test) == (90_000_000, 5_000_000, 5_000_000),
            "windows_per_epoch": windows_per_epoch,
            "eval_min_context": eval_min_context,
            "eval_scoring": "score positions >= dataset.scored_from(k) of window k (see zoo.data.common.EvalWindows)",
        },
    )
