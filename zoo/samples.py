"""The modes of ``scripts/sample.py``: samples, completions and continuations of a trained checkpoint.

* ``unconditional`` - ``num`` images drawn from scratch: one PNG grid;
* ``complete`` - the paper's completions (Child et al. 2019 §7, Figures 4-5 style): the top half of
  each of the first ``num`` images of ``split`` is given, the bottom half sampled; one PNG grid with a
  column per image and rows input / completion(s) / original;
* ``text`` - continuations of ``prompt`` (UTF-8) or of the first bytes of ``split``'s sequences,
  printed and written to a ``.txt`` (invalid UTF-8 shown as replacement characters);
* ``audio`` - continuations of the first samples of ``split``'s chunks, decoded back (mu-law or
  linear 8-bit, as the data set encoded them) to one ``.wav`` per sequence.

Every mode uses :func:`zoo.generate.generate` (key/value-cached, sparse-aware) and reports the bytes
per second it reached.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .amp import autocast, check_precision
from .errors import UserError, user_input
from .generate import check_generate_args, generate
from .media import HIDDEN, completion_grid, decode_text, is_image_shape, sample_grid, save_grid, write_wav
from .pretrained import Trained, load_trained, run_data

log = logging.getLogger(__name__)

MODES = ("unconditional", "complete", "text", "audio")
DEFAULT_FILES = {
    "unconditional": "unconditional.png",
    "complete": "complete.png",
    "text": "text.txt",
    "audio": "audio.wav",
}


class SampleError(UserError, ValueError):
    """A bad option of ``scripts/sample.py``; the message names it and what would be valid."""


@dataclass
class SampleConfig:
    """Options of ``scripts/sample.py`` (``configs/sample.yaml`` mirrors them)."""

    checkpoint: str | None = None  # a checkpoint file, or a run folder (its newest checkpoint)
    mode: str = "complete"  # unconditional | complete | text | audio
    num: int = 16  # images / sequences
    completions: int = 1  # complete mode: sampled completions per image (grid rows)
    split: str = "test"  # where complete / text / audio take their prompts: the first `num` sequences
    prompt_len: int | None = None  # bytes given; None = half a sequence (the top half of an image)
    prompt: str | None = None  # text mode: continue this text instead of the data's sequences
    max_new: int | None = None  # bytes sampled after the prompt; None = up to the model's seq_len
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 0  # the generator of every draw: same seed, same bytes
    device: str = "auto"  # auto = cuda when available, else cpu
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast)
    backend: str | None = None  # attention backend of the prefill; None = the checkpoint's
    nrow: int = 8  # unconditional mode: images per grid row
    scale: int = 2  # image modes: each pixel drawn as scale x scale
    out: str | None = None  # output file; None = <mode>.png / .txt / .wav in the run folder
    sample_rate: int | None = None  # audio mode: None = the data set's
    quantization: str | None = None  # audio mode: mu_law | linear; None = the data set's
    data: dict[str, Any] = field(default_factory=dict)  # overrides of the run's data config

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> SampleConfig:
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise SampleError(f"unknown option(s) {unknown}; valid options are {valid}")
        config = cls(**dict(options))
        config.validate()
        return config

    def validate(self) -> None:
        if not self.checkpoint:
            raise SampleError(
                "checkpoint=PATH is required (a checkpoint file or a run folder of scripts/train.py)"
            )
        if self.mode not in MODES:
            raise SampleError(f"mode must be one of {list(MODES)}, got {self.mode!r}")
        for name in ("num", "completions", "nrow", "scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SampleError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("prompt_len", "max_new", "top_k", "sample_rate"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise SampleError(f"{name} must be an integer >= 0 or null, got {value!r}")
        if self.split not in ("train", "val", "test"):
            raise SampleError(f"split must be 'train', 'val' or 'test', got {self.split!r}")
        if self.prompt is not None and self.mode != "text":
            raise SampleError(
                f"prompt=... is for mode=text; mode={self.mode} takes its prompts from the data"
            )
        try:
            check_precision(self.precision)
        except ValueError as err:
            raise SampleError(str(err).replace("trainer.precision", "precision")) from err


def _prompts(trained: Trained, cfg: SampleConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``num`` sequences of ``split`` ``(num, T)`` and their first ``prompt_len`` bytes."""
    data = run_data(trained, cfg.data)
    dataset = getattr(data, cfg.split)
    if len(dataset) < cfg.num:
        raise SampleError(
            f"the {cfg.split} split of {data.name!r} has {len(dataset)} sequences, fewer than num={cfg.num}"
        )
    originals = torch.stack([dataset[i] for i in range(cfg.num)]).long()  # (num, T)
    T = originals.shape[1]
    P = T // 2 if cfg.prompt_len is None else cfg.prompt_len
    if not 0 <= P < T:
        raise SampleError(f"prompt_len must be in [0, {T - 1}] for sequences of {T} bytes, got {P}")
    return originals, originals[:, :P]


def run_sampling(cfg: SampleConfig | Mapping[str, Any], out_dir: str | Path = ".") -> dict[str, Any]:
    """Run one mode (see the module docstring); returns files written, bytes, seconds and bytes/s."""
    from .train import resolve_device

    with user_input():  # the options, the checkpoint, the data: a mistake there is one line (zoo.cli)
        if not isinstance(cfg, SampleConfig):
            cfg = SampleConfig.from_dict(cfg)
        cfg.validate()
        device = resolve_device(cfg.device)
        trained = load_trained(cfg.checkpoint, device, attention_backend=cfg.backend)
        model = trained.model
        shape = list(model.config.data_shape)
        image_mode = cfg.mode in ("unconditional", "complete")
        if image_mode and not is_image_shape(shape):
            raise SampleError(
                f"mode={cfg.mode} draws images, but {trained.path} was trained on sequences shaped {shape}; "
                "use mode=text or mode=audio"
            )
        out = Path(cfg.out) if cfg.out else Path(out_dir) / DEFAULT_FILES[cfg.mode]
        gen = torch.Generator().manual_seed(cfg.seed)
        sampling = {"temperature": cfg.temperature, "top_k": cfg.top_k, "top_p": cfg.top_p, "generator": gen}

        originals = prompt = None
        if cfg.mode == "text" and cfg.prompt is not None:
            text_bytes = list(cfg.prompt.encode("utf-8"))
            prompt = torch.tensor(text_bytes, dtype=torch.long)[None].expand(cfg.num, -1)
        elif cfg.mode != "unconditional":
            originals, prompt = _prompts(trained, cfg)
        if cfg.mode == "complete":
            # (completions num, P): row k num + i completes image i
            prompt = prompt.repeat(cfg.completions, 1)
        num = prompt.shape[0] if prompt is not None else cfg.num
        P = 0 if prompt is None else prompt.shape[1]
        generate_args = {"prompt": prompt if P else None, "max_new": cfg.max_new, **sampling}
        check_generate_args(model, num, **generate_args)

    tic = time.perf_counter()
    with autocast(cfg.precision, device):
        seqs = generate(model, num, **generate_args)  # (num, T)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - tic
    new_bytes = num * (seqs.shape[1] - P)
    files: list[Path] = []
    text = None

    if image_mode and seqs.shape[1] < model.config.seq_len:  # max_new short of an image: the rest grey
        seqs = torch.cat([seqs, seqs.new_full((num, model.config.seq_len - seqs.shape[1]), HIDDEN)], dim=1)
    if cfg.mode == "unconditional":
        files.append(save_grid(sample_grid(seqs, shape, nrow=min(cfg.nrow, num), scale=cfg.scale), out))
    elif cfg.mode == "complete":
        assert originals is not None
        files.append(save_grid(completion_grid(originals, seqs, P, shape, scale=cfg.scale), out))
    elif cfg.mode == "text":
        blocks = []
        for k, row in enumerate(seqs.cpu()):
            blocks.append(
                f"=== sample {k} ({P} prompt bytes + {row.numel() - P} sampled) ===\n"
                f"{decode_text(row[:P])}\u2502{decode_text(row[P:])}"  # a bar marks where the prompt ends
            )
        text = "\n\n".join(blocks) + "\n"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        files.append(out)
    else:  # audio
        rate, quant = _audio_format(trained, cfg)
        for k, row in enumerate(seqs.cpu()):
            files.append(
                write_wav(out.with_name(f"{out.stem}_{k:02d}{out.suffix or '.wav'}"), row, rate, quant)
            )
    return {
        "mode": cfg.mode,
        "checkpoint": str(trained.path),
        "step": trained.step,
        "files": [str(f) for f in files],
        "text": text,
        "sequences": num,
        "prompt_bytes": P,
        "new_bytes": new_bytes,
        "seconds": seconds,
        "bytes_per_s": new_bytes / max(seconds, 1e-9),
        "device": str(device),
        "backend": model.config.attention_backend,
    }


def _audio_format(trained: Trained, cfg: SampleConfig) -> tuple[int, str]:
    """Sample rate and quantisation: the options, else the run's audio data config."""
    data_cfg = dict((trained.run_config or {}).get("data") or {})
    if data_cfg.get("name") != "audio" and (cfg.sample_rate is None or cfg.quantization is None):
        log.warning(
            "the checkpoint was not trained on audio (data %r): writing its bytes as %s audio at %s Hz",
            data_cfg.get("name"), cfg.quantization or "mu_law", cfg.sample_rate or 12000,
        )  # fmt: skip
    rate = cfg.sample_rate or int(data_cfg.get("sample_rate") or 12000)
    quant = cfg.quantization or str(data_cfg.get("quantization") or "mu_law")
    return rate, quant


def summary(result: Mapping[str, Any]) -> str:
    """The script's last line: bytes sampled, time, bytes/s and where the files went."""
    files = result["files"]
    where = ", ".join(files) if len(files) <= 2 else f"{len(files)} files in {Path(files[0]).parent}"
    return (
        f"{result['mode']}: {result['sequences']} sequences, {result['new_bytes']:,} bytes sampled in "
        f"{result['seconds']:.2f} s = {result['bytes_per_s']:,.0f} bytes/s ({result['device']}, prefill "
        f"backend {result['backend']}); wrote {where}"
    )
