"""Fashion-MNIST loader: idx parsing, the search order (data root, system copy, torchvision), the
three-ways-out error, the splits; plus the synthetic data set used by the training tests."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch

from zoo.data import build_data, list_datasets
from zoo.data import fashion_mnist as fm
from zoo.data.fashion_mnist import fashion_mnist
from zoo.data.synthetic import synthetic


def idx_bytes(array: torch.Tensor, type_code: int = 0x08) -> bytes:
    """An idx file's bytes for a uint8 ``array`` (header written by hand, as the format defines it)."""
    header = bytes([0, 0, type_code, array.dim()]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.contiguous().numpy().tobytes()


def write_fake_fashion_mnist(folder: Path, n_train: int = 30, n_test: int = 6, gz: bool = True) -> None:
    """Four idx files in ``folder``: train image ``i`` is all ``i``, test image ``i`` all ``200 + i``."""
    folder.mkdir(parents=True, exist_ok=True)
    train = torch.arange(n_train, dtype=torch.uint8).view(-1, 1, 1).expand(n_train, 28, 28)
    test = (200 + torch.arange(n_test)).to(torch.uint8).view(-1, 1, 1).expand(n_test, 28, 28)
    arrays = {
        "train-images-idx3-ubyte": train,
        "train-labels-idx1-ubyte": (torch.arange(n_train) % 10).to(torch.uint8),
        "t10k-images-idx3-ubyte": test,
        "t10k-labels-idx1-ubyte": (torch.arange(n_test) % 10).to(torch.uint8),
    }
    for name, array in arrays.items():
        data = idx_bytes(array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)


# ------------------------------------------------------------------------------------------ idx parser
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_roundtrip(tmp_path, gz):
    array = torch.randint(0, 256, (3, 4, 5), dtype=torch.uint8)
    data = idx_bytes(array)
    path = tmp_path / ("x.gz" if gz else "x")
    path.write_bytes(gzip.compress(data) if gz else data)
    out = fm.read_idx(path)
    assert out.dtype == torch.uint8 and out.shape == (3, 4, 5)
    assert torch.equal(out, array)


def test_read_idx_hand_written_header(tmp_path):
    # magic 0x00000801 (ubyte, 1 dimension), size 3, then the bytes 7 8 9
    path = tmp_path / "labels"
    path.write_bytes(b"\x00\x00\x08\x01" + b"\x00\x00\x00\x03" + b"\x07\x08\x09")
    assert fm.read_idx(path).tolist() == [7, 8, 9]


def test_read_idx_rejects_bad_files(tmp_path):
    bad_magic = tmp_path / "bad_magic"
    bad_magic.write_bytes(b"\x01\x00\x08\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="not an idx file"):
        fm.read_idx(bad_magic)
    floats = tmp_path / "floats"
    floats.write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x01" + b"\x00" * 4)
    with pytest.raises(ValueError, match=r"0x0d \(float\) is not supported"):
        fm.read_idx(floats)
    short = tmp_path / "short"
    short.write_bytes(b"\x00\x00\x08\x02\x00\x00\x00\x02\x00\x00\x00\x02" + b"\x00" * 3)
    with pytest.raises(ValueError, match=r"shape \[2, 2\] \(4 bytes\) but 3 data bytes"):
        fm.read_idx(short)


# ------------------------------------------------------------------------------------------ search order
@pytest.fixture
def no_download(monkeypatch):
    """Make torchvision's download fail as it does offline, and count the attempts."""
    calls = []

    def fail(root):
        calls.append(root)
        raise OSError("network unreachable")

    monkeypatch.setattr(fm, "torchvision_download", fail)
    return calls


def test_data_root_comes_first(tmp_path, no_download):
    root, system = tmp_path / "root", tmp_path / "system"
    write_fake_fashion_mnist(root / "fashion-mnist")
    write_fake_fashion_mnist(system)
    found = fm.locate(root, system_root=system)
    assert all(p.parent == root / "fashion-mnist" for p in found.values())
    assert not no_download


def test_torchvision_layout_in_data_root(tmp_path, no_download):
    write_fake_fashion_mnist(tmp_path / "FashionMNIST" / "raw", gz=False)  # what torchvision leaves behind
    found = fm.locate(tmp_path, system_root=None)
    assert found["train_images"] == tmp_path / "FashionMNIST" / "raw" / "train-images-idx3-ubyte"


def test_system_copy_second(tmp_path, no_download):
    root, system = tmp_path / "empty_root", tmp_path / "system"
    write_fake_fashion_mnist(system)
    found = fm.locate(root, system_root=system)
    assert all(p.parent == system for p in found.values())
    assert not no_download


def test_incomplete_folder_is_skipped(tmp_path, no_download):
    root, system = tmp_path / "root", tmp_path / "system"
    write_fake_fashion_mnist(root)
    (root / "t10k-labels-idx1-ubyte.gz").unlink()  # three of four files: not a copy
    write_fake_fashion_mnist(system)
    assert fm.locate(root, system_root=system)["train_images"].parent == system


def test_torchvision_download_third(tmp_path, monkeypatch):
    root = tmp_path / "root"
    calls = []

    def fake_download(r):
        calls.append(r)
        write_fake_fashion_mnist(r / "FashionMNIST" / "raw", gz=False)
        return r / "FashionMNIST" / "raw"

    monkeypatch.setattr(fm, "torchvision_download", fake_download)
    found = fm.locate(root, system_root=tmp_path / "no_system_copy")
    assert calls == [root.absolute()]
    assert found["test_labels"].parent == root / "FashionMNIST" / "raw"


def test_three_ways_out(tmp_path, no_download):
    root = tmp_path / "root"
    with pytest.raises(FileNotFoundError) as info:
        fm.locate(root, system_root=tmp_path / "no_system_copy")
    message = str(info.value)
    assert "Three ways out" in message
    assert str(root) in message  # 1. the data root
    assert "sudo apt-get install dataset-fashion-mnist" in message and fm.SYSTEM_ROOT in message  # 2. Debian
    assert "torchvision" in message and "network unreachable" in message  # 3. download, with why it failed
    assert len(no_download) == 1


def test_download_disabled_is_said(tmp_path, no_download):
    with pytest.raises(FileNotFoundError, match=r"skipped \(download=false\)"):
        fm.locate(tmp_path, system_root=None, download=False)
    assert not no_download


# ------------------------------------------------------------------------------------------ the data set
def test_splits_from_files(tmp_path, no_download):
    write_fake_fashion_mnist(tmp_path, n_train=30, n_test=6)
    bundle = fashion_mnist(root=str(tmp_path), system_root=None, val_size=5, download=False)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (25, 5, 6)
    assert bundle.seq_len == 784 and bundle.data_shape == [28, 28] and bundle.name == "fashion_mnist"
    item = bundle.train[0]
    assert item.shape == (784,) and item.dtype == torch.long
    # every image is constant = its index: val and train are disjoint and together the whole training set
    train_ids = {int(bundle.train[i][0]) for i in range(len(bundle.train))}
    val_ids = {int(bundle.val[i][0]) for i in range(len(bundle.val))}
    assert not train_ids & val_ids and train_ids | val_ids == set(range(30))
    assert [int(bundle.test[i][0]) for i in range(6)] == list(range(200, 206))  # canonical order
    again = fashion_mnist(root=str(tmp_path), system_root=None, val_size=5, download=False)
    assert torch.equal(again.val.data, bundle.val.data)  # the held-out split is seeded
    other = fashion_mnist(root=str(tmp_path), system_root=None, val_size=5, download=False, split_seed=1)
    assert not torch.equal(other.val.data, bundle.val.data)


def test_limits_and_bad_options(tmp_path, no_download):
    write_fake_fashion_mnist(tmp_path, n_train=30, n_test=6)
    small = build_data(
        "fashion_mnist",
        root=str(tmp_path),
        system_root=None,
        val_size=5,
        limit_train=7,
        limit_val=2,
        limit_test=3,
    )
    assert (len(small.train), len(small.val), len(small.test)) == (7, 2, 3)
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['rot'\] for data set 'fashion_mnist'"):
        build_data("fashion_mnist", rot=str(tmp_path))
    with pytest.raises(
        ValueError, match=r"limit_train must be a positive integer or null \(no limit\), got 0"
    ):
        build_data("fashion_mnist", root=str(tmp_path), limit_train=0)
    with pytest.raises(ValueError, match=r"val_size must be an integer in \[0, 30\), got 30"):
        build_data("fashion_mnist", root=str(tmp_path), system_root=None, val_size=30)
    with pytest.raises(ValueError, match="unknown data set 'fashion_mnst'.*Did you mean 'fashion_mnist'"):
        build_data("fashion_mnst")


@pytest.mark.skipif(fm.find_files(fm.SYSTEM_ROOT) is None, reason=f"no system copy in {fm.SYSTEM_ROOT}")
def test_real_system_copy():
    bundle = build_data("fashion_mnist", root="/nonexistent", download=False)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (58_000, 2_000, 10_000)
    assert bundle.info["source"] == fm.SYSTEM_ROOT
    batch = torch.stack([bundle.test[i] for i in range(256)])  # (256, 784)
    assert batch.min() == 0 and batch.max() == 255
    assert 0.2 < (batch == 0).float().mean() < 0.8  # dark backgrounds, bright garments: real images


# ------------------------------------------------------------------------------------------ synthetic
def test_synthetic_is_deterministic_and_shaped():
    assert {"fashion_mnist", "synthetic"} <= set(list_datasets())
    a = synthetic(size=8, val_size=2, test_size=3, seq_len=12, data_shape=[3, 4], vocab=10)
    b = synthetic(size=8, val_size=2, test_size=3, seq_len=12, data_shape=[3, 4], vocab=10)
    assert torch.equal(a.train.data, b.train.data) and torch.equal(a.test.data, b.test.data)
    assert not torch.equal(a.train.data[:2], a.val.data)  # splits use distinct streams
    assert (len(a.train), len(a.val), len(a.test), a.seq_len, a.data_shape) == (8, 2, 3, 12, [3, 4])
    assert a.train[0].dtype == torch.long and int(a.train.data.max()) < 10
    grid = a.train.data.view(8, 3, 4).long()
    # a ramp: constant steps along each axis (mod vocab)
    assert torch.equal(
        (grid[:, :, 1:] - grid[:, :, :-1]) % 10, ((grid[:, :, 1:2] - grid[:, :, :1]) % 10).expand(8, 3, 3)
    )
    assert torch.equal(
        (grid[:, 1:, :] - grid[:, :-1, :]) % 10, ((grid[:, 1:2, :1] - grid[:, :1, :1]) % 10).expand(8, 2, 4)
    )


def test_synthetic_rejects_bad_options():
    with pytest.raises(ValueError, match=r"data_shape \[3, 3\] has 9 entries but seq_len is 12"):
        synthetic(seq_len=12, data_shape=[3, 3])
    with pytest.raises(ValueError, match=r"vocab must be in \[2, 256\]"):
        synthetic(vocab=300)
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['sizes'\] for data set 'synthetic'"):
        synthetic(sizes=3)
