"""A 6 MB excerpt of English Wikipedia in enwik8's format, fetched from gensim's wheel on PyPI.

enwik8 itself (§7.2) is 100 MB from mattmahoney.net; for a CPU-sized text experiment the package
index already holds real Wikipedia XML of the same kind: gensim's wheel ships the first pages of a
2016 English Wikipedia dump, shortened, as test data (:data:`MEMBER`, bz2, 6,089,746 bytes once
decompressed). :func:`fetch` (``make data-text``, i.e. ``python scripts/fetch_text.py``) runs
``pip download gensim==4.4.0 --no-deps`` (one pinned wheel, so every machine gets the same bytes),
takes that member out of the wheel, checks its size and SHA-256, and writes
``<root>/wikipedia_excerpt.xml`` atomically. The data set ``wikipedia_excerpt`` (``data=wikipedia_excerpt``)
is the enwik8 loader (:func:`zoo.data.enwik8.enwik8`) on that file, with the same options, the same
90/5/5 byte split (5,480,772 / 304,487 / 304,487 bytes), bits per byte, and a 2,048-byte context by default.

Licence: the text is Wikipedia's (Wikipedia contributors, CC BY-SA 3.0 and GFDL at the time of the
dump); gensim (LGPL-2.1) redistributes it unchanged as test data.
"""

from __future__ import annotations

import argparse
import bz2
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from .base import DataBundle, register_dataset
from .common import ROOT_ENV, reject_unknown, resolve_root, writable_dir
from .enwik8 import enwik8

NAME = "wikipedia_excerpt"

GENSIM = "gensim==4.4.0"
# One wheel for every machine: the data file is the same in all of gensim's wheels; pinning one makes
# pip's choice (and the bytes) independent of the platform it runs on.
WHEEL_PLATFORM = ["--platform", "manylinux_2_28_x86_64", "--python-version", "3.11", "--implementation", "cp"]
MEMBER = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
FILE = "wikipedia_excerpt.xml"
SIZE = 6_089_746
SHA256 = "34c1c63050c87cc8477b9ae36b1cb0edf372612c92938b742e579a7109c20fa4"


def default_root() -> Path:
    """``$ZOO_DATA_ROOT/wikipedia_excerpt`` (default ``data/wikipedia_excerpt``), as configs/data/wikipedia_excerpt.yaml."""
    return Path(os.environ.get(ROOT_ENV, "data")) / "wikipedia_excerpt"


def extract_from_wheel(
    wheel: str | os.PathLike,
    target: str | os.PathLike,
    member: str = MEMBER,
    size: int | None = SIZE,
    sha256: str | None = SHA256,
) -> Path:
    """Decompress ``member`` (bz2) of the wheel (a zip) to ``target``, checking ``size`` and ``sha256``.

    The bytes go to a temporary file next to ``target`` that is renamed into place only when both
    checks pass, so a wrong or truncated wheel never leaves a file the loader would read.
    """
    wheel, target = Path(wheel), Path(target)
    try:
        zf = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as err:
        raise ValueError(f"{wheel} is not a readable wheel (zip archive): {err}") from err
    with zf:
        if member not in zf.namelist():
            raise ValueError(f"{wheel} has no member {member}; is it a wheel of {GENSIM}?")
        writable_dir(target.parent, "the Wikipedia excerpt")
        tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
        digest, n = hashlib.sha256(), 0
        try:
            with zf.open(member) as raw, bz2.open(raw) as src, open(tmp, "wb") as dst:
                while chunk := src.read(2**20):
                    digest.update(chunk)
                    n += len(chunk)
                    dst.write(chunk)
            if size is not None and n != size:
                raise ValueError(f"{wheel}: {member} decompresses to {n:,} bytes, expected {size:,}")
            if sha256 is not None and digest.hexdigest() != sha256:
                raise ValueError(f"{wheel}: {member} has SHA-256 {digest.hexdigest()}, expected {sha256}")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return target


def download_wheel(dest: str | os.PathLike) -> Path:
    """``pip download`` gensim's wheel (no dependencies) into ``dest``; returns the wheel's path."""
    dest = Path(dest)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        GENSIM,
        "--no-deps",
        "--only-binary=:all:",
        *WHEEL_PLATFORM,
    ]
    result = subprocess.run([*cmd, "-d", str(dest)], capture_output=True, text=True)
    wheels = sorted(dest.glob("gensim-*.whl"))
    if result.returncode != 0 or not wheels:
        raise RuntimeError(
            f"`{' '.join(cmd)}` failed (exit {result.returncode}): {result.stderr.strip()[-500:]}\n"
            "It needs access to PyPI; alternatively download a gensim 4.4.0 wheel yourself and pass it with --wheel."
        )
    return wheels[0]


def fetch(
    root: str | os.PathLike | None = None, wheel: str | os.PathLike | None = None, force: bool = False
) -> Path:
    """``<root>/wikipedia_excerpt.xml``: kept if it is already complete, else extracted from ``wheel``
    (downloaded with pip when not given)."""
    target = (Path(root) if root is not None else default_root()) / FILE
    if not force and target.is_file() and target.stat().st_size == SIZE:
        return target
    if wheel is not None:
        return extract_from_wheel(wheel, target)
    with tempfile.TemporaryDirectory(prefix="zoo-gensim-") as tmp:
        return extract_from_wheel(download_wheel(tmp), target)


_OPTIONS = ("root", "file", "cache_dir", "seq_len", "split", "windows_per_epoch", "seed", "eval_min_context")


# `python -m zoo.data.wikipedia_excerpt` runs this file a second time as __main__, after the package's import
# registered the data set: only the imported module registers it (`make data-text` runs scripts/fetch_text.py).
_register = register_dataset(NAME) if __name__ != "__main__" else (lambda fn: fn)


@_register
def wikipedia_excerpt(
    root: str | None = None,
    file: str = FILE,
    cache_dir: str | None = None,
    seq_len: int = 2048,
    split: tuple[float, float, float] | list[float] = (0.9, 0.05, 0.05),
    windows_per_epoch: int | None = None,
    seed: int = 0,
    eval_min_context: int = 0,
    **unknown: Any,
) -> DataBundle:
    """The excerpt as ``(seq_len,)`` byte windows: :func:`zoo.data.enwik8.enwik8` on ``<root>/<file>``."""
    reject_unknown(NAME, unknown, _OPTIONS)
    bundle = enwik8(
        root=str(resolve_root(root, NAME)),
        file=file,
        cache_dir=cache_dir,
        seq_len=seq_len,
        split=split,
        windows_per_epoch=windows_per_epoch,
        seed=seed,
        eval_min_context=eval_min_context,
    )
    bundle.name = NAME
    bundle.info["licence"] = "Wikipedia text, CC BY-SA 3.0 (docs/data.md)"
    return bundle


def main(argv: list[str] | None = None, prog: str = "python -m zoo.data.wikipedia_excerpt") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument(
        "--root", default=None, help=f"folder to write {FILE} into (default: {default_root()})"
    )
    parser.add_argument(
        "--wheel", default=None, help="an already downloaded gensim 4.4.0 wheel (no download)"
    )
    parser.add_argument("--force", action="store_true", help="extract again even if the file is complete")
    args = parser.parse_args(argv)
    try:
        path = fetch(args.root, args.wheel, args.force)
    except (ValueError, RuntimeError, PermissionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{path} ({path.stat().st_size:,} bytes): train with data=wikipedia_excerpt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
