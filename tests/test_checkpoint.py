"""Checkpoint files (zoo.checkpoint): opened without running code, older formats read, written like other outputs."""

from __future__ import annotations

import errno
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fault_inject import write_foreign_checkpoint, write_payload_checkpoint

import zoo.checkpoint as checkpoint
from zoo.checkpoint import (
    CheckpointError,
    UnsafeCheckpointError,
    check_library_checkpoint,
    load_checkpoint,
    save_atomic,
)
from zoo.data import build_data
from zoo.registry import build
from zoo.train import Trainer, TrainerConfig

REPO = Path(__file__).resolve().parents[1]


def tiny():
    torch.manual_seed(0)
    return build("strided", n_layer=1, n_embd=16, n_head=2, seq_len=16, data_shape=[4, 4], dropout=0.1)


def data():
    return build_data("synthetic", size=20, val_size=8, test_size=4, seq_len=16, data_shape=[4, 4])


def config(**overrides) -> TrainerConfig:
    options = dict(
        steps=8, batch_size=4, warmup_steps=1, eval_every=4, eval_examples=4, progress=False, test=False
    )
    options.update(overrides)
    return TrainerConfig(**options)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    Trainer(tiny(), data(), config(steps=4), run_dir=run_dir).fit()
    return run_dir / "checkpoints" / "step_00000004.pt"


def test_a_checkpoint_is_tensors_and_plain_values(trained: Path) -> None:
    """torch.load's own weights_only=True, with nothing allowlisted, reads every entry (RNG states included)."""
    assert torch.serialization.get_unsafe_globals_in_checkpoint(trained) == []
    state = torch.load(trained, weights_only=True)
    assert state["format_version"] == checkpoint.FORMAT_VERSION == 2
    name, key, *_ = state["rng"][0]["numpy"]
    assert name == "MT19937" and isinstance(key, torch.Tensor) and key.shape == (624,)


def test_a_code_payload_is_refused_and_never_runs(trained: Path, tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    evil = write_payload_checkpoint(tmp_path / "evil.pt", marker, load_checkpoint(trained))
    with pytest.raises(
        UnsafeCheckpointError, match=r"refusing to open .*evil\.pt.*\['builtins\.exec'\].*nothing in it ran"
    ):
        load_checkpoint(evil)
    for resume in (str(evil),):
        with pytest.raises(UnsafeCheckpointError):
            Trainer(tiny(), data(), config(resume=resume)).fit()
    assert not marker.exists()
    # the payload is real: the unsafe way of opening the file runs it
    code = f"import torch, sys; sys.path.insert(0, 'tests'); torch.load({str(evil)!r}, weights_only=False)"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, timeout=120)
    assert marker.read_text() == "the payload ran"


def test_format_1_checkpoints_with_numpy_rng_states_still_resume_exactly(
    trained: Path, tmp_path: Path
) -> None:
    """Files of format version 1 hold NumPy's RNG state as a NumPy array: read with only NumPy's array globals
    allowed, they resume exactly as the same state in today's format; NumPy plus anything else is refused."""
    state = load_checkpoint(trained)
    old = dict(state, format_version=1)
    old["rng"] = [dict(r) for r in state["rng"]]
    name, key, pos, has_gauss, gauss = state["rng"][0]["numpy"]
    old["rng"][0]["numpy"] = (name, key.numpy().astype(np.uint32), pos, has_gauss, gauss)  # the old layout
    old.pop("best_selection")
    legacy = tmp_path / "v1.pt"
    torch.save(old, legacy)
    assert set(torch.serialization.get_unsafe_globals_in_checkpoint(legacy)) <= set(
        checkpoint.NUMPY_ARRAY_GLOBALS
    )

    def resume_and_train(path: Path) -> list[float]:
        random.seed(1)
        np.random.seed(1)
        trainer = Trainer(tiny(), data(), config(resume=str(path), steps=6, eval_every=0, final_val=False))
        trainer.maybe_resume()
        assert trainer.step == 4 and isinstance(np.random.get_state()[1], np.ndarray)
        batches = trainer.train_batches()
        return [trainer.train_step(next(batches))["loss"] for _ in range(2)] + [float(np.random.rand())]

    assert resume_and_train(legacy) == resume_and_train(trained)

    marker = tmp_path / "payload-ran"
    write_payload_checkpoint(tmp_path / "v1c.pt", marker, old)  # NumPy arrays and a payload
    with pytest.raises(UnsafeCheckpointError, match=r"\['builtins\.exec'\]"):
        load_checkpoint(tmp_path / "v1c.pt")
    assert not marker.exists()


def test_another_librarys_file_is_named_as_such(tmp_path: Path) -> None:
    path = write_foreign_checkpoint(tmp_path / "resnet18.pt")
    state = load_checkpoint(path)  # a dict of tensors: readable, but not ours
    with pytest.raises(
        CheckpointError, match=r"resnet18\.pt is not a checkpoint of this library \(it looks like a bare"
    ):
        check_library_checkpoint(state, path)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(
        CheckpointError, match=r"list\.pt is not a checkpoint of this library: it holds a list"
    ):
        load_checkpoint(tmp_path / "list.pt")


def test_empty_truncated_missing_and_folder(trained: Path, tmp_path: Path) -> None:
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pt is empty \(0 bytes\)"):
        load_checkpoint(tmp_path / "empty.pt")
    raw = trained.read_bytes()
    (tmp_path / "cut.pt").write_bytes(raw[: len(raw) - 200])
    with pytest.raises(CheckpointError, match=r"cut\.pt could not be read .*corrupt"):
        load_checkpoint(tmp_path / "cut.pt")
    with pytest.raises(FileNotFoundError, match=r"nope\.pt does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match=r"is a folder, not a checkpoint file"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_checkpoints_get_the_mode_of_other_outputs(tmp_path: Path, umask: int, mode: int) -> None:
    previous = os.umask(umask)
    try:
        path = save_atomic({"a": 1}, tmp_path / "ck.pt")
        other = tmp_path / "metrics.json"
        other.write_text("{}")
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == mode == other.stat().st_mode & 0o777


def test_a_full_disk_surfaces_as_oserror_and_leaves_the_old_file(tmp_path: Path, monkeypatch) -> None:
    """torch.save reports a failed write of its stream as a RuntimeError; save_atomic raises the OSError itself."""
    path = save_atomic({"a": 1}, tmp_path / "ck.pt")

    class Full:
        def __init__(self, fh):
            self.fh, self.n = fh, 0

        def write(self, b):
            self.n += len(b)
            if self.n > 64:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.fh.write(b)

        def flush(self):
            self.fh.flush()

    real_init = checkpoint._RecordingWriter.__init__
    monkeypatch.setattr(checkpoint._RecordingWriter, "__init__", lambda self, fh: real_init(self, Full(fh)))
    with pytest.raises(OSError, match="No space left on device") as info:
        save_atomic({"a": torch.zeros(10_000)}, path)
    assert info.value.errno == errno.ENOSPC
    assert load_checkpoint(path) == {"a": 1} and [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


def test_mmap_and_legacy_zip_free_files(trained: Path, tmp_path: Path) -> None:
    mapped, read = load_checkpoint(trained, mmap=True), load_checkpoint(trained)
    assert mapped["step"] == 4 and all(torch.equal(mapped["model"][k], v) for k, v in read["model"].items())
    legacy = tmp_path / "legacy.pt"
    torch.save({"format_version": 2, "model": {}}, legacy, _use_new_zipfile_serialization=False)
    assert load_checkpoint(legacy, mmap=True)["format_version"] == 2
