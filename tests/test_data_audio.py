"""Audio loader: WAV files written by the test (stdlib ``wave`` and hand-made RIFF headers)."""

from __future__ import annotations

import math
import struct
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.data import audio as audio_mod
from zoo.data import build_data, list_datasets
from zoo.data.audio import (
    linear_decode,
    linear_encode,
    mu_law_decode,
    mu_law_encode,
    read_wav,
    resample,
    resampled_length,
)
from zoo.data.common import DataNotFoundError


def write_wave(path: Path, frames: np.ndarray, rate: int, width: int) -> None:
    """Integer PCM with the standard library: ``frames`` (n, channels) of ints in the width's range."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.asarray(frames)
    if frames.ndim == 1:
        frames = frames[:, None]
    if width == 1:
        raw = frames.astype(np.uint8).tobytes()
    elif width == 3:
        v = frames.astype(np.int32).reshape(-1)
        raw = np.stack([v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF], axis=1).astype(np.uint8).tobytes()
    else:
        raw = frames.astype({2: "<i2", 4: "<i4"}[width]).tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(frames.shape[1])
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(raw)


def write_riff(
    path: Path, tag: int, channels: int, rate: int, bits: int, payload: bytes, extensible: bool = False
) -> None:
    """A hand-made WAV: plain or WAVE_FORMAT_EXTENSIBLE 'fmt ', a 'LIST' chunk to skip, then 'data'."""
    block = channels * bits // 8
    if extensible:
        guid = struct.pack("<H", tag) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt = struct.pack("<HHIIHHHHI", 0xFFFE, channels, rate, rate * block, block, bits, 22, bits, 0) + guid
    else:
        fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    listing = b"INFOISFT\x05\x00\x00\x00test\x00\x00"  # odd-sized sub-chunk padded to even
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"LIST" + struct.pack("<I", len(listing)) + listing
    body += b"data" + struct.pack("<I", len(payload)) + payload
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def test_registered() -> None:
    assert "audio" in list_datasets()


# ----------------------------------------------------------------- decoding


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_read_integer_pcm(tmp_path: Path, width: int) -> None:
    rng = np.random.default_rng(width)
    bits = 8 * width
    if width == 1:
        ints = rng.integers(0, 256, size=(50, 2))
        expected = (ints - 128) / 128
    else:
        ints = rng.integers(-(2 ** (bits - 1)), 2 ** (bits - 1), size=(50, 2))
        expected = ints / 2 ** (bits - 1)
    write_wave(tmp_path / "a.wav", ints, 16000, width)
    data, rate = read_wav(tmp_path / "a.wav")
    assert rate == 16000 and data.shape == (50, 2) and data.dtype == np.float32
    np.testing.assert_allclose(data, expected, atol=1e-7)


def test_read_float_and_extensible(tmp_path: Path) -> None:
    x = np.linspace(-1, 1, 64, dtype=np.float32)
    write_riff(tmp_path / "f.wav", 3, 1, 22050, 32, x.tobytes())
    data, rate = read_wav(tmp_path / "f.wav")
    assert rate == 22050 and np.array_equal(data[:, 0], x)
    ints = (np.arange(-32, 32, dtype=np.int16) * 1000).repeat(2)  # stereo, interleaved
    write_riff(tmp_path / "e.wav", 1, 2, 8000, 16, ints.tobytes(), extensible=True)
    data, rate = read_wav(tmp_path / "e.wav")
    assert rate == 8000 and data.shape == (64, 2)
    np.testing.assert_allclose(data[:, 1], np.arange(-32, 32) * 1000 / 32768)


def test_unsupported_and_broken_wav(tmp_path: Path) -> None:
    write_riff(tmp_path / "adpcm.wav", 2, 1, 8000, 4, b"\x00" * 32)
    with pytest.raises(ValueError, match=r"adpcm.wav: unsupported WAV encoding \(format tag 0x0002"):
        read_wav(tmp_path / "adpcm.wav")
    (tmp_path / "text.wav").write_text("hello, I am not audio")
    with pytest.raises(ValueError, match="text.wav: not a WAV file"):
        read_wav(tmp_path / "text.wav")
    (tmp_path / "cut.wav").write_bytes(b"RIFF\x04\x00\x00\x00WAVE")
    with pytest.raises(ValueError, match="without a fmt  chunk"):
        read_wav(tmp_path / "cut.wav")


# ----------------------------------------------------------------- resampling


@pytest.mark.parametrize("orig", [48000, 44100, 22050, 16000, 8000, 44099])
def test_resample_keeps_the_passband(orig: int) -> None:
    t = torch.arange(orig // 2, dtype=torch.float64) / orig  # 0.5 s
    for freq in (440.0, 3000.0):
        x = torch.sin(2 * math.pi * freq * t).float()
        y = resample(x, orig, 12000)
        assert y.shape[0] == resampled_length(x.shape[0], orig, 12000) == 6000
        ref = torch.sin(2 * math.pi * freq * torch.arange(6000, dtype=torch.float64) / 12000)
        err = (y[200:-200].double() - ref[200:-200]).abs().max().item()  # away from the zero-padded edges
        assert err < 1e-3, (orig, freq, err)


@pytest.mark.parametrize("orig", [48000, 44100, 22050])
def test_resample_removes_what_would_alias(orig: int) -> None:
    t = torch.arange(orig // 2, dtype=torch.float64) / orig
    for freq in (7000.0, 9000.0):  # above the 6 kHz Nyquist frequency of 12 kHz: would fold to 5 / 3 kHz
        x = torch.sin(2 * math.pi * freq * t).float()
        y = resample(x, orig, 12000)
        rms = y[200:-200].pow(2).mean().sqrt().item()
        assert rms < 1e-4, (orig, freq, rms)  # more than 77 dB below the input's 0.707
    naive = torch.sin(2 * math.pi * 9000.0 * t).float()[:: orig // 12000] if orig % 12000 == 0 else None
    if naive is not None:  # plain decimation would keep the alias at full strength
        assert naive.pow(2).mean().sqrt().item() > 0.5


def test_resample_identity_and_upsampling() -> None:
    x = torch.randn(1000)
    assert torch.equal(resample(x, 12000, 12000), x)
    t = torch.arange(6000, dtype=torch.float64)

    def tone(rate: int) -> torch.Tensor:
        return torch.sin(2 * math.pi * 440 * t / rate) + 0.5 * torch.cos(2 * math.pi * 2500 * t / rate)

    y = resample(tone(8000)[:4000].float(), 8000, 12000)  # band-limited input: upsampling interpolates it
    assert y.shape == (6000,)
    assert (y[300:-300].double() - tone(12000)[300:-300]).abs().max() < 1e-3
    with pytest.raises(ValueError, match="sample rates must be positive"):
        resample(x, 0, 12000)


# ----------------------------------------------------------------- quantisation


def test_mu_law() -> None:
    x = torch.tensor([-1.0, -0.5, -1e-4, 0.0, 1e-4, 0.5, 1.0, 2.0])
    q = mu_law_encode(x)
    assert q.dtype == torch.uint8
    assert q.tolist()[0] == 0 and q.tolist()[3] == 128 and q.tolist()[6] == 255 and q.tolist()[7] == 255
    dense = torch.cat([torch.linspace(-1, 1, 10001), torch.linspace(-1e-3, 1e-3, 1001)]).sort().values
    codes = mu_law_encode(dense)
    assert torch.all(codes[1:] >= codes[:-1]) and set(codes.tolist()) == set(range(256))
    back = mu_law_decode(codes)
    # companding: small amplitudes get fine steps, large ones coarse steps
    small = dense.abs() < 1e-3  # steps of about 2e-4 near 0, about 0.044 near +-1
    assert (back - dense)[small].abs().max() < 1.5e-4 and (back - dense).abs().max() < 0.025
    expected = torch.sign(dense) * torch.log1p(255 * dense.abs()) / math.log(256)
    assert torch.all(((expected + 1) / 2 * 255 - codes.float()).abs() <= 0.5 + 1e-4)


def test_linear_is_8bit_pcm() -> None:
    codes = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(linear_encode(linear_decode(codes)), codes)
    assert linear_encode(torch.tensor([-1.0, 0.0, 0.999, 1.0])).tolist() == [0, 128, 255, 255]


# ----------------------------------------------------------------- the data set


def write_folder(
    root: Path, n_files: int = 6, seconds: float = 1.0, rate: int = 12000
) -> dict[str, np.ndarray]:
    """``n_files`` 8-bit mono WAVs at ``rate`` in two subfolders, each with its own byte pattern."""
    out = {}
    n = int(seconds * rate)
    for i in range(n_files):
        rel = f"{'disc1' if i % 2 else 'disc2'}/track{i:02d}.wav"
        samples = ((np.arange(n) * (i + 1) + 17 * i) % 256).astype(np.uint8)
        write_wave(root / rel, samples, rate, 1)
        out[rel] = samples
    return out


def test_linear_8bit_files_come_back_byte_for_byte(tmp_path: Path) -> None:
    files = write_folder(tmp_path)
    b = build_data("audio", root=str(tmp_path), seq_len=1000, quantization="linear")
    assert (b.seq_len, b.data_shape) == (1000, [1000])
    assert sum(len(v) for v in b.info["files"].values()) == 6
    assert [len(b.info["files"][k]) for k in ("train", "val", "test")] == [4, 1, 1]
    assert b.info["splits"] == {
        "train": 48,
        "val": 12,
        "test": 12,
    }  # 12 chunks of 1000 per 12,000-sample file
    for split in ("train", "val", "test"):
        ds = getattr(b, split)
        expected = np.concatenate([files[r][: 12 * 1000].reshape(12, 1000) for r in b.info["files"][split]])
        got = np.stack([ds[i].numpy() for i in range(len(ds))])
        assert got.dtype == np.int64 and np.array_equal(got, expected)


def test_split_by_file_is_seeded_and_disjoint(tmp_path: Path) -> None:
    write_folder(tmp_path, n_files=10)
    a = build_data("audio", root=str(tmp_path), seq_len=4000, split=[0.6, 0.2, 0.2], split_seed=0)
    a2 = build_data("audio", root=str(tmp_path), seq_len=4000, split=[0.6, 0.2, 0.2], split_seed=0)
    c = build_data("audio", root=str(tmp_path), seq_len=4000, split=[0.6, 0.2, 0.2], split_seed=5)
    groups = [set(a.info["files"][k]) for k in ("train", "val", "test")]
    assert [len(g) for g in groups] == [6, 2, 2] and not (
        groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2]
    )
    assert a.info["files"] == a2.info["files"] and a.info["files"] != c.info["files"]


def test_resampled_mu_law_pipeline(tmp_path: Path) -> None:
    """A 24 kHz 16-bit stereo file: mixed to mono, resampled to 12 kHz, mu-law coded, chunked."""
    rate = 24000
    t = np.arange(rate) / rate
    left = (0.5 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    right = (0.1 * np.sin(2 * np.pi * 220 * t) * 32767).astype(np.int16)
    for i in range(3):
        write_wave(tmp_path / f"s{i}.wav", np.stack([left, right], axis=1), rate, 2)
    b = build_data("audio", root=str(tmp_path), seq_len=2048)
    assert b.info["quantization"] == "mu_law" and b.info["sample_rate"] == 12000
    assert len(b.train) == 12000 // 2048 == 5
    mono = torch.from_numpy((left.astype(np.float32) + right.astype(np.float32)) / 2 / 32768)
    expected = mu_law_encode(resample(mono, rate, 12000))[: 5 * 2048].reshape(5, 2048)
    got = torch.stack([b.train[i] for i in range(5)])
    assert torch.equal(got, expected.long())
    decoded = mu_law_decode(got[1].to(torch.uint8))  # the signal itself, within mu-law resolution
    t12 = torch.arange(2048, 4096, dtype=torch.float64) / 12000
    ref = 0.25 * torch.sin(2 * math.pi * 440 * t12) + 0.05 * torch.sin(2 * math.pi * 220 * t12)
    assert (decoded.double() - ref).abs().max() < 0.02


def test_cache_is_reused_and_keyed_by_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_folder(tmp_path, n_files=3)
    build_data("audio", root=str(tmp_path), seq_len=1000)
    caches = sorted((tmp_path / ".zoo_cache").glob("*.npy"))
    assert len(caches) == 3  # one per split

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cache should have been reused")

    monkeypatch.setattr(audio_mod, "encode_file", fail)
    build_data("audio", root=str(tmp_path), seq_len=1000)  # no decoding
    monkeypatch.undo()
    build_data("audio", root=str(tmp_path), seq_len=1000, quantization="linear")
    assert len(list((tmp_path / ".zoo_cache").glob("*.npy"))) == 6


def test_flac_needs_soundfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_folder(tmp_path, n_files=3)
    (tmp_path / "extra.flac").write_bytes(b"fLaC")  # header only: never decoded here
    monkeypatch.setitem(sys.modules, "soundfile", None)  # import soundfile -> ImportError
    with pytest.raises(
        ImportError, match=r"extra.flac needs the optional soundfile package: pip install soundfile"
    ):
        build_data("audio", root=str(tmp_path), seq_len=1000)


def test_flac_with_soundfile(tmp_path: Path) -> None:
    sf = pytest.importorskip("soundfile")
    rng = np.random.default_rng(0)
    for i in range(3):
        samples = rng.integers(-20000, 20000, size=12000).astype(np.int16)
        sf.write(str(tmp_path / f"f{i}.flac"), samples, 12000, subtype="PCM_16")
    b = build_data("audio", root=str(tmp_path), seq_len=3000)
    data, _ = sf.read(str(tmp_path / b.info["files"]["val"][0]), dtype="float32")
    assert torch.equal(b.val[0], mu_law_encode(torch.from_numpy(data[:3000])).long())


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="no audio files") as err:
        build_data("audio", root=str(tmp_path / "none"))
    assert str(tmp_path / "none") in str(err.value)
    write_folder(tmp_path, n_files=2)
    with pytest.raises(ValueError, match="2 audio file.* cannot be split by file .* need at least 3"):
        build_data("audio", root=str(tmp_path), seq_len=1000)
    write_folder(tmp_path / "more", n_files=2)
    with pytest.raises(ValueError, match="yield no chunk of seq_len=65,536 samples at 12000 Hz"):
        build_data("audio", root=str(tmp_path))  # 1-second files, default 65,536-sample chunks
    with pytest.raises(ValueError, match=r"quantization must be one of \['mu_law', 'linear'\], got 'alaw'"):
        build_data("audio", root=str(tmp_path), quantization="alaw")
    with pytest.raises(ValueError, match="positive fraction"):
        build_data("audio", root=str(tmp_path), split=[1.0, 0.0, 0.0])
    (tmp_path / "broken.wav").write_bytes(b"RIFX\x00\x00\x00\x00WAVE")
    with pytest.raises(ValueError, match="broken.wav: not a WAV file"):
        build_data("audio", root=str(tmp_path), seq_len=1000)


def test_yaml_config_matches_builder(tmp_path: Path, data_yaml_options) -> None:
    """configs/data/audio.yaml: every key is an option whose value is the builder's default; it builds."""
    options = data_yaml_options("audio")
    write_folder(tmp_path / "audio", n_files=3, seconds=6.0)
    b = build_data(**{**options, "name": "audio"})
    assert b.seq_len == 65536 and (len(b.train), len(b.val), len(b.test)) == (1, 1, 1)
