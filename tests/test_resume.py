"""Exact resumption from checkpoints (zoo.train.Trainer + zoo.checkpoint).

Train 2k steps uninterrupted; train k, "kill" (an exception mid-step, then a new model, a new Trainer
and scrambled global RNGs), resume with ``resume=auto`` and train k more: the loss curve and the final
weights must be bit-identical on CPU float32 (with dropout on, so the RNG states matter, and an epoch
boundary crossed, so the data position matters).
"""

from __future__ import annotations

import logging
import random

import numpy as np
import pytest
import torch

from zoo.checkpoint import FORMAT_VERSION, CheckpointError, load_checkpoint, save_atomic
from zoo.data import build_data
from zoo.registry import build
from zoo.train import Trainer, TrainerConfig

K = 6  # 5 batches per epoch: the resume at step 6 starts inside epoch 1


def tiny(n_embd: int = 16, dropout: float = 0.1, seed: int = 0):
    torch.manual_seed(seed)
    return build(
        "strided", n_layer=1, n_embd=n_embd, n_head=2, seq_len=16, data_shape=[4, 4], dropout=dropout
    )


def data():
    return build_data("synthetic", size=20, val_size=8, test_size=4, seq_len=16, data_shape=[4, 4])


def config(**overrides) -> TrainerConfig:
    options = dict(
        steps=2 * K,
        batch_size=4,
        lr=3e-3,
        warmup_steps=2,
        eval_every=4,
        eval_examples=8,
        log_every=1,
        checkpoint_every=3,
        keep_last=2,
        progress=False,
        test=False,
    )
    options.update(overrides)
    return TrainerConfig(**options)


def curve(history, key="train/loss"):
    return [(r["step"], r[key]) for r in history if key in r]


class Killed(Exception):
    pass


def scramble_global_rngs():
    torch.manual_seed(12345)
    random.seed(12345)
    np.random.seed(12345)


def test_resume_gives_the_uninterrupted_loss_curve_and_weights(tmp_path):
    straight = Trainer(tiny(), data(), config(), run_dir=tmp_path / "a")
    expected = straight.fit()

    first = Trainer(tiny(), data(), config(), run_dir=tmp_path / "b")
    real_step = first.train_step

    def dies_at_step_k_plus_1(batch):
        if first.step == K:  # the checkpoint of step K is on disk; step K+1 never completes
            raise Killed
        return real_step(batch)

    first.train_step = dies_at_step_k_plus_1
    with pytest.raises(Killed):
        first.fit()
    ckpts = tmp_path / "b" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["best.pt", "step_00000003.pt", "step_00000006.pt"]

    scramble_global_rngs()  # a new process: other RNG states, a differently initialised model
    second = Trainer(tiny(seed=99), data(), config(resume="auto"), run_dir=tmp_path / "b")
    resumed = second.fit()
    assert resumed["resumed_from"] == str(ckpts / "step_00000006.pt")

    assert len(curve(expected["history"])) == 2 * K
    assert curve(resumed["history"]) == curve(expected["history"])  # exactly equal floats
    assert curve(resumed["history"], "val/bpd") == curve(expected["history"], "val/bpd")
    assert curve(resumed["history"], "lr") == curve(expected["history"], "lr")
    assert resumed["val_bpd"] == expected["val_bpd"]
    for (name, a), b in zip(straight.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert (second.epoch, second.batch_in_epoch) == (straight.epoch, straight.batch_in_epoch) == (2, 2)
    # keep_last=2: only the two newest step checkpoints remain, plus best.pt
    assert sorted(p.name for p in ckpts.iterdir()) == ["best.pt", "step_00000009.pt", "step_00000012.pt"]


def test_resume_auto_without_checkpoints_starts_fresh(tmp_path):
    trainer = Trainer(tiny(), data(), config(resume="auto", steps=2), run_dir=tmp_path)
    assert trainer.maybe_resume() is None and trainer.step == 0


def _run_to_step_6(tmp_path):
    trainer = Trainer(tiny(), data(), config(steps=K, eval_every=0, final_val=False), run_dir=tmp_path)
    trainer.fit()
    return tmp_path / "checkpoints"


def test_auto_skips_a_truncated_checkpoint_but_a_named_one_fails(tmp_path, caplog):
    ckpts = _run_to_step_6(tmp_path)
    newest = ckpts / "step_00000006.pt"
    raw = newest.read_bytes()
    newest.write_bytes(raw[: len(raw) // 2])  # a job killed while writing without atomic rename
    trainer = Trainer(tiny(), data(), config(resume="auto"), run_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="zoo.checkpoint"):
        assert trainer.maybe_resume() == ckpts / "step_00000003.pt"
    assert trainer.step == 3
    assert "skipping checkpoint" in caplog.text and "step_00000006.pt" in caplog.text
    assert newest.read_bytes() == raw[: len(raw) // 2]  # left in place for inspection

    named = Trainer(tiny(), data(), config(resume=str(newest)), run_dir=tmp_path)
    with pytest.raises(CheckpointError, match=r"step_00000006\.pt could not be read.*corrupt"):
        named.fit()
    with pytest.raises(FileNotFoundError, match=r"nope\.pt does not exist"):
        Trainer(tiny(), data(), config(resume=str(tmp_path / "nope.pt"))).fit()


def test_incompatible_model_fails_naming_file_and_mismatch(tmp_path):
    ckpts = _run_to_step_6(tmp_path)  # n_embd=16
    path = ckpts / "step_00000006.pt"
    before = path.read_bytes()
    for resume in (str(path), "auto"):
        trainer = Trainer(tiny(n_embd=32), data(), config(resume=resume), run_dir=tmp_path)
        with pytest.raises(CheckpointError) as info:
            trainer.fit()
        message = str(info.value)
        assert "step_00000006.pt does not match this run's model" in message
        assert "model config n_embd: checkpoint 16, this run 32" in message
        assert "weight shapes differ" in message
        assert trainer.step == 0
    assert path.read_bytes() == before  # nothing overwritten
    assert sorted(p.name for p in ckpts.iterdir()) == ["step_00000003.pt", "step_00000006.pt"]


def test_other_format_version_is_rejected(tmp_path):
    ckpts = _run_to_step_6(tmp_path)
    state = load_checkpoint(ckpts / "step_00000006.pt")
    state["format_version"] = FORMAT_VERSION + 1
    save_atomic(state, tmp_path / "future.pt")
    trainer = Trainer(tiny(), data(), config(resume=str(tmp_path / "future.pt")))
    with pytest.raises(CheckpointError, match=rf"future\.pt has format_version {FORMAT_VERSION + 1}"):
        trainer.fit()


def test_failed_save_keeps_previous_checkpoints(tmp_path, monkeypatch):
    ckpts = _run_to_step_6(tmp_path)
    before = {p.name: p.read_bytes() for p in ckpts.iterdir()}
    trainer = Trainer(tiny(), data(), config(resume="auto", keep_last=1), run_dir=tmp_path)
    trainer.maybe_resume()
    batches = trainer.train_batches()
    for _ in range(3):
        trainer.train_step(next(batches))

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        trainer.save_checkpoint()  # step 9, keep_last=1: would prune steps 3 and 6 had it succeeded
    assert {p.name: p.read_bytes() for p in ckpts.iterdir()} == before  # no temp file, nothing pruned
    monkeypatch.undo()
    trainer.save_checkpoint()
    assert sorted(p.name for p in ckpts.iterdir()) == ["step_00000009.pt"]
    assert load_checkpoint(ckpts / "step_00000009.pt")["step"] == 9
