"""Downsampled ImageNet 64x64 loader on small .npz batches written by the test in the real format."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.data import build_data, list_datasets
from zoo.data import imagenet64 as inet
from zoo.data.common import DataNotFoundError, NpyRows

SEQ = 12288


def write_imagenet(
    root: Path, sizes: tuple[int, ...] = (5, 4, 3), n_val: int = 6, compressed: bool = False, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``train_data_batch_{1..}.npz`` + ``val_data.npz`` ('data' (N, 12288) uint8 planes, 'labels' 1..1000, 'mean')."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    save = np.savez_compressed if compressed else np.savez
    train = rng.integers(0, 256, size=(sum(sizes), SEQ), dtype=np.uint8)
    start = 0
    for b, n in enumerate(sizes, 1):
        part = train[start : start + n]
        save(
            root / f"train_data_batch_{b}.npz",
            data=part,
            labels=rng.integers(1, 1001, n).tolist(),
            mean=part.mean(0),
        )
        start += n
    val = rng.integers(0, 256, size=(n_val, SEQ), dtype=np.uint8)
    save(root / "val_data.npz", data=val, labels=rng.integers(1, 1001, n_val).tolist())
    return train, val


def _rows(ds: torch.utils.data.Dataset) -> list[bytes]:
    return [bytes(ds[i].numpy().astype(np.uint8)) for i in range(len(ds))]


def test_registered() -> None:
    assert "imagenet64" in list_datasets()


@pytest.mark.parametrize("compressed", [False, True])
def test_planes_cache_and_split(tmp_path: Path, compressed: bool) -> None:
    train, val = write_imagenet(tmp_path, compressed=compressed)
    b = build_data("imagenet64", root=str(tmp_path), order="planes", val_size=3)
    assert (b.seq_len, b.data_shape) == (SEQ, [3, 64, 64])
    assert (len(b.train), len(b.val), len(b.test)) == (9, 3, 6)
    assert b.train[0].dtype == torch.long and b.train[0].shape == (SEQ,)
    assert sorted(_rows(b.train) + _rows(b.val)) == sorted(bytes(r) for r in train)
    assert not set(_rows(b.train)) & set(_rows(b.val))
    assert _rows(b.test) == [bytes(r) for r in val]  # the official validation set is the test set
    cache = tmp_path / "imagenet64_train.npy"
    assert cache.is_file() and (tmp_path / "imagenet64_train.npy.json").is_file()
    assert np.array_equal(np.load(cache, mmap_mode="r"), train)  # batches concatenated in order 1, 2, 3


def test_items_are_memory_mapped_and_picklable(tmp_path: Path) -> None:
    write_imagenet(tmp_path)
    b = build_data("imagenet64", root=str(tmp_path), val_size=2)
    assert isinstance(b.train, NpyRows)
    assert isinstance(np.load(b.info["cache"][0], mmap_mode="r"), np.memmap)
    blob = pickle.dumps(b.train)
    assert len(blob) < 4096  # the map is not pickled, only the path and indices
    clone = pickle.loads(blob)
    assert torch.equal(clone[3], b.train[3])
    loader = torch.utils.data.DataLoader(b.train, batch_size=4, num_workers=2)
    batch = next(iter(loader))
    assert batch.shape == (4, SEQ) and torch.equal(batch[1], b.train[1])


def test_interleaved_order(tmp_path: Path) -> None:
    _, val = write_imagenet(tmp_path)
    b = build_data("imagenet64", root=str(tmp_path), order="interleaved", val_size=2)
    assert b.data_shape == [64, 64, 3]
    img = val[4].reshape(3, 64, 64)  # planes as stored
    x = b.test[4]
    for r, c, k in [(0, 0, 0), (10, 63, 1), (63, 5, 2)]:
        assert x[3 * (64 * r + c) + k] == int(img[k, r, c])
    assert torch.equal(x, torch.from_numpy(img.transpose(1, 2, 0).reshape(-1)).long())


def test_natural_order_of_batches(tmp_path: Path) -> None:
    sizes = tuple([1] * 11)  # train_data_batch_1 .. _11: 10 and 11 must come after 9
    train, _ = write_imagenet(tmp_path, sizes=sizes, n_val=2)
    b = build_data("imagenet64", root=str(tmp_path), order="planes", val_size=0)
    assert _rows(b.train) == [bytes(r) for r in train]


def test_kaggle_names_in_subfolders(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    (tmp_path / "Imagenet64_train_part1").mkdir()
    (tmp_path / "Imagenet64_val").mkdir()
    a = rng.integers(0, 256, (3, SEQ), dtype=np.uint8)
    np.savez(tmp_path / "Imagenet64_train_part1" / "Imagenet64_train_part1.npz", data=a, labels=[1, 2, 3])
    np.savez(tmp_path / "Imagenet64_val" / "Imagenet64_val.npz", data=a[:2], labels=[1, 2])
    b = build_data("imagenet64", root=str(tmp_path), order="planes", val_size=1)
    assert (len(b.train), len(b.val), len(b.test)) == (2, 1, 2)


def test_val_size_zero_uses_official_validation(tmp_path: Path) -> None:
    _, val = write_imagenet(tmp_path)
    b = build_data("imagenet64", root=str(tmp_path), order="planes", val_size=0)
    assert len(b.train) == 12 and _rows(b.val) == _rows(b.test) == [bytes(r) for r in val]


def test_cache_reused_and_rebuilt_when_sources_change(tmp_path: Path) -> None:
    write_imagenet(tmp_path)
    build_data("imagenet64", root=str(tmp_path), val_size=2)
    cache = tmp_path / "imagenet64_train.npy"
    stamp = cache.stat().st_mtime_ns
    build_data("imagenet64", root=str(tmp_path), val_size=2)
    assert cache.stat().st_mtime_ns == stamp  # reused
    new = np.full((2, SEQ), 7, np.uint8)
    np.savez(tmp_path / "train_data_batch_4.npz", data=new, labels=[1, 1])
    b = build_data("imagenet64", root=str(tmp_path), order="planes", val_size=0)
    assert len(b.train) == 14 and torch.equal(b.train[13], torch.full((SEQ,), 7))
    assert json.loads((tmp_path / "imagenet64_train.npy.json").read_text())["rows"] == [5, 4, 3, 2]


def test_cache_dir_option(tmp_path: Path) -> None:
    write_imagenet(tmp_path / "data")
    b = build_data("imagenet64", root=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"), val_size=2)
    assert (tmp_path / "cache" / "imagenet64_train.npy").is_file() and len(b.train) == 10
    assert not (tmp_path / "data" / "imagenet64_train.npy").exists()


def test_streaming_copy_in_small_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows are streamed out of the zip member in pieces (here 2 rows a piece)."""
    train, _ = write_imagenet(tmp_path, compressed=True)
    monkeypatch.setattr(inet, "CHUNK_BYTES", 2 * SEQ)
    build_data("imagenet64", root=str(tmp_path), val_size=2)
    assert np.array_equal(np.load(tmp_path / "imagenet64_train.npy"), train)


def test_missing_root_and_files(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="training batches not found") as err:
        build_data("imagenet64", root=str(tmp_path / "none"))
    assert str(tmp_path / "none") in str(err.value) and inet.URL in str(err.value)
    write_imagenet(tmp_path)
    (tmp_path / "val_data.npz").unlink()
    with pytest.raises(DataNotFoundError, match="validation batches not found"):
        build_data("imagenet64", root=str(tmp_path))


def test_wrong_format(tmp_path: Path) -> None:
    write_imagenet(tmp_path)
    (tmp_path / "train_data_batch_2.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="train_data_batch_2.npz: not an .npz archive"):
        build_data("imagenet64", root=str(tmp_path), val_size=2)
    np.savez(tmp_path / "train_data_batch_2.npz", images=np.zeros((2, SEQ), np.uint8))
    with pytest.raises(ValueError, match=r"needs the array 'data', found \['images'\]"):
        build_data("imagenet64", root=str(tmp_path), val_size=2)
    np.savez(tmp_path / "train_data_batch_2.npz", data=np.zeros((2, 3072), np.uint8))
    with pytest.raises(
        ValueError, match=r"'data' must have shape \(N, 12288\) \(64x64 RGB planes\), got \(2, 3072\)"
    ):
        build_data("imagenet64", root=str(tmp_path), val_size=2)
    np.savez(tmp_path / "train_data_batch_2.npz", data=np.zeros((2, SEQ), np.float32))
    with pytest.raises(ValueError, match="must hold bytes"):
        build_data("imagenet64", root=str(tmp_path), val_size=2)


def test_out_of_range_bytes(tmp_path: Path) -> None:
    write_imagenet(tmp_path)
    data = np.zeros((2, SEQ), np.int32)
    data[1, 5] = -3
    np.savez(tmp_path / "train_data_batch_2.npz", data=data)
    with pytest.raises(ValueError, match="byte values must lie in 0..255, found values from -3 to 0"):
        build_data("imagenet64", root=str(tmp_path), val_size=2)
    assert not (tmp_path / "imagenet64_train.npy").exists()  # no half-built cache left behind
    assert not list(tmp_path.glob("*.tmp*"))


def test_bad_options(tmp_path: Path) -> None:
    write_imagenet(tmp_path)
    with pytest.raises(ValueError, match=r"val_size must be an integer in \[0, 11\], got 12"):
        build_data("imagenet64", root=str(tmp_path), val_size=12)
    with pytest.raises(ValueError, match="order must be one of"):
        build_data("imagenet64", root=str(tmp_path), order="rgb")
    with pytest.raises(TypeError, match="unknown option"):
        build_data("imagenet64", root=str(tmp_path), download=True)


def test_yaml_config_matches_builder(tmp_path: Path, data_yaml_options) -> None:
    """configs/data/imagenet64.yaml: every key is an option whose value is the builder's default; it builds."""
    options = data_yaml_options("imagenet64")
    write_imagenet(tmp_path / "imagenet64")
    b = build_data(**{**options, "name": "imagenet64", "val_size": 2})
    assert b.data_shape == [64, 64, 3] and len(b.train) == 10


def test_finished_cache_needs_no_write_access(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from zoo.data import common

    write_imagenet(tmp_path)
    build_data("imagenet64", root=str(tmp_path), val_size=2)

    def read_only(directory: Path, what: str) -> Path:
        raise PermissionError(f"the cache folder {directory} for {what} is not writable; set data.cache_dir")

    monkeypatch.setattr(common, "writable_dir", read_only)
    assert (
        len(build_data("imagenet64", root=str(tmp_path), val_size=2).train) == 10
    )  # reused, nothing written
    with pytest.raises(PermissionError, match="not writable; set data.cache_dir"):
        build_data("imagenet64", root=str(tmp_path), cache_dir=str(tmp_path / "elsewhere"), val_size=2)
