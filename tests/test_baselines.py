"""zoo/baselines.py and scripts/baselines.py: compressors conditioned on the training split, the order-k model."""

from __future__ import annotations

import importlib.util
import json
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from test_data_enwik8 import write_enwik8

from zoo.baselines import ContextModel, compressor_bits, split_array
from zoo.data import build_data
from zoo.data.tensor_dataset import ByteSequenceDataset

REPO = Path(__file__).resolve().parents[1]


def naive_witten_bell(train: list[list[int]], seq: list[int], order: int) -> list[float]:
    """The smoothing of the module docstring written out with dictionaries (the reference)."""
    PAD = 256
    counts = [Counter() for _ in range(order + 1)]
    for s in train:
        padded = [PAD] * order + s
        for i, x in enumerate(s):
            for o in range(order + 1):
                counts[o][(tuple(padded[order + i - o : order + i]), x)] += 1

    def prob(ctx: tuple, x: int, o: int) -> float:
        lower = 1 / 256 if o == 0 else prob(ctx[1:], x, o - 1)
        n = sum(v for (c, _), v in counts[o].items() if c == ctx)
        t = sum(1 for (c, _) in counts[o] if c == ctx)
        return lower if n == 0 else (counts[o][(ctx, x)] + t * lower) / (n + t)

    padded = [PAD] * order + seq
    return [prob(tuple(padded[order + i - order : order + i]), x, order) for i, x in enumerate(seq)]


def test_context_model_equals_the_written_out_smoothing() -> None:
    rng = np.random.default_rng(0)
    train = rng.integers(0, 5, size=(4, 30)).astype(np.uint8)
    seq = rng.integers(0, 6, size=(1, 25)).astype(np.uint8)  # byte 5 never seen in training
    probs = ContextModel(train, 3).probabilities(seq)
    for order in range(4):
        expected = naive_witten_bell(train.tolist(), seq[0].tolist(), order)
        np.testing.assert_allclose(probs[order], expected, rtol=1e-12)


def test_context_model_is_a_distribution_over_256_bytes() -> None:
    rng = np.random.default_rng(1)
    model = ContextModel(rng.integers(0, 4, size=(3, 60)).astype(np.uint8), 3)
    for context in ([1, 2, 3], [0, 0, 1], [3, 3, 3], [200, 1, 2]):
        seqs = np.array([context + [b] for b in range(256)], dtype=np.uint8)
        p = model.probabilities(seqs).reshape(4, 256, 4)[:, :, -1]  # P(b | context), every order
        np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)
        assert (p > 0).all()


def test_context_model_learns_structure_and_not_noise() -> None:
    period = np.tile(np.arange(7, dtype=np.uint8) * 30, 400)[None]  # a period of 7 bytes
    bits = ContextModel(period[:, :2000], 2).bits(period[:, 2000:])
    assert bits[0] == pytest.approx(math.log2(7), abs=0.01) and bits[2] < 0.01
    noise = np.random.default_rng(2).integers(0, 256, size=(1, 200_000)).astype(np.uint8)
    assert ContextModel(noise[:, :150_000], 1).bits(noise[:, 150_000:])[0] == pytest.approx(8.0, abs=0.01)
    with pytest.raises(ValueError, match=r"max_order must be in \[0, 6\], got 7"):
        ContextModel(noise, 7)


def test_compressors_conditioned_on_the_training_split() -> None:
    rng = np.random.default_rng(3)
    train = rng.integers(0, 256, size=50_000).astype(np.uint8).tobytes()
    for name in ("gzip -9", "bz2 -9", "xz -9e"):
        assert compressor_bits(b"", train, name) > 7.9  # random bytes do not compress
    test = train[-20_000:]  # seen in training: xz's 64 MiB dictionary finds it, gzip's 32 KiB window does too
    assert compressor_bits(train, test, "xz -9e") < 0.5
    assert compressor_bits(train, test, "gzip -9") < 0.5


def test_split_array_reads_rows_and_byte_streams(tmp_path: Path) -> None:
    data = torch.randint(0, 256, (5, 12), dtype=torch.uint8)
    np.testing.assert_array_equal(split_array(ByteSequenceDataset(data)), data.numpy())
    np.testing.assert_array_equal(split_array(ByteSequenceDataset(data), max_bytes=25), data[:2].numpy())
    raw = write_enwik8(tmp_path, n=20_000)
    b = build_data("enwik8", root=str(tmp_path), seq_len=256)
    assert split_array(b.test).tobytes() == raw[19_000:]  # the whole split, not its windows
    assert split_array(b.train).tobytes() == raw[:18_000]
    assert split_array(b.train, max_bytes=1_000, keep="last").tobytes() == raw[17_000:18_000]


def test_script_writes_a_rendered_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("baselines_script", REPO / "scripts" / "baselines.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setenv("ZOO_DATA_ROOT", str(tmp_path / "empty"))  # no CIFAR-10 files there
    out = tmp_path / "baselines.json"
    args = [
        "--data",
        "synthetic",
        "cifar10",
        "--max-order",
        "2",
        "--max-train-bytes",
        "50000",
        "--out",
        str(out),
    ]
    assert script.main(args) == 0
    record = json.loads(out.read_text())
    assert record["renderer"] == "baselines:markdown"
    syn, cifar = record["data"]["datasets"]
    assert "missing" in cifar and os.fspath(tmp_path / "empty") in cifar["missing"]
    assert set(syn["compressors"]) == {"gzip -9", "bz2 -9", "xz -9e"}
    assert syn["train_bytes"] == 63 * 784 and syn["test_bytes"] == 128 * 784  # --max-train-bytes: whole rows
    assert syn["context"]["chosen_order"] == int(np.argmin(syn["context"]["val"]))
    tables = script.markdown(record["data"])
    assert "| `synthetic` (bits/dim) |" in tables["main"] and "Not measured" in tables["main"]
    assert tables["context"].count("\n") == 3  # header, rule, val and test rows
