"""CIFAR-10 loader on small batches written by the test in the real on-disk format (pickled dicts)."""

from __future__ import annotations

import pickle
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.data import build_data, list_datasets
from zoo.data import cifar10 as cifar_mod
from zoo.data.common import DataNotFoundError

PER_BATCH, N_TEST = 6, 7  # 30 training images, 7 test images


def _write_batch(path: Path, data: np.ndarray, labels: list[int], label: str) -> None:
    entry = {
        "batch_label": label,
        "labels": labels,
        "data": data,
        "filenames": [f"img_{i:05d}.png" for i in range(len(labels))],
    }
    with open(path, "wb") as fh:
        pickle.dump(entry, fh, protocol=2)


def write_cifar(root: Path, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``root/cifar-10-batches-py`` as torchvision expects it; returns (train planes (30, 3072), test planes)."""
    rng = np.random.default_rng(seed)
    folder = root / cifar_mod.BASE_FOLDER
    folder.mkdir(parents=True)
    train = rng.integers(0, 256, size=(5 * PER_BATCH, 3072), dtype=np.uint8)
    for b in range(5):
        part = train[b * PER_BATCH : (b + 1) * PER_BATCH]
        _write_batch(
            folder / f"data_batch_{b + 1}",
            part,
            rng.integers(0, 10, PER_BATCH).tolist(),
            f"training batch {b + 1} of 5",
        )
    test = rng.integers(0, 256, size=(N_TEST, 3072), dtype=np.uint8)
    _write_batch(folder / "test_batch", test, rng.integers(0, 10, N_TEST).tolist(), "testing batch 1 of 1")
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump(
            {"num_cases_per_batch": PER_BATCH, "label_names": cifar_mod.CLASSES, "num_vis": 3072},
            fh,
            protocol=2,
        )
    return train, test


def test_registered() -> None:
    assert "cifar10" in list_datasets()


def test_planes_order_matches_files_and_split(tmp_path: Path) -> None:
    train, test = write_cifar(tmp_path)
    b = build_data("cifar10", root=str(tmp_path), download=False, order="planes", val_size=4)
    assert (b.seq_len, b.data_shape, b.name) == (3072, [3, 32, 32], "cifar10")
    assert (len(b.train), len(b.val), len(b.test)) == (26, 4, N_TEST)
    item = b.train[0]
    assert item.dtype == torch.long and item.shape == (3072,)
    rows_train = {bytes(b.train[i].numpy().astype(np.uint8)) for i in range(len(b.train))}
    rows_val = {bytes(b.val[i].numpy().astype(np.uint8)) for i in range(len(b.val))}
    assert not rows_train & rows_val
    assert rows_train | rows_val == {bytes(r) for r in train}
    assert all(torch.equal(b.test[i], torch.from_numpy(test[i]).long()) for i in range(N_TEST))
    assert b.info["splits"] == {"train": 26, "val": 4, "test": N_TEST}


def test_interleaved_matches_torchvision_hwc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Our interleaved bytes are torchvision's HWC images flattened (its MD5 check patched out for the fixture)."""
    from torchvision.datasets import CIFAR10, cifar

    write_cifar(tmp_path)
    monkeypatch.setattr(CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
    tv_test = CIFAR10(str(tmp_path), train=False, download=False)
    b = build_data("cifar10", root=str(tmp_path), download=False, order="interleaved", val_size=4)
    assert b.data_shape == [32, 32, 3]
    for i in range(N_TEST):
        expected = torch.from_numpy(tv_test.data[i].reshape(-1)).long()  # (32, 32, 3) HWC -> 3072
        assert torch.equal(b.test[i], expected)
    # pixel (r, c) channel k sits at 3 (32 r + c) + k
    planes = build_data("cifar10", root=str(tmp_path), download=False, order="planes", val_size=4).test[2]
    inter = b.test[2]
    for r, c, k in [(0, 0, 0), (5, 17, 1), (31, 31, 2)]:
        assert inter[3 * (32 * r + c) + k] == planes[1024 * k + 32 * r + c]


def test_paper_split_48000_2000_10000(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default split on full-size batches (10,000 images each; the reader is fed synthetic ones)."""
    write_cifar(tmp_path)

    def full_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
        n = 10000
        data = np.zeros((n, 3072), np.uint8)
        ids = np.arange(n) + (0 if path.name == "test_batch" else 10000 * int(path.name[-1]))
        data[:, 0], data[:, 1] = ids % 256, ids // 256 % 256  # image id in the first two bytes
        return data, np.zeros(n, np.int64)

    monkeypatch.setattr(cifar_mod, "read_batch", full_batch)
    b = build_data("cifar10", root=str(tmp_path), download=False, order="planes")
    assert (len(b.train), len(b.val), len(b.test)) == (48000, 2000, 10000)

    def ids(ds: torch.utils.data.Dataset) -> set[int]:
        x = ds.data  # (N, 3072) uint8
        return set((x[:, 0].long() + 256 * x[:, 1].long()).tolist())

    train_ids, val_ids = ids(b.train), ids(b.val)
    assert len(train_ids) == 48000 and len(val_ids) == 2000 and not train_ids & val_ids
    assert train_ids | val_ids == set(range(10000, 60000))  # all from the training batches


def test_split_is_seeded(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    a = build_data("cifar10", root=str(tmp_path), download=False, val_size=5, split_seed=0)
    a2 = build_data("cifar10", root=str(tmp_path), download=False, val_size=5, split_seed=0)
    c = build_data("cifar10", root=str(tmp_path), download=False, val_size=5, split_seed=1)
    assert all(torch.equal(a.val[i], a2.val[i]) for i in range(5))
    assert not all(torch.equal(a.val[i], c.val[i]) for i in range(5))


def test_limits(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    b = build_data(
        "cifar10", root=str(tmp_path), download=False, val_size=5, limit_train=3, limit_val=2, limit_test=1
    )
    assert (len(b.train), len(b.val), len(b.test)) == (3, 2, 1)


def test_missing_root_names_it(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(DataNotFoundError) as err:
        build_data("cifar10", root=str(root), download=False)
    msg = str(err.value)
    assert str(root) in msg and "download is off" in msg and cifar_mod.URL in msg


def test_download_failure_without_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(root: Path) -> None:
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(cifar_mod, "_download", offline)
    with pytest.raises(DataNotFoundError, match="download failed.*URLError") as err:
        build_data("cifar10", root=str(tmp_path), download=True)
    assert str(tmp_path) in str(err.value)


def test_download_uses_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """download=true calls torchvision's CIFAR10(root, download=True); here a fake writes the files."""
    import torchvision.datasets

    calls = []

    class FakeCIFAR10:
        def __init__(self, root: str, train: bool = True, download: bool = False) -> None:
            calls.append((root, download))
            write_cifar(Path(root))

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    b = build_data("cifar10", root=str(tmp_path), download=True, val_size=4)
    assert calls == [(str(tmp_path), True)] and len(b.train) == 26


def test_archive_is_unpacked(tmp_path: Path) -> None:
    src = tmp_path / "src"
    train, _ = write_cifar(src)
    root = tmp_path / "root"
    root.mkdir()
    with tarfile.open(root / cifar_mod.ARCHIVE, "w:gz") as tar:
        tar.add(src / cifar_mod.BASE_FOLDER, arcname=cifar_mod.BASE_FOLDER)
    b = build_data("cifar10", root=str(root), download=False, order="planes", val_size=0)
    assert torch.equal(b.train[0], torch.from_numpy(train[0]).long())


def test_wrong_format(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    bad = tmp_path / cifar_mod.BASE_FOLDER / "data_batch_3"
    bad.write_bytes(b"this is not a pickle")
    with pytest.raises(ValueError, match="data_batch_3: not a pickled CIFAR-10 batch"):
        build_data("cifar10", root=str(tmp_path), download=False, val_size=4)
    _write_batch(bad, np.zeros((PER_BATCH, 1024), np.uint8), [0] * PER_BATCH, "gray")
    with pytest.raises(ValueError, match=r"data_batch_3: 'data' must have shape \(N, 3072\)"):
        build_data("cifar10", root=str(tmp_path), download=False, val_size=4)
    with open(bad, "wb") as fh:
        pickle.dump({"images": np.zeros((1, 3072), np.uint8)}, fh)
    with pytest.raises(ValueError, match="needs the keys 'data' and 'labels', found \\['images'\\]"):
        build_data("cifar10", root=str(tmp_path), download=False, val_size=4)


def test_out_of_range_bytes(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    data = np.zeros((PER_BATCH, 3072), np.int16)
    data[2, 7] = 300
    _write_batch(tmp_path / cifar_mod.BASE_FOLDER / "data_batch_2", data, [0] * PER_BATCH, "wide")
    with pytest.raises(
        ValueError, match="data_batch_2 'data': byte values must lie in 0..255, found values from 0 to 300"
    ):
        build_data("cifar10", root=str(tmp_path), download=False, val_size=4)


def test_checksums_reject_non_original_files(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    with pytest.raises(ValueError, match="data_batch_1 does not match the official CIFAR-10 MD5"):
        build_data("cifar10", root=str(tmp_path), download=False, val_size=4, verify_checksums=True)


def test_bad_options(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    with pytest.raises(ValueError, match=r"order must be one of \['interleaved', 'planes'\], got 'hwc'"):
        build_data("cifar10", root=str(tmp_path), download=False, order="hwc")
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['seq_len'\] for data set 'cifar10'"):
        build_data("cifar10", root=str(tmp_path), download=False, seq_len=3072)


def test_yaml_config_matches_builder(tmp_path: Path, data_yaml_options) -> None:
    """configs/data/cifar10.yaml: every key is an option whose value is the builder's default; it builds."""
    options = data_yaml_options("cifar10")
    write_cifar(tmp_path / "cifar10")
    b = build_data(**{**options, "name": "cifar10", "download": False, "val_size": 4})
    assert b.data_shape == [32, 32, 3] and len(b.train) == 26
