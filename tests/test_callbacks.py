"""Training callbacks (zoo.callbacks): hooks fire at the loop's events and do not change the training."""

from __future__ import annotations

import torch

from zoo.callbacks import Callback
from zoo.data import build_data
from zoo.registry import build
from zoo.train import Trainer, TrainerConfig


class Recorder(Callback):
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def on_evaluation(self, trainer, step, val_bpd):
        self.events.append(("eval", step, round(val_bpd, 6), trainer.step))
        torch.rand(3)  # a callback drawing random numbers must not change the run (see below)

    def on_fit_end(self, trainer, metrics):
        self.events.append(("end", metrics["step"]))


def _fit(callbacks):
    torch.manual_seed(0)
    data = build_data("synthetic", size=24, val_size=4, test_size=4, seq_len=16, data_shape=[4, 4])
    model = build("strided", n_layer=1, n_embd=16, n_head=2, seq_len=16, data_shape=[4, 4],
                  attention={"name": "strided", "stride": 4})  # fmt: skip
    config = TrainerConfig(steps=6, batch_size=4, warmup_steps=1, eval_every=2, progress=False, checkpoint=False)
    return Trainer(model, data, config, callbacks=callbacks).fit()


def test_hooks_fire_after_each_periodic_evaluation_and_at_the_end():
    rec = Recorder()
    metrics = _fit([rec])
    evals = [e for e in rec.events if e[0] == "eval"]
    assert [e[1] for e in evals] == [2, 4]  # periodic evaluations before the last step
    assert all(e[1] == e[3] for e in evals)
    recorded = [h["val/bpd"] for h in metrics["history"] if "val/bpd" in h]
    assert [e[2] for e in evals] == [round(v, 6) for v in recorded]
    assert rec.events[-1] == ("end", 6)


def test_a_callback_drawing_random_numbers_leaves_the_run_unchanged():
    with_cb = _fit([Recorder()])
    without = _fit([])
    losses = lambda m: [h["train/loss"] for h in m["history"] if "train/loss" in h]  # noqa: E731
    assert losses(with_cb) == losses(without) and with_cb["test_bpd"] == without["test_bpd"]
