"""The optimiser and learning-rate schedule built by timm (zoo.optim) against the recipe's reference.

The reference (``reference_*`` below) is the recipe of §6 written out directly with torch: AdamW over
two groups (the Linear weights decayed, everything else not), and ``LambdaLR`` with a linear warmup
``(s + 1) / W`` followed by a half cosine. The timm path must give the same groups, the same learning
rate at every step and the same first training steps.
"""

from __future__ import annotations

import fnmatch
import functools
import io
import math

import pytest
import torch
from conftest import compose
from omegaconf import OmegaConf
from torch import nn

from zoo import optim
from zoo.data import build_data
from zoo.registry import build, list_models
from zoo.train import Trainer, TrainerConfig


# ------------------------------------------------------------------------------------------ the reference
def reference_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay = [m.weight for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
    ids = {id(p) for p in decay}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def reference_lr(step: int, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the peak lr at optimiser step ``step`` (0-based)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def reference_optimizer(model, lr, warmup, total, min_ratio=0.0, weight_decay=0.01, betas=(0.9, 0.95)):
    opt = torch.optim.AdamW(reference_groups(model, weight_decay), lr=lr, betas=betas, eps=1e-8)
    fn = functools.partial(reference_lr, warmup=warmup, total=total, min_ratio=min_ratio)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, fn)


def tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build("strided", n_layer=1, n_embd=16, n_head=2, seq_len=16, data_shape=[4, 4], dropout=0.1)


def data():
    return build_data("synthetic", size=24, val_size=4, test_size=4, seq_len=16, data_shape=[4, 4])


def config(**overrides) -> TrainerConfig:
    options = dict(
        steps=8, batch_size=4, lr=3e-3, warmup_steps=3, log_every=1, progress=False, test=False, final_val=False
    )
    options.update(overrides)
    return TrainerConfig(**options)


# ------------------------------------------------------------------------------------------ groups
@pytest.mark.parametrize("name", list_models())
def test_decay_groups_are_the_linear_weights_of_every_variant(name):
    for embedding in ("data", "absolute"):
        with torch.device("meta"):
            model = build(name, embedding=embedding)
        got = [[id(p) for p in g["params"]] for g in optim.decay_groups(model, 0.01)]
        want = [[id(p) for p in g["params"]] for g in reference_groups(model, 0.01)]
        assert got == want  # same tensors, same order (older checkpoints' optimiser states still load)
        assert [g["weight_decay"] for g in optim.decay_groups(model, 0.01)] == [0.01, 0.0]


def test_model_lists_its_embeddings_for_timm():
    model = tiny()
    patterns = model.no_weight_decay()  # timm's convention: create_optimizer_v2 reads it too
    skipped = {n for n, _ in model.named_parameters() if any(fnmatch.fnmatch(n, p) for p in patterns)}
    assert skipped == {n for n, _ in model.named_parameters() if n.startswith("embed_in.")}
    assert {"embed_in.token.weight", "embed_in.start"} <= skipped


# ------------------------------------------------------------------------------------------ schedule
@pytest.mark.parametrize(
    ("warmup", "total", "min_ratio"),
    [(0, 10, 0.0), (1, 10, 0.0), (2, 6, 0.0), (5, 20, 0.1), (9, 10, 0.2), (10, 10, 0.0), (60, 1200, 0.0)],
)
def test_cosine_schedule_equals_the_reference_warmup_cosine(warmup, total, min_ratio):
    ref_opt, ref_sched = reference_optimizer(nn.Linear(2, 2), 3e-3, warmup, total, min_ratio)
    opt = optim.create_optimizer(nn.Linear(2, 2), "adamw", lr=3e-3)
    sched = optim.create_scheduler(opt, "cosine", warmup, total, min_ratio)
    got, want = [], []
    for _ in range(total + 3):  # past the end: stays at lr * min_ratio
        got.append(opt.param_groups[0]["lr"])
        want.append(ref_opt.param_groups[0]["lr"])
        ref_opt.step()
        ref_sched.step()
        sched.step()
    assert got == pytest.approx(want, rel=1e-9, abs=1e-15)
    assert want[0] == pytest.approx(3e-3 * (1 / warmup if warmup else 1.0))  # the first step is not at lr 0


def test_schedule_is_resumable_from_its_state():
    opt = optim.create_optimizer(nn.Linear(2, 2), lr=1e-2)
    sched = optim.create_scheduler(opt, "cosine", 3, 20)
    for _ in range(7):
        sched.step()
    state = sched.state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True) == state  # plain numbers and lists: safe to load
    other_opt = optim.create_optimizer(nn.Linear(2, 2), lr=1e-2)
    other = optim.create_scheduler(other_opt, "cosine", 3, 20)
    other.load_state_dict(state)
    assert other.updates == 7 and other_opt.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    # a torch LambdaLR state of older checkpoints: its step count is enough (the curve is a function of it)
    legacy = optim.create_scheduler(optim.create_optimizer(nn.Linear(2, 2), lr=1e-2), "cosine", 3, 20)
    legacy.load_state_dict({"last_epoch": 7, "base_lrs": [1e-2], "_step_count": 8})
    assert legacy.updates == 7 and legacy.scheduler.optimizer.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


@pytest.mark.parametrize("name", optim.SCHEDULERS)
def test_every_offered_schedule_warms_up_then_stays_in_range(name):
    opt = optim.create_optimizer(nn.Linear(2, 2), lr=1e-2)
    sched = optim.create_scheduler(opt, name, 4, 40, 0.1)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    if name != "none":
        assert lrs[:4] == pytest.approx([2.5e-3, 5e-3, 7.5e-3, 1e-2])  # the same warmup for every schedule
    assert all(0 < lr <= 1e-2 * (1 + 1e-12) for lr in lrs)
    if name in ("cosine", "tanh", "poly", "wsd", "rsqrt"):
        assert lrs[-1] < lrs[4]  # decayed towards lr * min_lr_ratio


def test_bad_names_fail_with_the_valid_choices():
    with pytest.raises(ValueError, match=r"unknown trainer.optimizer 'adamz' \(did you mean 'adam'\?\); timm's optimisers are \[.*'adamw'"):
        TrainerConfig(optimizer="adamz").validate()
    with pytest.raises(ValueError, match=r"unknown trainer.scheduler 'plateau'; the per-step timm schedules are"):
        TrainerConfig(scheduler="plateau").validate()
    with pytest.raises(ValueError, match=r"warmup_steps must be in \[0, total_steps=6\], got 7"):
        optim.create_scheduler(optim.create_optimizer(nn.Linear(2, 2)), "cosine", 7, 6)


# ------------------------------------------------------------------------------------------ training steps
def test_first_training_steps_equal_the_reference_recipe():
    cfg = config()
    new = Trainer(tiny(), data(), cfg)
    old = Trainer(tiny(), data(), cfg)
    old.optimizer, old.scheduler = reference_optimizer(old.model, cfg.lr, cfg.warmup_steps, cfg.steps)
    torch.manual_seed(1)  # dropout masks
    a = [new.train_step(b) for b, _ in zip(new.train_batches(), range(cfg.steps))]
    torch.manual_seed(1)
    b = [old.train_step(b) for b, _ in zip(old.train_batches(), range(cfg.steps))]
    assert [r["lr"] for r in a] == pytest.approx([r["lr"] for r in b], rel=1e-12)
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], rel=1e-6)
    assert [r["grad_norm"] for r in a] == pytest.approx([r["grad_norm"] for r in b], rel=1e-5)
    for (name, p), q in zip(new.model.named_parameters(), old.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7, msg=name)
    assert type(new.optimizer) is torch.optim.AdamW


@pytest.mark.parametrize(("name", "cls"), [("lamb", "Lamb"), ("lion", "Lion"), ("adafactor", "Adafactor")])
def test_other_timm_optimisers_train(name, cls):
    trainer = Trainer(tiny(), data(), config(optimizer=name, lr=1e-3 if name == "lion" else 3e-3))
    assert type(trainer.optimizer).__name__ == cls
    assert [g["weight_decay"] for g in trainer.optimizer.param_groups] == [0.01, 0.0]
    losses = [trainer.train_step(b)["loss"] for b, _ in zip(trainer.train_batches(), range(4))]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]



@pytest.mark.parametrize(
    "overrides",
    [  # the commands of docs/training.md
        ["trainer.optimizer=lamb"],
        ["trainer.optimizer=lion", "trainer.lr=3e-4"],
        ["trainer.optimizer=adafactor", "+trainer.optimizer_options.scale_parameter=false"],
        ["trainer.scheduler=wsd"],
        ["trainer.scheduler=step", "+trainer.scheduler_options.decay_epochs=400", "+trainer.scheduler_options.decay_rate=0.5"],
        ["trainer.ema_decay=0.999"],
    ],
)
def test_documented_overrides_compose_and_build(overrides):
    cfg = TrainerConfig.from_dict(OmegaConf.to_container(compose("train", overrides).trainer, resolve=True))
    opt, sched = optim.from_trainer_config(tiny(), cfg)
    assert type(opt).__name__.lower().startswith(cfg.optimizer[:4]) and sched.updates == 0
    assert opt.param_groups[0]["lr"] == pytest.approx(cfg.lr / cfg.warmup_steps)
