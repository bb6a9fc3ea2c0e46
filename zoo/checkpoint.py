"""Checkpoint files: written atomically, opened without running code, checked before they are used.

:func:`save_atomic` writes to a temporary file in the destination folder, fsyncs it, then
``os.replace``-s it onto the final name (and fsyncs the folder), so a job killed mid-write never
leaves a truncated file under the real name and never damages an older good checkpoint. Files get
the mode other outputs get (``0644`` under the usual umask), not ``mkstemp``'s ``0600``.

:func:`load_checkpoint` opens a file with ``torch.load(weights_only=True)``: only tensors and plain
Python values (dicts, lists, tuples, numbers, strings) are unpickled, so a file that someone shared
cannot run code when it is resumed, evaluated, sampled from or visualised. A file whose pickle
refers to anything else is refused (:class:`UnsafeCheckpointError`), naming what it refers to.
Checkpoints of format version 1 hold NumPy's RNG state as a NumPy array; they are read with the
three NumPy globals an array needs allowlisted (:data:`NUMPY_ARRAY_GLOBALS`) and nothing else.

A run folder holds ``checkpoints/step_NNNNNNNN.pt`` and ``checkpoints/best.pt``; which of them a run
resumes from, when ``best.pt`` is replaced and which step files are deleted is the checkpoint
policy of :mod:`zoo.checkpointing`. Each file is a dict with ``format_version``
(:data:`FORMAT_VERSION`), the model config and weights, optimiser, scheduler, loss scaler, step,
data position and the RNG states of every rank (:meth:`zoo.train.Trainer.state_dict`).
:func:`check_format` says whether a dict is a training checkpoint of this library,
:func:`check_compatible` explains why one does not fit a model.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from .errors import UserError, warn_once

log = logging.getLogger(__name__)

#: 2: RNG states as tensors and plain values (no NumPy arrays), ``best`` selection record
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: NumPy's RNG state as a NumPy array (read with NUMPY_ARRAY_GLOBALS)
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
#: the globals a pickled NumPy array refers to (version-1 checkpoints); allowlisted for those alone
NUMPY_ARRAY_GLOBALS = (
    "numpy.ndarray",
    "numpy.dtype",
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray._reconstruct",
)
_NUMPY_DTYPE_GLOBAL = re.compile(r"^numpy\.dtypes\.\w+DType$")


class CheckpointError(UserError, RuntimeError):
    """A checkpoint cannot be used: unreadable, unsafe, not this library's, or for another model or data set."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file named does not exist."""


class UnsafeCheckpointError(CheckpointError):
    """The file's pickle refers to functions or classes (code): it is refused unopened."""


class CheckpointWriteError(CheckpointError, OSError):
    """Writing a checkpoint failed (e.g. a full disk); every earlier file is as it was."""


# --------------------------------------------------------------------------------- writing
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


def _file_mode() -> int:
    """The mode ``open()`` gives a new file: ``0o666`` less the process umask (``0o644`` under umask 022)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Run ``write(fh)`` on a temporary file in ``path``'s folder, fsync, then ``os.replace`` onto ``path``.

    On any failure the temporary file is removed and whatever was at ``path`` before is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):  # mkstemp makes 0600 files; checkpoints are shared like other outputs
            os.fchmod(fd, _file_mode())
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


class _RecordingWriter:
    """A file object for ``torch.save`` that remembers the ``OSError`` of a failed write.

    ``torch.save`` turns a failed write of its output stream into a ``RuntimeError`` ("unexpected
    pos ..."); :func:`save_atomic` raises the recorded ``OSError`` (e.g. ``ENOSPC``) instead.
    """

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.fh.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.fh.flush()


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` via a temporary file in the same folder, fsync and ``os.replace``.

    On any failure the temporary file is removed and whatever was at ``path`` before is untouched; a
    failed write (a full disk) raises its ``OSError``.
    """

    def write(fh: BinaryIO) -> None:
        out = _RecordingWriter(fh)
        try:
            torch.save(obj, out)
        except RuntimeError:
            if out.error is not None:
                raise out.error from None
            raise

    return _write_atomic(path, write)


def copy_atomic(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy ``src`` onto ``dst`` atomically (temporary file, fsync, rename), e.g. a step file to ``best.pt``."""

    def copy(fh: BinaryIO) -> None:
        with open(src, "rb") as inp:
            shutil.copyfileobj(inp, fh, 2**24)

    return _write_atomic(dst, copy)


# --------------------------------------------------------------------------------- reading
def _numpy_array_globals() -> list[Any]:
    """The NumPy objects of :data:`NUMPY_ARRAY_GLOBALS` (and dtype classes), as ``safe_globals`` entries."""
    import numpy as np

    entries: list[Any] = [np.ndarray, np.dtype]
    for module_name in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            module = __import__(module_name, fromlist=["_reconstruct"])
        except ImportError:
            continue
        entries.append((module._reconstruct, f"{module_name}._reconstruct"))
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        entries += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return entries


def _is_numpy_array_global(name: str) -> bool:
    return name in NUMPY_ARRAY_GLOBALS or bool(_NUMPY_DTYPE_GLOBAL.match(name))


def _unreadable(path: Path, err: BaseException) -> CheckpointError:
    reason = (str(err).splitlines() or [""])[0].split(". ")[0]  # torch's first sentence
    return CheckpointError(
        f"checkpoint {path} could not be read ({type(err).__name__}: {reason}); "
        "it may be corrupt (e.g. truncated by a full disk or an interrupted copy)"
    )


def _load_refused(path: Path, map_location: Any, mmap: bool, err: BaseException) -> Any:
    """``torch.load(weights_only=True)`` refused the file: read it if only NumPy arrays were refused, else say why."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not even a pickle we can list: corrupt
        raise _unreadable(path, err) from err
    if not names:
        raise _unreadable(path, err) from err
    if all(_is_numpy_array_global(n) for n in names):  # a version-1 checkpoint: NumPy RNG state
        try:
            with torch.serialization.safe_globals(_numpy_array_globals()):
                return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
        except Exception as again:
            raise _unreadable(path, again) from again
    foreign = [n for n in names if not _is_numpy_array_global(n)]
    raise UnsafeCheckpointError(
        f"refusing to open {path}: its pickle refers to {foreign}, code that unpickling would run; nothing in "
        "it ran (torch.load with weights_only=True). Checkpoints of this library hold tensors and plain values "
        "only: this file was written by other code, or altered."
    ) from err


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", mmap: bool = False
) -> dict[str, Any]:
    """Open a checkpoint without running code (``weights_only=True``); a missing, empty, unreadable or
    unsafe file raises a :class:`CheckpointError` naming it.

    ``mmap=True`` maps the tensors instead of reading them (cheap to look at ``step`` or ``val_bpd``
    of a large file; files in the legacy non-zip format are then read normally).
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a checkpoint file" if path.is_dir() else "does not exist"
        raise CheckpointNotFoundError(f"checkpoint {path} {what}")
    if path.stat().st_size == 0:
        raise CheckpointError(
            f"checkpoint {path} is empty (0 bytes): its write never happened (e.g. a full disk or a killed copy)"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        state = _load_refused(path, map_location, mmap, err)
    except RuntimeError as err:
        if mmap and "mmap" in str(err):  # a legacy (non-zip) file cannot be mapped: read it
            return load_checkpoint(path, map_location)
        raise _unreadable(path, err) from err
    except Exception as err:
        raise _unreadable(path, err) from err
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path} is not a checkpoint of this library: it holds a {type(state).__name__}, "
            "expected the dict of states that scripts/train.py writes"
        )
    return state


# --------------------------------------------------------------------------------- checks
def check_library_checkpoint(state: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` unless ``state`` was written by this library (a readable version, weights)."""
    if "format_version" not in state:
        keys = sorted(str(k) for k in state)
        bare = bool(state) and all(isinstance(v, torch.Tensor) for v in state.values())
        raise CheckpointError(
            f"{path} is not a checkpoint of this library"
            + (" (it looks like a bare state dict of weights)" if bare else "")
            + f": it has no 'format_version' entry (its keys: {keys[:6]}{' ...' if len(keys) > 6 else ''}). "
            "Checkpoints come from scripts/train.py (zoo.train.Trainer.save_checkpoint)."
        )
    version = state.get("format_version")
    if version not in READABLE_VERSIONS:
        raise CheckpointError(
            f"checkpoint {path} has format_version {version!r}; this version of zoo reads "
            f"{list(READABLE_VERSIONS)} (a newer version of the library wrote it?)"
        )
    if "model" not in state:
        raise CheckpointError(
            f"checkpoint {path} holds no model weights ('model' entry); keys: {sorted(state)}"
        )


def check_format(state: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` unless ``state`` is a training checkpoint of a readable format version."""
    check_library_checkpoint(state, path)
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks the entries {missing} of a training checkpoint")


def stored_model_config(state: Mapping[str, Any], path: str | os.PathLike) -> dict[str, Any] | None:
    """The checkpoint's model config as this version's :class:`~zoo.model.ModelConfig` fields, or ``None``.

    A config written by another version of the library may lack fields added since (they take their
    defaults, with one warning naming them) or hold fields this version does not know (refused:
    :class:`CheckpointError` naming them, since the weights may depend on them).
    """
    saved = state.get("model_config")
    if not isinstance(saved, Mapping):
        return None
    from .model import ModelConfig

    fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(saved) - set(fields))
    if unknown:
        raise CheckpointError(
            f"checkpoint {path} has model config keys this version of zoo does not know: {unknown} "
            "(written by another version of the library?); valid keys are "
            f"{list(fields)}"
        )
    config = dict(saved)
    missing = [name for name in fields if name not in config]
    if missing:
        defaults = dataclasses.asdict(ModelConfig())
        for name in missing:
            config[name] = defaults[name]
        warn_once(
            log,
            "checkpoint %s predates the model config keys %s: they take their defaults %s",
            path,
            missing,
            {name: defaults[name] for name in missing},
        )
    return config


def check_compatible(
    state: Mapping[str, Any],
    path: str | os.PathLike,
    model: nn.Module,
    model_config: Mapping[str, Any] | None,
    data: Mapping[str, Any] | None = None,
) -> None:
    """Raise :class:`CheckpointError` naming ``path`` and every mismatch between it and this run.

    Compares the model config (key by key, after :func:`stored_model_config`), the data set (name and
    sequence shape), and the weights' names and shapes, so the message says *what* differs (e.g.
    ``n_embd: checkpoint 32, this run 16``).
    """
    problems: list[str] = []
    saved_config = stored_model_config(state, path)
    if model_config is not None and saved_config is not None:
        for key in sorted(set(saved_config) | set(model_config)):
            a, b = saved_config.get(key, "<absent>"), model_config.get(key, "<absent>")
            if a != b:
                problems.append(f"model config {key}: checkpoint {a!r}, this run {b!r}")
    saved_data = state.get("data")
    if data is not None and isinstance(saved_data, Mapping):
        for key in ("name", "seq_len", "data_shape"):
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


# --------------------------------------------------------------------------------- run folders
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


def prune(
    directory: str | os.PathLike,
    keep_last: int,
    protect: Path | None = None,
    skip: frozenset[Path] | set[Path] = frozenset(),
) -> list[Path]:
    """Delete all but the newest ``keep_last`` ``step_N.pt`` files (never ``protect`` nor ``best.pt``).

    Files in ``skip`` (known to be unreadable) neither count towards ``keep_last`` nor are deleted:
    they are left for inspection and do not push good checkpoints out.
    """
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    skipped = {p.resolve() for p in skip}
    files = [(s, p) for s, p in step_checkpoints(directory) if p.resolve() not in skipped]
    removed = []
    for _, path in files[: max(0, len(files) - keep_last)]:
        if protect is not None and path.resolve() == protect.resolve():
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed
