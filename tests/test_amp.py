"""Mixed precision (Child et al. 2019, §5.6) in the trainer: bf16 / fp16 autocast, dynamic loss scaling,
and the handling of non-finite losses (skipped and counted; too many in a row stop the run)."""

from __future__ import annotations

import math

import pytest
import torch

from zoo.amp import autocast, make_scaler
from zoo.data import build_data
from zoo.registry import build
from zoo.train import Trainer, TrainerConfig


def tiny():
    torch.manual_seed(0)
    return build("strided", n_layer=1, n_embd=32, n_head=2, seq_len=16, data_shape=[4, 4])


def data():
    return build_data("synthetic", size=64, val_size=8, test_size=8, seq_len=16, data_shape=[4, 4])


def config(**overrides) -> TrainerConfig:
    options = dict(
        steps=24,
        batch_size=8,
        lr=3e-3,
        warmup_steps=2,
        log_every=4,
        progress=False,
        final_val=False,
        checkpoint=False,
    )
    options.update(overrides)
    return TrainerConfig(**options)


def train_curve(metrics):
    return [r["train/bpd"] for r in metrics["history"] if "train/bpd" in r]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_run_lowers_the_loss_on_cpu(precision):
    trainer = Trainer(tiny(), data(), config(precision=precision))
    assert (trainer.scaler is not None) == (precision == "fp16")
    metrics = trainer.fit()
    curve = train_curve(metrics)
    assert curve[-1] < curve[0] - 1.0, curve  # at least 1 bit/dim better than the first window
    assert metrics["test_bpd"] < 6.0 and metrics["precision"] == precision
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # master weights stay fp32
    if precision == "fp16":
        assert trainer.state_dict()["scaler"]["scale"] == trainer.scaler.get_scale()


def test_autocast_dtypes():
    x = torch.randn(4, 4)
    with autocast("bf16", torch.device("cpu")):
        assert (x @ x).dtype == torch.bfloat16
    with autocast("fp32", torch.device("cpu")):
        assert (x @ x).dtype == torch.float32
    assert make_scaler("bf16", torch.device("cpu")) is None
    with pytest.raises(
        ValueError, match=r"trainer.precision must be one of \['fp32', 'bf16', 'fp16'\], got 'fp8'"
    ):
        TrainerConfig(precision="fp8").validate()


def poison(trainer: Trainer, bad_calls: set[int] | None):
    """Make compute_loss return NaN (with NaN gradients) on the given calls (all calls if None)."""
    real = trainer.compute_loss
    calls = []

    def compute_loss(batch, reduction="mean"):
        calls.append(1)
        loss = real(batch, reduction)
        return loss * math.nan if bad_calls is None or len(calls) in bad_calls else loss

    trainer.compute_loss = compute_loss


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_nan_steps_are_skipped_and_counted(precision):
    trainer = Trainer(tiny(), data(), config(steps=8, log_every=1, precision=precision))
    poison(trainer, {3, 4})
    scale_before = trainer.scaler.get_scale() if trainer.scaler is not None else None
    metrics = trainer.fit()
    assert metrics["step"] == 8 and metrics["skipped_steps"] == 2
    assert trainer.scheduler.updates == 8  # the schedule advanced only with real updates
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    logged = [r["skipped_steps"] for r in metrics["history"] if "skipped_steps" in r]
    assert logged[:2] == [0, 0] and logged[-1] == 2
    assert math.isfinite(metrics["train_bpd"])
    if precision == "fp16":  # each skipped step halved the loss scale
        assert trainer.scaler.get_scale() < scale_before


def test_repeated_nans_stop_the_run_with_a_clear_message():
    trainer = Trainer(tiny(), data(), config(max_bad_steps=3))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    poison(trainer, None)
    with pytest.raises(
        RuntimeError,
        match=r"4 consecutive training steps had a non-finite loss or gradient .*max_bad_steps=3",
    ):
        trainer.fit()
    assert trainer.step == 0 and trainer.skipped_steps == 4
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value, before[name]), name  # no NaN update was applied
