"""A 6 MB excerpt of English Wikipedia in enwik8's format, fetched from gensim's wheel on PyPI.

enwik8 itself (§7.2) is 100 MB from mattmahoney.net; for a CPU-sized text experiment the package
index already holds real Wikipedia XML of the same kind: gensim's wheel ships the first pages of a
2016 English Wikipedia dump, shortened, as test data (:data:`MEMBER`, bz2, 6,089,746 bytes once
decompressed). :func:`fetch` (``make data-text``, or ``python -m zoo.data.wikipedia_excerpt``) runs
``pip download gensim==4.4.0 --no-deps`` (one pinned wheel, so every machine gets the same bytes),
takes that member out of the wheel, checks its size and SHA-256, and writes
``<root>/wikipedia_excerpt.xml`` atomically; ``data=wikipedia_excerpt`` then reads it with the enwik8
loader (:mod:`zoo.data.enwik8`, ``file: wikipedia_excerpt.xml``) and its 90/5/5 byte split.

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

from .common import ROOT_ENV, writable_dir

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zoo.data.wikipedia_excerpt", description=__doc__.split("\n")[0]
    )
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
