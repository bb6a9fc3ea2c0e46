"""data=wikipedia_excerpt: the enwik8 loader on another file, and its extraction from a gensim wheel.

The wheels and files are small ones the tests write; nothing is downloaded.
"""

from __future__ import annotations

import bz2
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import compose
from test_data_enwik8 import write_enwik8

from zoo.data import build_data
from zoo.data import wikipedia_excerpt as wx
from zoo.data.common import DataNotFoundError
from zoo.train import build_from_config


def write_wheel(path: Path, payload: bytes, member: str = wx.MEMBER) -> Path:
    """A wheel-like zip holding ``payload`` bz2-compressed under ``member`` (and another file)."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("gensim/__init__.py", "")
        zf.writestr(member, bz2.compress(payload))
    return path


def test_extract_from_wheel_checks_size_and_hash(tmp_path: Path) -> None:
    payload = write_enwik8(tmp_path / "src", n=5_000)
    wheel = write_wheel(tmp_path / "gensim-4.4.0-py3-none-any.whl", payload)
    target = tmp_path / "out" / wx.FILE
    sha = hashlib.sha256(payload).hexdigest()
    assert wx.extract_from_wheel(wheel, target, size=len(payload), sha256=sha) == target
    assert target.read_bytes() == payload
    with pytest.raises(ValueError, match="decompresses to 5,000 bytes, expected 6,089,746"):
        wx.extract_from_wheel(wheel, tmp_path / "bad" / wx.FILE)
    assert not (tmp_path / "bad" / wx.FILE).exists()  # no partial file left for the loader
    with pytest.raises(ValueError, match="has SHA-256"):
        wx.extract_from_wheel(wheel, tmp_path / "bad" / wx.FILE, size=len(payload), sha256="0" * 64)
    assert list((tmp_path / "bad").iterdir()) == []
    other = write_wheel(tmp_path / "other.whl", payload, member="x/y.bz2")
    with pytest.raises(ValueError, match="has no member"):
        wx.extract_from_wheel(other, target)
    (tmp_path / "junk.whl").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable wheel"):
        wx.extract_from_wheel(tmp_path / "junk.whl", target)


SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fetch_text.py"


@pytest.mark.parametrize("entry", [[str(SCRIPT)], ["-m", "zoo.data.wikipedia_excerpt"]], ids=["make", "module"])
def test_command_line_reports_a_bad_wheel_in_one_line(tmp_path: Path, entry: list[str]) -> None:
    """`make data-text` runs scripts/fetch_text.py; ``python -m`` executes the module a second time as __main__
    after the package's import (its data set must not register twice). Both reach the command line."""
    (tmp_path / "junk.whl").write_bytes(b"not a zip")
    cmd = [sys.executable, *entry, "--root", str(tmp_path), "--wheel", "junk.whl"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "not a readable wheel" in proc.stderr
    payload = write_enwik8(tmp_path / "src", n=5_000)
    wheel = write_wheel(tmp_path / "gensim-4.4.0-py3-none-any.whl", payload)
    proc = subprocess.run(cmd[:-1] + [str(wheel)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "expected 6,089,746" in proc.stderr  # a small wheel: refused, one line


def test_fetch_keeps_a_complete_file(tmp_path: Path) -> None:
    target = tmp_path / wx.FILE
    target.write_bytes(b"x" * wx.SIZE)  # the right size: not extracted again, no wheel needed
    assert wx.fetch(tmp_path) == target and target.read_bytes()[:1] == b"x"


def test_config_reads_the_excerpt_with_the_enwik8_split(tmp_path: Path) -> None:
    root = tmp_path / "wikipedia_excerpt"
    data = write_enwik8(root, n=20_000)
    (root / "enwik8").rename(root / wx.FILE)
    cfg = compose(
        "train",
        [
            "data=wikipedia_excerpt",
            f"data.root={root}",
            "data.seq_len=256",
            "model=fixed",
            "model.attention.stride=16",
            "model.embedding=attention",
        ],
    )
    assert cfg.data.name == "wikipedia_excerpt" and cfg.data.file == wx.FILE
    model, bundle = build_from_config(cfg)
    assert bundle.name == "wikipedia_excerpt" and bundle.info["bits_per"] == "byte"
    assert bundle.info["split_bytes"] == {"train": 18_000, "val": 1_000, "test": 1_000}
    assert bundle.info["source"] == str(root / wx.FILE)
    assert (bundle.seq_len, model.config.seq_len, model.config.data_shape) == (256, 256, [256])
    assert bytes(bundle.test[0].numpy().astype(np.uint8)) == data[19_000:19_256]
    assert bundle.val.num_scored == 1_000 and bundle.test.num_scored == 1_000


def test_missing_file_names_the_make_target(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="make data-text"):
        build_data("wikipedia_excerpt", root=str(tmp_path), seq_len=64)
    with pytest.raises(ValueError, match="no folders"):
        build_data("wikipedia_excerpt", root=str(tmp_path), file="a/b", seq_len=64)


def test_yaml_config_matches_builder(data_yaml_options) -> None:
    from zoo.data.common import split_sizes

    options = data_yaml_options("wikipedia_excerpt")
    assert (options["file"], options["seq_len"], options["split"]) == (wx.FILE, 2048, [0.9, 0.05, 0.05])
    assert split_sizes(wx.SIZE, (0.9, 0.05, 0.05)) == (5_480_772, 304_487, 304_487)  # as its comment says
