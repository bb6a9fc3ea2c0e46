"""Raw audio as byte sequences: a folder of WAV/FLAC files at 12 kHz, 256 levels (Child et al. 2019, §7.4).

Pipeline per file: decode -> mix to mono -> resample to ``sample_rate`` (12,000 Hz, the paper's rate)
-> quantise to 256 values -> cut into non-overlapping chunks of ``seq_len`` samples (65,536 by
default, about 5.5 s; the tail shorter than a chunk is dropped).

* Decoding: WAV is parsed here (:func:`read_wav`: integer PCM of 8/16/24/32 bits and 32/64-bit
  float, plain or WAVE_FORMAT_EXTENSIBLE), no dependency needed. FLAC (and any other extension
  listed in ``extensions``) is read with the optional ``soundfile`` package (``pip install
  soundfile``, or the ``audio`` extra of this project), which bundles libsndfile; without it such a
  file gives an ``ImportError`` saying so. A whole file is decoded into memory at once.
* Resampling (:func:`resample`): torchaudio is not used (it pins its own torch). This is a
  band-limited windowed-sinc interpolator: each output sample is the input convolved with a sinc
  low-pass at ``rolloff`` (0.95) times the lower of the two Nyquist frequencies, with a Kaiser
  window (beta 8.6) over ``zeros`` (16) zero crossings on each side, taps normalised to unit DC gain;
  exact for any pair of integer rates (phases come from integer arithmetic). Going to 12 kHz it keeps
  tones up to 3 kHz within 1e-4 and 5 kHz within about 1.5%, and attenuates what would alias: a
  6.5 kHz tone by about 50 dB, 7 kHz and above by about 100 dB (``tests/test_data_audio.py``).
* Quantisation (``quantization``): ``mu_law`` (default; mu = 255 companding as in WaveNet,
  van den Oord et al. 2016, the usual choice for 8-bit audio models) or ``linear`` (8-bit PCM:
  ``byte = clamp(floor(128 x) + 128, 0, 255)``, so an 8-bit WAV at 12 kHz comes back byte for byte).
  :func:`mu_law_decode` / :func:`linear_decode` invert them for listening to samples.

Splits are by file, so no recording leaks between them: the sorted file list is permuted with
``torch.randperm(n_files, seed=split_seed)``; ``split`` gives the fractions (val and test get at
least one file each, so at least 3 files are needed). The processed chunks of each split are
cached once as a ``(n_chunks, seq_len)`` ``uint8`` ``.npy`` in ``cache_dir`` (default
``<root>/.zoo_cache``; file name hashed from the settings and the files' sizes and times) and
memory-mapped. The loss is in bits per byte (= per sample).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .base import DataBundle, register_dataset
from .common import (
    DataNotFoundError,
    NpyRows,
    build_cache,
    check_choice,
    check_int,
    check_split,
    file_signature,
    reject_unknown,
    resolve_root,
    short_hash,
)

NAME = "audio"
QUANTIZATIONS = ("mu_law", "linear")
MU = 255
CACHE_FORMAT = 1
CACHE_FOLDER = ".zoo_cache"
SOUNDFILE_HINT = "pip install soundfile (or: pip install 'sparse-transformer-zoo[audio]')"

_OPTIONS = (
    "root",
    "cache_dir",
    "seq_len",
    "sample_rate",
    "quantization",
    "extensions",
    "split",
    "split_seed",
    "limit_train",
    "limit_val",
    "limit_test",
)


# --------------------------------------------------------------------------- decoding

_WAVE_FORMAT_PCM, _WAVE_FORMAT_FLOAT, _WAVE_FORMAT_EXTENSIBLE = 0x0001, 0x0003, 0xFFFE


@dataclass
class WavInfo:
    format_tag: int  # 1 = integer PCM, 3 = IEEE float (after resolving WAVE_FORMAT_EXTENSIBLE)
    channels: int
    sample_rate: int
    bits: int
    data_offset: int
    frames: int


def read_wav_info(path: str | Path) -> WavInfo:
    """Parse the RIFF header of a WAV file; ``ValueError`` naming the file for anything unsupported."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise ValueError(f"{path}: not a WAV file (no RIFF/WAVE header; starts with {head[:12]!r})")
        fmt: tuple[int, ...] | None = None
        while True:
            chunk = fh.read(8)
            if len(chunk) < 8:
                raise ValueError(f"{path}: WAV file without a {'fmt ' if fmt is None else 'data'} chunk")
            cid, csize = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"fmt ":
                body = fh.read(csize + (csize & 1))
                if csize < 16:
                    raise ValueError(f"{path}: WAV 'fmt ' chunk too short ({csize} bytes)")
                tag, channels, rate, _, block_align, bits = struct.unpack("<HHIIHH", body[:16])
                if tag == _WAVE_FORMAT_EXTENSIBLE:
                    if csize < 40:
                        raise ValueError(
                            f"{path}: WAVE_FORMAT_EXTENSIBLE 'fmt ' chunk too short ({csize} bytes)"
                        )
                    tag = struct.unpack("<H", body[24:26])[0]  # first two bytes of the sub-format GUID
                fmt = (tag, channels, rate, block_align, bits)
            elif cid == b"data":
                if fmt is None:
                    raise ValueError(f"{path}: WAV 'data' chunk before the 'fmt ' chunk")
                tag, channels, rate, block_align, bits = fmt
                supported = (tag == _WAVE_FORMAT_PCM and bits in (8, 16, 24, 32)) or (
                    tag == _WAVE_FORMAT_FLOAT and bits in (32, 64)
                )
                if not supported or channels < 1 or rate < 1 or block_align != channels * bits // 8:
                    raise ValueError(
                        f"{path}: unsupported WAV encoding (format tag {tag:#06x}, {bits} bits, {channels} channels, "
                        f"block align {block_align}); supported: integer PCM of 8/16/24/32 bits and 32/64-bit float"
                    )
                offset = fh.tell()
                csize = min(csize, size - offset)  # streamed files may carry a placeholder size
                return WavInfo(tag, channels, rate, bits, offset, csize // block_align)
            else:
                fh.seek(csize + (csize & 1), 1)


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode a WAV file -> ``(samples (frames, channels) float32 in [-1, 1], sample_rate)``."""
    info = read_wav_info(path)
    width = info.bits // 8
    count = info.frames * info.channels
    raw = np.fromfile(path, dtype=np.uint8, count=count * width, offset=info.data_offset)
    if info.format_tag == _WAVE_FORMAT_FLOAT:
        data = raw.view("<f4" if width == 4 else "<f8").astype(np.float32)
    elif width == 1:  # unsigned, 128 = silence
        data = (raw.astype(np.float32) - 128.0) / 128.0
    elif width == 3:  # little-endian 24-bit: assemble into the top bytes of an int32
        b = raw.reshape(-1, 3).astype(np.int32)
        data = ((b[:, 0] << 8) | (b[:, 1] << 16) | (b[:, 2] << 24)).astype(np.float32) / 2.0**31
    else:
        data = raw.view("<i2" if width == 2 else "<i4").astype(np.float32) / float(2 ** (info.bits - 1))
    return data.reshape(info.frames, info.channels), info.sample_rate


def _soundfile(path: Path) -> Any:
    try:
        import soundfile
    except (ImportError, OSError) as err:  # OSError: installed without a usable libsndfile
        raise ImportError(
            f"reading {path.name} needs the optional soundfile package: {SOUNDFILE_HINT}"
        ) from err
    return soundfile


def audio_info(path: Path) -> tuple[int, int]:
    """``(frames, sample_rate)`` from the header alone."""
    if path.suffix.lower() == ".wav":
        info = read_wav_info(path)
        return info.frames, info.sample_rate
    sf = _soundfile(path)
    try:
        info = sf.info(str(path))
    except Exception as err:  # libsndfile's errors: unreadable or not audio
        raise ValueError(f"{path}: not a readable audio file ({type(err).__name__}: {err})") from err
    return int(info.frames), int(info.samplerate)


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """Decode ``path`` -> ``(mono samples (frames,) float32, sample_rate)``; channels are averaged."""
    if path.suffix.lower() == ".wav":
        data, rate = read_wav(path)
    else:
        data, rate = _soundfile(path).read(str(path), dtype="float32", always_2d=True)
    return data.mean(axis=1, dtype=np.float32), int(rate)  # (frames,)


# --------------------------------------------------------------------------- resampling


def resampled_length(frames: int, orig: int, new: int) -> int:
    """Number of output samples: those at times ``m / new < frames / orig``."""
    g = math.gcd(orig, new)
    m_in, l_out = orig // g, new // g
    return -(-frames * l_out // m_in)


def resample(
    x: Tensor,
    orig: int,
    new: int,
    zeros: int = 16,
    rolloff: float = 0.95,
    beta: float = 8.6,
    chunk: int = 2**16,
) -> Tensor:
    """Band-limited resampling of ``x`` ``(n,)`` from ``orig`` Hz to ``new`` Hz (windowed sinc, see module doc).

    Output sample ``m`` sits at input time ``t = m * orig / new``; with ``orig / new = M / L`` in
    lowest terms, ``t = floor(m M / L) + p / L`` with phase ``p = m M mod L``, so one kernel per
    phase (``L`` of them, at most ``new``) serves all outputs. Samples outside the signal are zero.
    """
    if orig <= 0 or new <= 0:
        raise ValueError(f"sample rates must be positive, got {orig} -> {new}")
    if orig == new:
        return x.clone()
    g = math.gcd(orig, new)
    m_in, l_out = orig // g, new // g
    cutoff = rolloff * min(1.0, l_out / m_in)  # fraction of the input Nyquist frequency
    half = math.ceil(zeros / cutoff)  # half width of the kernel in input samples
    taps = torch.arange(-half, half + 1, dtype=torch.float64)  # (K,) offsets j of the input samples
    phase = torch.arange(l_out, dtype=torch.float64) / l_out  # (L,) fractional input times
    tau = phase[:, None] - taps[None, :]  # (L, K) output time minus input sample time
    inside = tau.abs() <= half
    window = torch.special.i0(
        beta * torch.sqrt(torch.clamp(1 - (tau / half) ** 2, min=0.0))
    ) / torch.special.i0(torch.tensor(beta, dtype=torch.float64))
    kernels = cutoff * torch.sinc(cutoff * tau) * window * inside  # (L, K)
    kernels = (kernels / kernels.sum(dim=1, keepdim=True)).to(torch.float32)  # unit gain at DC

    n_out = resampled_length(x.shape[0], orig, new)
    padded = torch.nn.functional.pad(x.to(torch.float32), (half, half + 1))  # (n + 2 half + 1,)
    out = torch.empty(n_out, dtype=torch.float32)
    offsets = torch.arange(2 * half + 1)  # (K,) positions in ``padded`` relative to floor(t) - half
    for first in range(0, n_out, chunk):
        m = torch.arange(first, min(first + chunk, n_out), dtype=torch.int64)  # (C,)
        base = (m * m_in) // l_out  # (C,) floor of the input time
        p = (m * m_in) % l_out  # (C,) phase
        window_idx = base[:, None] + offsets[None, :]  # (C, K) into padded (shifted by ``half``)
        out[first : first + m.shape[0]] = (padded[window_idx] * kernels[p]).sum(dim=1)
    return out


# --------------------------------------------------------------------------- quantisation


def mu_law_encode(x: Tensor, mu: int = MU) -> Tensor:
    """``x`` in [-1, 1] -> ``uint8`` 0..mu by mu-law companding: ``sign(x) ln(1 + mu|x|) / ln(1 + mu)``, rounded."""
    x = x.clamp(-1.0, 1.0)
    y = torch.sign(x) * torch.log1p(mu * x.abs()) / math.log1p(mu)  # in [-1, 1]
    return torch.floor((y + 1) / 2 * mu + 0.5).clamp(0, mu).to(torch.uint8)


def mu_law_decode(q: Tensor, mu: int = MU) -> Tensor:
    """Inverse of :func:`mu_law_encode` (to the centre of each level)."""
    y = q.to(torch.float32) / mu * 2 - 1
    return torch.sign(y) * torch.expm1(y.abs() * math.log1p(mu)) / mu


def linear_encode(x: Tensor) -> Tensor:
    """``x`` in [-1, 1] -> ``uint8`` as 8-bit PCM: ``clamp(floor(128 x) + 128, 0, 255)``."""
    return (torch.floor(x * 128.0) + 128).clamp(0, 255).to(torch.uint8)


def linear_decode(q: Tensor) -> Tensor:
    return (q.to(torch.float32) - 128.0) / 128.0


# --------------------------------------------------------------------------- the data set


def find_files(root: Path, extensions: list[str], cache_dir: Path) -> list[Path]:
    wanted = {"." + e.lower().lstrip(".") for e in extensions}
    files = [
        p
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in wanted and cache_dir not in p.parents
    ]
    return sorted(files, key=lambda p: str(p.relative_to(root)))


def split_files(files: list[Path], fractions: tuple[float, float, float], seed: int) -> dict[str, list[Path]]:
    """Seeded split of whole files; val and test get ``max(1, floor(n f))`` files each, train the rest."""
    n = len(files)
    sizes = [max(1, math.floor(n * f)) for f in fractions[1:]]
    if n - sum(sizes) < 1:
        raise ValueError(
            f"{n} audio file(s) cannot be split by file into train/val/test with split {list(fractions)}: "
            f"need at least {sum(sizes) + 1}; add files"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    val = sorted(perm[: sizes[0]])
    test = sorted(perm[sizes[0] : sizes[0] + sizes[1]])
    train = sorted(perm[sizes[0] + sizes[1] :])
    return {
        "train": [files[i] for i in train],
        "val": [files[i] for i in val],
        "test": [files[i] for i in test],
    }


def encode_file(path: Path, sample_rate: int, quantization: str) -> Tensor:
    """Decode, mix to mono, resample and quantise one file -> ``(n,)`` ``uint8``."""
    samples, rate = read_audio(path)
    x = resample(torch.from_numpy(np.ascontiguousarray(samples)), rate, sample_rate)  # (n,) float32
    return mu_law_encode(x) if quantization == "mu_law" else linear_encode(x)


def cached_chunks(
    files: list[Path],
    split: str,
    root: Path,
    cache_dir: Path,
    seq_len: int,
    sample_rate: int,
    quantization: str,
) -> Path:
    """The ``(n_chunks, seq_len)`` ``uint8`` cache of one split's files (built once)."""
    infos = [audio_info(p) for p in files]
    chunks = [resampled_length(frames, rate, sample_rate) // seq_len for frames, rate in infos]
    if sum(chunks) == 0:
        longest = max(resampled_length(f, r, sample_rate) for f, r in infos)
        raise ValueError(
            f"the {split} split's {len(files)} audio file(s) yield no chunk of seq_len={seq_len:,} samples at "
            f"{sample_rate} Hz (longest: {longest:,} samples); use a shorter seq_len or longer files"
        )
    settings = {
        "seq_len": seq_len,
        "sample_rate": sample_rate,
        "quantization": quantization,
        "resampler": "kaiser-sinc-16-0.95-8.6",
    }
    meta = {
        "format": CACHE_FORMAT,
        "settings": settings,
        "sources": file_signature(files, root),
        "chunks": chunks,
    }

    def fill(out: np.ndarray) -> None:
        row = 0
        for path, count in zip(files, chunks):
            if count == 0:
                continue
            q = encode_file(path, sample_rate, quantization)  # (n,) uint8
            out[row : row + count] = q[: count * seq_len].reshape(count, seq_len).numpy()
            row += count

    path = cache_dir / f"audio_{split}_{short_hash(meta)}.npy"
    return build_cache(path, meta, (sum(chunks), seq_len), fill, what="the audio cache")


@register_dataset(NAME)
def audio(
    root: str | None = None,
    cache_dir: str | None = None,
    seq_len: int = 65536,
    sample_rate: int = 12000,
    quantization: str = "mu_law",
    extensions: tuple[str, ...] | list[str] = ("wav", "flac"),
    split: tuple[float, float, float] | list[float] = (0.9, 0.05, 0.05),
    split_seed: int = 0,
    limit_train: int | None = None,
    limit_val: int | None = None,
    limit_test: int | None = None,
    **unknown: Any,
) -> DataBundle:
    """A folder of audio files as ``(seq_len,)`` chunks of 8-bit samples at ``sample_rate`` Hz (§7.4)."""
    reject_unknown(NAME, unknown, _OPTIONS)
    seq_len = check_int("seq_len", seq_len, low=1)
    sample_rate = check_int("sample_rate", sample_rate, low=1)
    quantization = check_choice("quantization", quantization, QUANTIZATIONS)
    fractions = check_split("split", split)
    if min(fractions) <= 0:
        raise ValueError(
            f"split must give every split (train, val, test) a positive fraction of the files, got {list(fractions)}"
        )
    check_int("split_seed", split_seed, low=0)
    limits = [
        check_int(k, v, low=1, allow_none=True)
        for k, v in (("limit_train", limit_train), ("limit_val", limit_val), ("limit_test", limit_test))
    ]
    if isinstance(extensions, str) or not extensions or not all(isinstance(e, str) and e for e in extensions):
        raise ValueError(
            f"extensions must be a non-empty list of file extensions such as ['wav', 'flac'], got {extensions!r}"
        )
    data_root = resolve_root(root, NAME)
    cache = resolve_root(cache_dir, NAME, "data.cache_dir") if cache_dir else data_root / CACHE_FOLDER
    files = find_files(data_root, list(extensions), cache) if data_root.is_dir() else []
    if not files:
        raise DataNotFoundError(
            f"no audio files ({', '.join('*.' + e.lstrip('.') for e in extensions)}) found in the data root {data_root} "
            "or its subfolders.\nPut WAV or FLAC files there (any sample rate; they are resampled to "
            f"{sample_rate} Hz), or point data.root (or ZOO_DATA_ROOT, used as ZOO_DATA_ROOT/audio) at such a folder."
        )
    groups = split_files(files, fractions, split_seed)
    parts = {}
    for (name, group), limit in zip(groups.items(), limits):
        path = cached_chunks(group, name, data_root, cache, seq_len, sample_rate, quantization)
        rows = NpyRows(path)
        parts[name] = NpyRows(path, np.arange(min(rows.num_rows, limit or rows.num_rows)))
    return DataBundle(
        train=parts["train"],
        val=parts["val"],
        test=parts["test"],
        seq_len=seq_len,
        data_shape=[seq_len],
        name=NAME,
        info={
            "source": str(data_root),
            "cache": str(cache),
            "bits_per": "byte",
            "sample_rate": sample_rate,
            "quantization": quantization,
            "files": {k: [str(p.relative_to(data_root)) for p in v] for k, v in groups.items()},
            "splits": {k: len(v) for k, v in parts.items()},
        },
    )
