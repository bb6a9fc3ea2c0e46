"""The weight average (trainer.ema_decay, zoo.ema: timm's ModelEmaV3): its update, evaluation on it,
best.pt chosen by it, checkpoints and exact resume. DDP with the average is in tests/test_ddp.py."""

from __future__ import annotations

import logging

import pytest
import torch

from zoo.checkpoint import load_checkpoint, save_atomic
from zoo.data import build_data
from zoo.ema import EMA_KEY, eval_weights
from zoo.registry import build
from zoo.train import Trainer, TrainerConfig

DECAY = 0.8


class Killed(Exception):
    pass


def tiny(seed: int = 0, dropout: float = 0.1):
    torch.manual_seed(seed)
    return build("strided", n_layer=1, n_embd=16, n_head=2, seq_len=16, data_shape=[4, 4], dropout=dropout)


def data():
    return build_data("synthetic", size=20, val_size=8, test_size=4, seq_len=16, data_shape=[4, 4])


def config(**overrides) -> TrainerConfig:
    options = dict(
        steps=8,
        batch_size=4,
        lr=3e-3,
        warmup_steps=2,
        eval_every=2,
        eval_examples=8,
        log_every=1,
        checkpoint_every=4,
        progress=False,
        test=False,
        ema_decay=DECAY,
    )
    options.update(overrides)
    return TrainerConfig(**options)


def test_the_average_follows_its_recursion():
    trainer = Trainer(tiny(), data(), config(eval_every=0, final_val=False, checkpoint=False))
    expected = None
    for batch, _ in zip(trainer.train_batches(), range(5)):
        trainer.train_step(batch)
        weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        if expected is None:  # after the first update: a copy
            expected = weights
        else:
            expected = {k: DECAY * expected[k] + (1 - DECAY) * weights[k] for k in weights}
    averaged = trainer.ema.module.state_dict()
    for key, value in expected.items():
        torch.testing.assert_close(averaged[key], value, rtol=1e-5, atol=1e-7, msg=key)
    assert not torch.equal(averaged["head.weight"], trainer.model.state_dict()["head.weight"])
    assert not any(p.requires_grad for p in trainer.ema.module.parameters())


def test_evaluation_and_best_pt_use_the_average(tmp_path):
    trainer = Trainer(tiny(), data(), config(), run_dir=tmp_path)
    metrics = trainer.fit()
    plain = build("strided", n_layer=1, n_embd=16, n_head=2, seq_len=16, data_shape=[4, 4], dropout=0.1)
    raw = Trainer(plain, data(), config(ema_decay=0.0))
    raw.model.load_state_dict(trainer.ema.module.state_dict())
    assert metrics["val_bpd"] == pytest.approx(raw.evaluate("val"), rel=1e-6)  # the average was evaluated
    raw.model.load_state_dict(trainer.model.state_dict())
    assert metrics["val_bpd"] != pytest.approx(raw.evaluate("val"), rel=1e-6)  # not the trained weights
    vals = [r["val/bpd"] for r in metrics["history"] if "val/bpd" in r] + [metrics["val_bpd"]]
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert best["val_bpd"] == pytest.approx(min(vals))
    final = load_checkpoint(tmp_path / "checkpoints" / "step_00000008.pt")
    assert set(final[EMA_KEY]) == set(final["model"])
    for key, value in trainer.ema.module.state_dict().items():
        assert torch.equal(final[EMA_KEY][key], value)
    assert eval_weights(final) is final[EMA_KEY]
    assert eval_weights({"model": final["model"], EMA_KEY: None}) is final["model"]


def test_resume_with_the_average_is_exact(tmp_path):
    straight = Trainer(tiny(), data(), config(), run_dir=tmp_path / "a")
    expected = straight.fit()
    first = Trainer(tiny(), data(), config(), run_dir=tmp_path / "b")
    real_step = first.train_step

    def dies_after_step_4(batch):
        if first.step == 4:  # step 4's checkpoint is on disk
            raise Killed
        return real_step(batch)

    first.train_step = dies_after_step_4
    with pytest.raises(Killed):
        first.fit()
    torch.manual_seed(123)  # another process: other RNG state, another initialisation
    second = Trainer(tiny(seed=7), data(), config(resume="auto"), run_dir=tmp_path / "b")
    resumed = second.fit()
    assert resumed["resumed_from"].endswith("step_00000004.pt")
    curve = [(r["step"], r.get("train/loss"), r.get("val/bpd")) for r in expected["history"]]
    assert [(r["step"], r.get("train/loss"), r.get("val/bpd")) for r in resumed["history"]] == curve
    assert resumed["val_bpd"] == expected["val_bpd"]
    for (key, a), b in zip(straight.ema.module.state_dict().items(), second.ema.module.state_dict().values()):
        assert torch.equal(a, b), key


def test_checkpoint_without_an_average_restarts_it_from_the_weights(tmp_path, caplog):
    trainer = Trainer(tiny(), data(), config(ema_decay=0.0, steps=3, eval_every=0, final_val=False))
    for batch, _ in zip(trainer.train_batches(), range(3)):
        trainer.train_step(batch)
    path = save_atomic(trainer.state_dict(), tmp_path / "plain.pt")
    assert load_checkpoint(path)[EMA_KEY] is None
    with_ema = Trainer(tiny(seed=5), data(), config(steps=6))
    with caplog.at_level(logging.WARNING, logger="zoo.ema"):
        with_ema.load_state_dict(load_checkpoint(path))
    assert "holds no weight average" in caplog.text
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(with_ema.ema.module.state_dict()[key], value)


def test_bad_decay_is_one_clear_error():
    for bad in (1.0, -0.1, "0.9", True):
        with pytest.raises(ValueError, match=r"trainer.ema_decay must be a number in \[0, 1\)"):
            TrainerConfig(ema_decay=bad).validate()
    assert Trainer(tiny(), data(), config(ema_decay=0.0)).ema is None


def test_a_stale_best_pt_is_rescored_on_its_average(tmp_path, caplog):
    """Resumed with other eval_examples, best.pt is scored again on the weights it was chosen by (the average)."""
    run = tmp_path / "run"
    Trainer(tiny(), data(), config(eval_examples=4), run_dir=run).fit()
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["best_selection"]["examples"] == 4
    trainer = Trainer(tiny(), data(), config(resume="auto", eval_examples=8, steps=12), run_dir=run)
    with caplog.at_level(logging.WARNING):
        trainer.maybe_resume()
    assert "chosen on other validation examples" in caplog.text
    probe = Trainer(tiny(), data(), config(ema_decay=0.0))
    probe.model.load_state_dict(best[EMA_KEY])
    assert trainer.best_val == pytest.approx(probe.evaluate("val", 8), abs=1e-9)  # the average, on 8 examples
    probe.model.load_state_dict(best["model"])
    assert trainer.best_val != pytest.approx(probe.evaluate("val", 8), abs=1e-9)  # not the raw weights
    # the trainer's own average is back as it was resumed
    resumed = load_checkpoint(run / "checkpoints" / "step_00000008.pt")
    for key, value in trainer.ema.module.state_dict().items():
        assert torch.equal(resumed[EMA_KEY][key], value), key
