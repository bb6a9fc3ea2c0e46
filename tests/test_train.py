"""The training loop (zoo.train), its optimiser recipe (zoo.optim, timm: more in test_optim.py), metric (zoo.metrics), checkpoint
and loggers, and the Hydra app scripts/train.py end to end on tiny settings."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import PIL.Image
import pytest
import torch
from torch import nn

from zoo.checkpoint import load_checkpoint, save_atomic
from zoo.data import build_data
from zoo.loggers import NullLogger, build_logger
from zoo.metrics import LN2, BitsPerDimMeter, bits_per_dim, nll_nats
from zoo.optim import create_optimizer, create_scheduler, decay_groups
from zoo.registry import build
from zoo.train import Trainer, TrainerConfig, epoch_batches, run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The smoke experiment on small synthetic 14x14 "images": a complete run in seconds.
SMOKE = [
    "experiment=fashion_mnist_smoke",
    "data=synthetic",
    "data.size=16",
    "data.val_size=4",
    "data.test_size=4",
    "data.seq_len=196",
    "data.data_shape=[14,14]",
]


def tiny_model(seq_len: int = 784, data_shape=(28, 28)):
    """A one-block strided model on the real registry, small enough for a CPU test."""
    return build("strided", n_layer=1, n_embd=32, n_head=2, seq_len=seq_len, data_shape=list(data_shape))


class FixedLogits(nn.Module):
    """Returns the same logits for every position: a model whose likelihood is known by hand."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits.clone())  # (V,)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, V)
        return self.logits.expand(*idx.shape, -1)


# ------------------------------------------------------------------------------------------ bits per dim
def test_bits_per_dim_hand_computed():
    # p = softmax(log [1, 1, 2]) = [1/4, 1/4, 1/2]: byte 2 costs 1 bit, byte 0 costs 2 bits.
    logits = torch.log(torch.tensor([1.0, 1.0, 2.0])).expand(1, 2, 3)  # (B=1, T=2, V=3)
    targets = torch.tensor([[2, 0]])
    nats = nll_nats(logits, targets)
    assert nats.item() == pytest.approx((math.log(2) + math.log(4)) / 2, abs=1e-6)
    assert bits_per_dim(nats).item() == pytest.approx(1.5, abs=1e-6)
    assert bits_per_dim(nats).item() == pytest.approx(nats.item() / LN2, rel=1e-7)
    assert nll_nats(logits, targets, reduction="none")[0].tolist() == pytest.approx(
        [math.log(2), math.log(4)], abs=1e-6
    )
    uniform = torch.zeros(4, 10, 256)  # the zero-initialised logits of a fresh model: exactly 8 bits
    assert bits_per_dim(nll_nats(uniform, torch.randint(0, 256, (4, 10)))).item() == pytest.approx(
        8.0, abs=1e-5
    )


def test_meter_averages_per_dim_not_per_batch():
    meter = BitsPerDimMeter()
    meter.update(torch.tensor(2 * LN2), 2)  # 2 dims of 1 bit each
    meter.update(torch.tensor(3 * 4 * LN2), 3)  # 3 dims of 4 bits each
    assert meter.bits_per_dim == pytest.approx((2 * 1 + 3 * 4) / 5)
    with pytest.raises(ValueError, match="no dims"):
        _ = BitsPerDimMeter().bits_per_dim


def test_trainer_evaluate_matches_hand_value():
    # p(byte 0) = 1/2 and p(byte 1) = 1/2, nothing else: every sequence of 0s and 1s costs 1 bit per dim.
    logits = torch.full((256,), -1e9)
    logits[:2] = 0.0
    data = build_data("synthetic", size=8, val_size=5, test_size=3, seq_len=6, vocab=2)
    trainer = Trainer(
        FixedLogits(logits), data, TrainerConfig(steps=1, batch_size=2, eval_batch_size=2, progress=False)
    )
    assert trainer.evaluate("val") == pytest.approx(1.0, abs=1e-6)
    assert trainer.evaluate("test", max_examples=2) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        trainer.evaluate("dev")


# ------------------------------------------------------------------------------------------ optimiser recipe
def _lrs(warmup: int, total: int, min_lr_ratio: float = 0.0, lr: float = 1.0) -> list[float]:
    opt = create_optimizer(nn.Linear(2, 2), lr=lr)
    sched = create_scheduler(opt, "cosine", warmup, total, min_lr_ratio)
    lrs = []
    for _ in range(total + 1):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    return lrs


def test_warmup_cosine_schedule():
    curve = _lrs(10, 110)
    assert curve[0] == pytest.approx(0.1)  # linear warmup, first step not at 0
    assert curve[9] == pytest.approx(1.0)
    assert curve[10] == pytest.approx(1.0)  # peak, then cosine
    assert curve[60] == pytest.approx(0.5)  # half way down
    assert curve[110] == pytest.approx(0.0, abs=1e-12)
    assert _lrs(10, 110, min_lr_ratio=0.2)[60] == pytest.approx(0.6)
    model = nn.Linear(2, 2)
    opt = create_optimizer(model, lr=1e-2)
    sched = create_scheduler(opt, "cosine", warmup_steps=2, total_steps=6)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx(
        [
            5e-3,
            1e-2,
            1e-2,
            1e-2 * 0.5 * (1 + math.cos(math.pi / 4)),
            5e-3,
            1e-2 * 0.5 * (1 + math.cos(3 * math.pi / 4)),
        ]
    )
    with pytest.raises(ValueError, match="warmup_steps must be in"):
        create_scheduler(opt, "cosine", warmup_steps=7, total_steps=6)


def test_weight_decay_only_on_linear_weights():
    model = tiny_model(seq_len=16, data_shape=(4, 4))
    decay, no_decay = decay_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    linear_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    assert {id(p) for p in decay["params"]} == linear_weights
    no_decay_ids = {id(p) for p in no_decay["params"]}
    for module in model.modules():
        if isinstance(module, (nn.LayerNorm, nn.Embedding)):
            assert all(id(p) in no_decay_ids for p in module.parameters(recurse=False))
        if isinstance(module, nn.Linear) and module.bias is not None:
            assert id(module.bias) in no_decay_ids
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_trainer_config_errors():
    with pytest.raises(
        TypeError, match=r"unknown trainer option\(s\) \['stepz'\]; valid options are \['steps'"
    ):
        TrainerConfig.from_dict({"stepz": 3})
    with pytest.raises(ValueError, match="trainer.batch_size must be an integer >= 1, got 0"):
        TrainerConfig.from_dict({"batch_size": 0})


def test_epoch_batches_is_a_pure_function():
    a = epoch_batches(10, 3, seed=1, epoch=0)
    assert a == epoch_batches(10, 3, seed=1, epoch=0) and len(a) == 3 and all(len(b) == 3 for b in a)
    assert a != epoch_batches(10, 3, seed=1, epoch=1)
    assert len({i for b in a for i in b}) == 9  # a permutation, last partial batch dropped
    with pytest.raises(ValueError, match="fewer than one batch"):
        epoch_batches(2, 3, seed=0, epoch=0)


# ------------------------------------------------------------------------------------------ training
def test_tiny_run_lowers_the_loss_on_fashion_mnist_shaped_data(tmp_path):
    torch.manual_seed(0)
    data = build_data("synthetic", size=64, val_size=16, test_size=16, seq_len=784, data_shape=[28, 28])
    config = TrainerConfig(
        steps=30,
        batch_size=8,
        lr=3e-3,
        warmup_steps=3,
        eval_every=15,
        eval_examples=8,
        log_every=5,
        progress=False,
    )
    trainer = Trainer(tiny_model(), data, config, run_dir=tmp_path)
    before = trainer.evaluate("val")
    assert before == pytest.approx(8.0, abs=1e-4)  # zero-initialised logits: uniform over 256 bytes
    metrics = trainer.fit()
    assert metrics["step"] == 30 and trainer.step == 30
    assert (
        metrics["val_bpd"] < before - 3.0
    )  # at least 3 bits/dim better than uniform (vocab 16 alone gives 4)
    assert metrics["test_bpd"] < before - 3.0
    train_curve = [r["train/bpd"] for r in metrics["history"] if "train/bpd" in r]
    assert train_curve[-1] < train_curve[0] - 2.0
    assert [r["step"] for r in metrics["history"] if "val/bpd" in r] == [15]
    logged = [r for r in metrics["history"] if "train/bpd" in r]  # what logger=wandb receives
    assert all(r["memory/peak_rss_mib"] > 10 and r["skipped_steps"] == 0 and r["lr"] > 0 for r in logged)
    assert metrics["skipped_steps"] == 0 and metrics["precision"] == "fp32" and metrics["world_size"] == 1
    # outputs in the run folder: metrics.json and an atomically written checkpoint, no temporary files left
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["test_bpd"] == pytest.approx(metrics["test_bpd"]) and saved["step"] == 30
    ckpt = tmp_path / "checkpoints" / "step_00000030.pt"
    assert metrics["checkpoint"] == str(ckpt)
    # the final step checkpoint and the best by val bits/dim (the final val beat the one at step 15),
    # compared on the same 8 val sequences as the periodic evaluation (eval_examples), not the whole split
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best.pt", "step_00000030.pt"]
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert best["step"] == 30 and best["val_bpd"] == pytest.approx(trainer.evaluate("val", 8), abs=1e-9)
    assert best["val_bpd"] != pytest.approx(metrics["val_bpd"], abs=1e-6)  # the whole split gives another number
    assert best["best_selection"] == {"split": "val", "examples": 8, "data": "synthetic", "seq_len": 784}
    assert (metrics["best_val_bpd"], metrics["best_step"], metrics["best_val_sequences"]) == (best["val_bpd"], 30, 8)
    state = load_checkpoint(ckpt)
    assert {
        "model",
        "optimizer",
        "scheduler",
        "step",
        "epoch",
        "batch_in_epoch",
        "rng",
        "model_config",
    } <= set(state)
    assert (
        state["step"] == 30
        and state["batch_in_epoch"] == (30 % (64 // 8))
        and state["epoch"] == 30 // (64 // 8)
    )
    assert state["model_config"]["n_layer"] == 1


def test_state_dict_round_trip_continues_identically(tmp_path):
    data = build_data("synthetic", size=24, val_size=4, test_size=4, seq_len=16, data_shape=[4, 4])
    config = TrainerConfig(
        steps=6, batch_size=4, warmup_steps=1, progress=False, test=False, final_val=False, checkpoint=False
    )

    def fresh():
        torch.manual_seed(0)
        return Trainer(tiny_model(16, (4, 4)), data, config)

    straight = fresh()
    batches = straight.train_batches()
    losses = [straight.train_step(next(batches))["loss"] for _ in range(6)]

    first = fresh()
    batches = first.train_batches()
    for _ in range(3):
        first.train_step(next(batches))
    path = save_atomic(first.state_dict(), tmp_path / "mid.pt")
    second = fresh()
    second.load_state_dict(load_checkpoint(path))
    assert (second.step, second.epoch, second.batch_in_epoch) == (3, 0, 3)
    batches = second.train_batches()
    resumed = [second.train_step(next(batches))["loss"] for _ in range(3)]
    assert resumed == pytest.approx(losses[3:], rel=1e-5)


def test_save_atomic_keeps_the_old_file_on_failure(tmp_path):
    path = save_atomic({"a": 1}, tmp_path / "ck.pt")

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_atomic({"a": Unpicklable()}, path)
    assert load_checkpoint(path) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # the temporary file was removed
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match=r"bad.pt could not be read"):
        load_checkpoint(tmp_path / "bad.pt")


# ------------------------------------------------------------------------------------------ loggers
def test_build_logger_errors(tmp_path):
    assert isinstance(build_logger({"name": "none"}, tmp_path), NullLogger)
    assert isinstance(build_logger(None, tmp_path), NullLogger)
    with pytest.raises(
        ValueError, match=r"unknown logger 'tensorboard'; available loggers are \['none', 'wandb'\]"
    ):
        build_logger({"name": "tensorboard"}, tmp_path)
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['projekt'\] for logger 'wandb'"):
        build_logger({"name": "wandb", "projekt": "x"}, tmp_path)


def test_wandb_logger_offline(tmp_path, compose_config, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose_config("train", [*SMOKE, "logger=wandb"])
    assert cfg.logger.mode == "offline"
    metrics = run(cfg, tmp_path)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "logger=wandb must write an offline run in the run folder"
    assert any(runs[0].rglob("*.wandb")) and math.isfinite(metrics["test_bpd"])
    # zoo.sample_callbacks: one grid of logger.sample_images (default 4) samples at the end of training,
    # one grid of logger.completions (default 4) completed val images at each periodic evaluation
    samples = list(runs[0].rglob("media/images/samples*.png"))
    completions = list(runs[0].rglob("media/images/completions*.png"))
    assert cfg.logger.sample_images == cfg.logger.completions == 4
    periodic = len(range(cfg.trainer.eval_every, cfg.trainer.steps, cfg.trainer.eval_every))
    assert len(samples) == 1 and len(completions) == periodic == 1, (samples, completions)
    width = PIL.Image.open(samples[0]).size[0]  # 4 images of 14 px x scale 2 side by side, 2 px padding
    assert width == 4 * (14 * 2 + 2) + 2
    rows = PIL.Image.open(completions[0]).size[1]  # rows input, completion, original
    assert rows == 3 * (14 * 2 + 2) + 2
    # predicted distributions and bits maps (logger.prediction_images, zoo.prediction_pictures): at the
    # periodic evaluation (step 2 of 4) and at the end
    assert cfg.logger.prediction_images == 1 and cfg.trainer.eval_every == 2
    for key in ("distributions", "bits_map"):
        pictures = sorted(runs[0].rglob(f"media/images/predictions/{key}_*.png"))
        assert [p.name.split("_")[-2] for p in pictures] == ["2", "4"], pictures


def test_logger_none_does_not_import_wandb(tmp_path):
    code = (
        "import sys; sys.path.insert(0, 'tests'); from conftest import compose; from zoo.train import run; "
        f"cfg = compose('train', {[*SMOKE, 'logger=none']!r}); "
        f"run(cfg, {str(tmp_path)!r}); print('wandb imported:', 'wandb' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "wandb imported: False" in out.stdout


# ------------------------------------------------------------------------------------------ the Hydra app
def test_train_script_end_to_end(tmp_path):
    """`python scripts/train.py` (smoke-sized) runs, prints test bits/dim, writes its run folder."""
    cmd = [
        sys.executable,
        "scripts/train.py",
        *SMOKE,
        "model/attention=fixed",  # the pattern group: fixed with its defaults
        f"hydra.run.dir={tmp_path}",
    ]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("test bits/dim ")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert f"{metrics['test_bpd']:.4f}" in last and metrics["step"] == 4
    assert (tmp_path / ".hydra" / "config.yaml").is_file() and (tmp_path / "train.log").is_file()
    state = load_checkpoint(tmp_path / "checkpoints" / "step_00000004.pt")
    assert state["config"]["model"]["attention"]["name"] == "fixed"
    assert state["model_config"]["attention"]["name"] == "fixed"


# ------------------------------------------------------------------------------------------ data integration
def _enwik8_like(tmp_path, n=4000):
    """A small file in enwik8's format (raw bytes), with bytes 0 and 1 only."""
    gen = torch.Generator().manual_seed(0)
    (tmp_path / "enwik8").write_bytes(bytes(torch.randint(0, 2, (n,), generator=gen).tolist()))
    return tmp_path


class ParityCost(nn.Module):
    """For bytes 0/1: 1 bit at even positions (p = 1/2 each), 2 bits at odd ones (p = 1/4 each)."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, V)
        T = idx.shape[1]
        logits = torch.full((T, 256), -1e9)
        logits[0::2, :2] = 0.0
        logits[1::2, :4] = 0.0
        return (logits + self.dummy).expand(idx.shape[0], T, 256)


def test_evaluate_counts_only_scored_positions_of_overlapping_windows(tmp_path):
    data = build_data("enwik8", root=str(_enwik8_like(tmp_path)), seq_len=64, eval_min_context=41)
    val = data.val
    assert any(val.scored_from(k) > 0 for k in range(len(val)))  # overlapping windows
    costs = torch.tensor([1.0 if t % 2 == 0 else 2.0 for t in range(64)])  # (T,) bits
    expected = sum(costs[val.scored_from(k) :].sum().item() for k in range(len(val))) / val.num_scored
    unmasked = costs.mean().item()
    assert abs(expected - unmasked) > 0.01  # the test tells masked from unmasked scoring
    trainer = Trainer(
        ParityCost(), data, TrainerConfig(steps=1, batch_size=2, eval_batch_size=3, progress=False)
    )
    assert trainer.evaluate("val") == pytest.approx(expected, abs=1e-6)


class EpochRecorder(torch.utils.data.Dataset):
    def __init__(self, n: int, seq_len: int) -> None:
        self.n, self.seq_len, self.epochs = n, seq_len, []

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.full((self.seq_len,), (i + len(self.epochs)) % 16, dtype=torch.long)


def test_train_batches_call_set_epoch_each_epoch():
    base = build_data("synthetic", size=8, val_size=2, test_size=2, seq_len=16, data_shape=[4, 4])
    recorder = EpochRecorder(8, 16)
    data = dataclasses.replace(base, train=recorder)
    trainer = Trainer(tiny_model(16, (4, 4)), data, TrainerConfig(steps=5, batch_size=4, progress=False))
    batches = trainer.train_batches()
    for _ in range(5):  # 2 batches per epoch: epochs 0, 1, 2
        next(batches)
    assert recorder.epochs == [0, 1, 2] and (trainer.epoch, trainer.batch_in_epoch) == (2, 1)
    # the real enwik8 training windows change with the epoch
    enwik8 = build_data("enwik8", root=str(_enwik8_like(data_root := Path(tempfile.mkdtemp()))), seq_len=64)
    assert data_root.exists()
    trainer = Trainer(tiny_model(64, (64,)), enwik8, TrainerConfig(steps=5, batch_size=2, progress=False))
    batches = trainer.train_batches()
    first = next(batches)
    for _ in range(len(enwik8.train) // 2 - 1):
        next(batches)
    assert enwik8.train.epoch == 0
    second = next(batches)
    assert enwik8.train.epoch == 1 and trainer.epoch == 1
    assert not torch.equal(first, second)
