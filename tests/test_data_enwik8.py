"""enwik8 loader on a small enwik8-like file (raw and zipped) written by the test."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.data import build_data, list_datasets
from zoo.data.common import DataNotFoundError, EvalWindows, RandomWindows, eval_windows, split_sizes

N = 20_000  # bytes in the test file: 18,000 / 1,000 / 1,000 with the standard fractions


def write_enwik8(root: Path, n: int = N, seed: int = 0) -> bytes:
    """An enwik8-like file: XML-ish text with arbitrary bytes (incl. UTF-8 and 0xff) mixed in."""
    rng = np.random.default_rng(seed)
    text = (
        b"<page><title>Zoo</title><text>Sparse Transformers \xc3\xa9 [[link]] \xff</text></page>\n"
        * (n // 60 + 1)
    )[:n]
    data = bytearray(text)
    noise = rng.integers(0, n, size=n // 10)
    for i in noise:
        data[i] = int(rng.integers(0, 256))
    root.mkdir(parents=True, exist_ok=True)
    (root / "enwik8").write_bytes(bytes(data))
    return bytes(data)


def test_registered() -> None:
    assert "enwik8" in list_datasets()


def test_standard_split_sizes() -> None:
    assert split_sizes(100_000_000, (0.9, 0.05, 0.05)) == (90_000_000, 5_000_000, 5_000_000)
    assert split_sizes(N, (0.9, 0.05, 0.05)) == (18_000, 1_000, 1_000)
    assert split_sizes(1001, (0.9, 0.05, 0.05)) == (901, 50, 50)


def test_splits_and_items(tmp_path: Path) -> None:
    data = write_enwik8(tmp_path)
    b = build_data("enwik8", root=str(tmp_path), seq_len=256)
    assert (b.seq_len, b.data_shape) == (256, [256])
    assert b.info["split_bytes"] == {"train": 18_000, "val": 1_000, "test": 1_000}
    assert b.info["bits_per"] == "byte" and b.info["standard_split"] is False
    assert isinstance(b.train, RandomWindows) and len(b.train) == 18_000 // 256
    x = b.train[0]
    assert x.dtype == torch.long and x.shape == (256,) and 0 <= int(x.min()) and int(x.max()) <= 255
    s = b.train.start(0)
    assert 0 <= s <= 18_000 - 256 and bytes(x.numpy().astype(np.uint8)) == data[s : s + 256]
    assert bytes(b.val[0].numpy().astype(np.uint8)) == data[18_000:18_256]
    assert bytes(b.test[0].numpy().astype(np.uint8)) == data[19_000:19_256]


def test_training_windows_reproducible_and_epoch_dependent(tmp_path: Path) -> None:
    write_enwik8(tmp_path)
    a = build_data("enwik8", root=str(tmp_path), seq_len=128, seed=3).train
    b = build_data("enwik8", root=str(tmp_path), seq_len=128, seed=3).train
    c = build_data("enwik8", root=str(tmp_path), seq_len=128, seed=4).train
    starts_a = [a.start(i) for i in range(len(a))]
    assert starts_a == [b.start(i) for i in range(len(b))]
    assert starts_a != [c.start(i) for i in range(len(c))]
    assert len(set(starts_a)) > len(a) // 2  # random, not a fixed grid
    assert max(starts_a) <= 18_000 - 128  # never reaches into the validation bytes
    a.set_epoch(1)
    assert [a.start(i) for i in range(len(a))] != starts_a
    a.set_epoch(0)
    assert [a.start(i) for i in range(len(a))] == starts_a
    # order of access does not matter (workers, resume)
    assert torch.equal(a[5], b[5]) and torch.equal(a[len(a) - 1], b[len(b) - 1])


def test_windows_per_epoch_option(tmp_path: Path) -> None:
    write_enwik8(tmp_path)
    assert len(build_data("enwik8", root=str(tmp_path), seq_len=100, windows_per_epoch=7).train) == 7
    with pytest.raises(ValueError, match=r"windows_per_epoch must be an integer in \[1, inf\], got 0"):
        build_data("enwik8", root=str(tmp_path), seq_len=100, windows_per_epoch=0)


@pytest.mark.parametrize(
    "seq_len,min_context", [(256, 0), (300, 0), (1000, 0), (256, 200), (256, 255), (97, 13)]
)
def test_evaluation_scores_every_byte_once(tmp_path: Path, seq_len: int, min_context: int) -> None:
    data = write_enwik8(tmp_path)
    b = build_data("enwik8", root=str(tmp_path), seq_len=seq_len, eval_min_context=min_context)
    for ds, lo in ((b.val, 18_000), (b.test, 19_000)):
        assert isinstance(ds, EvalWindows) and ds.num_scored == 1_000
        scored = []
        for k in range(len(ds)):
            x = ds[k]
            start = lo + int(ds.starts[k])
            assert bytes(x.numpy().astype(np.uint8)) == data[start : start + seq_len]
            mask = ds.score_mask(k)
            assert int(mask.sum()) == seq_len - ds.scored_from(k)
            positions = start + torch.nonzero(mask).flatten()
            scored += positions.tolist()
            if k > 0:
                assert (
                    ds.scored_from(k) >= min_context
                )  # every scored byte has at least min_context bytes before it
            assert start + seq_len <= lo + 1_000  # never reads past its split
        assert scored == list(range(lo, lo + 1_000))  # each byte of the split exactly once, in order


def test_non_overlapping_by_default() -> None:
    w = eval_windows(1000, 250)
    assert w == [(0, 0), (250, 0), (500, 0), (750, 0)]
    w = eval_windows(1000, 300)
    assert w == [
        (0, 0),
        (300, 0),
        (600, 0),
        (700, 200),
    ]  # last window aligned with the end, scores 100 new bytes
    assert eval_windows(1000, 300, min_context=280)[:3] == [(0, 0), (20, 280), (40, 280)]


def test_zip_archive(tmp_path: Path) -> None:
    src = tmp_path / "src"
    data = write_enwik8(src)
    root = tmp_path / "root"
    root.mkdir()
    with zipfile.ZipFile(root / "enwik8.zip", "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(src / "enwik8", arcname="enwik8")
    b = build_data("enwik8", root=str(root), seq_len=256)
    assert (root / "enwik8").read_bytes() == data  # extracted once next to the archive
    assert bytes(b.test[0].numpy().astype(np.uint8)) == data[19_000:19_256]
    b2 = build_data("enwik8", root=str(root), cache_dir=str(tmp_path / "cache"), seq_len=256)
    assert b2.info["source"] == str(root / "enwik8")  # the raw file now exists and wins
    (root / "enwik8").unlink()
    b3 = build_data("enwik8", root=str(root), cache_dir=str(tmp_path / "cache"), seq_len=256)
    assert b3.info["source"] == str(tmp_path / "cache" / "enwik8")
    assert bytes(b3.val[1].numpy().astype(np.uint8)) == data[18_256:18_512]


def test_datasets_pickle_without_data(tmp_path: Path) -> None:
    write_enwik8(tmp_path, n=200_000)
    b = build_data("enwik8", root=str(tmp_path), seq_len=512)
    b.train[0], b.val[0]  # open the maps
    for ds in (b.train, b.val):
        blob = pickle.dumps(ds)
        assert len(blob) < 4096
        assert torch.equal(pickle.loads(blob)[3], ds[3])
    loader = torch.utils.data.DataLoader(b.train, batch_size=4, num_workers=2)
    assert torch.equal(next(iter(loader))[2], b.train[2])


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="has neither enwik8 nor enwik8.zip") as err:
        build_data("enwik8", root=str(tmp_path / "none"))
    assert str(tmp_path / "none") in str(err.value) and "mattmahoney.net" in str(err.value)


def test_wrong_format(tmp_path: Path) -> None:
    (tmp_path / "enwik8.zip").write_bytes(b"definitely not a zip file")
    with pytest.raises(ValueError, match="enwik8.zip: not a zip archive"):
        build_data("enwik8", root=str(tmp_path), seq_len=64)
    with zipfile.ZipFile(tmp_path / "enwik8.zip", "w") as zf:
        zf.writestr("a.txt", "x")
        zf.writestr("b.txt", "y")
    with pytest.raises(
        ValueError, match=r"expected a member named 'enwik8' \(or a single file\), found \['a.txt', 'b.txt'\]"
    ):
        build_data("enwik8", root=str(tmp_path), seq_len=64)
    (tmp_path / "enwik8").write_bytes((tmp_path / "enwik8.zip").read_bytes())
    with pytest.raises(ValueError, match="is a zip archive, not the raw enwik8 bytes"):
        build_data("enwik8", root=str(tmp_path), seq_len=64)


def test_split_too_small_for_context(tmp_path: Path) -> None:
    write_enwik8(tmp_path)
    with pytest.raises(
        ValueError, match=r"the validation split holds 1,000 bytes .* fewer than one window of seq_len=12,288"
    ):
        build_data("enwik8", root=str(tmp_path))  # the default context 12,288


def test_bad_options(tmp_path: Path) -> None:
    write_enwik8(tmp_path)
    with pytest.raises(ValueError, match="split fractions must sum to 1"):
        build_data("enwik8", root=str(tmp_path), seq_len=64, split=[0.9, 0.1, 0.1])
    with pytest.raises(ValueError, match=r"eval_min_context must be an integer in \[0, 63\], got 64"):
        build_data("enwik8", root=str(tmp_path), seq_len=64, eval_min_context=64)
    with pytest.raises(ValueError, match="seq_len must be an integer"):
        build_data("enwik8", root=str(tmp_path), seq_len="long")
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['order'\]"):
        build_data("enwik8", root=str(tmp_path), order="planes")


def test_yaml_config_matches_builder(tmp_path: Path, data_yaml_options) -> None:
    """configs/data/enwik8.yaml: every key is an option whose value is the builder's default; it builds."""
    options = data_yaml_options("enwik8")
    write_enwik8(tmp_path / "enwik8", n=400_000)
    b = build_data(**{**options, "name": "enwik8"})
    assert b.seq_len == 12288 and b.info["split_bytes"] == {"train": 360_000, "val": 20_000, "test": 20_000}
