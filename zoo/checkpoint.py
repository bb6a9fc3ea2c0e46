"""Checkpoint files: written atomically, kept in rotation, validated before they are resumed.

:func:`save_atomic` writes to a temporary file in the destination folder, fsyncs it, then
``os.replace``-s it onto the final name (and fsyncs the folder), so a job killed mid-write never
leaves a truncated file under the real name and never damages an older good checkpoint.

A run folder holds ``checkpoints/step_NNNNNNNN.pt`` (the last ``keep_last`` of them, see
:func:`prune`) and ``checkpoints/best.pt`` (the lowest validation bits/dim so far). Each file is a
dict with ``format_version`` (:data:`FORMAT_VERSION`), the model config and weights, optimiser,
scheduler, loss scaler, step, data position and the RNG states of every rank
(:meth:`zoo.train.Trainer.state_dict`). :func:`find_resumable` picks the newest readable one for
``trainer.resume=auto``; :func:`check_compatible` explains why a checkpoint does not fit a model.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
STEP_FILE = re.compile(r"^step_(\d+)\.pt$")
BEST_FILE = "best.pt"
REQUIRED_KEYS = (
    "format_version",
    "model",
    "optimizer",
    "scheduler",
    "step",
    "epoch",
    "batch_in_epoch",
    "rng",
)


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used: unreadable, from another format version, or for another model."""


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows: folders cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Run ``write(fh)`` on a temporary file in ``path``'s folder, fsync, then ``os.replace`` onto ``path``.

    On any failure the temporary file is removed and whatever was at ``path`` before is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` via a temporary file in the same folder, fsync and ``os.replace``.

    On any failure the temporary file is removed and whatever was at ``path`` before is untouched.
    """
    return _write_atomic(path, lambda fh: torch.save(obj, fh))


def copy_atomic(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy ``src`` onto ``dst`` atomically (temporary file, fsync, rename), e.g. a step file to ``best.pt``."""

    def copy(fh: BinaryIO) -> None:
        with open(src, "rb") as inp:
            shutil.copyfileobj(inp, fh, 2**24)

    return _write_atomic(dst, copy)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_atomic`; a missing or unreadable file raises naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:
        raise CheckpointError(
            f"checkpoint {path} could not be read ({type(err).__name__}: {err}); it may be corrupt "
            "(e.g. truncated by a full disk)"
        ) from err
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, expected a dict of states")
    return state


def check_format(state: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` unless ``state`` is a training checkpoint of this format version."""
    version = state.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format_version {version!r}; this version of zoo reads {FORMAT_VERSION}"
        )
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks the entries {missing} of a training checkpoint")


def check_compatible(
    state: Mapping[str, Any],
    path: str | os.PathLike,
    model: nn.Module,
    model_config: Mapping[str, Any] | None,
    data: Mapping[str, Any] | None = None,
) -> None:
    """Raise :class:`CheckpointError` naming ``path`` and every mismatch between it and this run.

    Compares the model config (key by key), the data set's sequence shape, and the weights' names
    and shapes, so the message says *what* differs (e.g. ``n_embd: checkpoint 32, this run 16``).
    """
    problems: list[str] = []
    saved_config = state.get("model_config")
    if model_config is not None and saved_config is not None:
        for key in sorted(set(saved_config) | set(model_config)):
            a, b = saved_config.get(key, "<absent>"), model_config.get(key, "<absent>")
            if a != b:
                problems.append(f"model config {key}: checkpoint {a!r}, this run {b!r}")
    saved_data = state.get("data")
    if data is not None and saved_data is not None:
        for key in ("seq_len", "data_shape"):
            if key in saved_data and key in data and saved_data[key] != data[key]:
                problems.append(f"data {key}: checkpoint {saved_data[key]!r}, this run {data[key]!r}")
    saved = state["model"]
    current = model.state_dict()
    missing = sorted(set(current) - set(saved))
    unexpected = sorted(set(saved) - set(current))
    if missing:
        problems.append(
            f"weights missing from the checkpoint: {missing[:5]}{' ...' if len(missing) > 5 else ''}"
        )
    if unexpected:
        problems.append(f"weights not in this model: {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    shapes = [
        f"{k}: checkpoint {tuple(saved[k].shape)}, this model {tuple(v.shape)}"
        for k, v in current.items()
        if k in saved and tuple(saved[k].shape) != tuple(v.shape)
    ]
    if shapes:
        problems.append(f"weight shapes differ: {'; '.join(shapes[:5])}{' ...' if len(shapes) > 5 else ''}")
    if problems:
        raise CheckpointError(
            f"checkpoint {path} does not match this run's model:\n  " + "\n  ".join(problems)
        )


def step_checkpoints(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, path)`` of the ``step_N.pt`` files in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        m = STEP_FILE.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def find_resumable(
    directory: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[Path, dict] | None:
    """The newest ``step_N.pt`` in ``directory`` that can be read, with its state; ``None`` if there is none.

    Unreadable files (truncated, wrong format) are skipped with a warning and left in place.
    """
    for step, path in reversed(step_checkpoints(directory)):
        try:
            state = load_checkpoint(path, map_location)
            check_format(state, path)
        except CheckpointError as err:
            log.warning("skipping checkpoint %s: %s", path, err)
            continue
        if int(state["step"]) != step:
            log.warning("skipping checkpoint %s: it holds step %s", path, state["step"])
            continue
        return path, state
    return None


def prune(directory: str | os.PathLike, keep_last: int, protect: Path | None = None) -> list[Path]:
    """Delete all but the newest ``keep_last`` ``step_N.pt`` files (never ``protect`` nor ``best.pt``)."""
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    files = step_checkpoints(directory)
    removed = []
    for _, path in files[: max(0, len(files) - keep_last)]:
        if protect is not None and path.resolve() == protect.resolve():
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed
