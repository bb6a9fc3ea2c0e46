"""The optimiser and learning-rate schedule of the training recipe (Child et al. 2019, §6), built by timm.

The paper trains with Adam, weight decay 0.01, a linear warmup then a cosine decay of the learning
rate, and gradient clipping at norm 1.0 (the clipping is in the trainer). Here:

* the optimiser is ``timm.optim.create_optimizer_v2(name)`` (``trainer.optimizer``; ``adamw`` is
  ``torch.optim.AdamW``, the paper's Adam with decoupled weight decay; ``lamb``, ``lion``,
  ``adafactor`` and every other name of ``timm.optim.list_optimizers()`` work the same way);
* weight decay applies to the weight matrices only: biases, normalisation gains and every embedding
  (token, position, start-of-sequence) are not decayed (timm's 1-D filter plus the model's
  ``no_weight_decay()``, :func:`decay_groups`). The paper does not say which
  tensors it decays; OpenAI's code decays every matrix, embeddings too;
* the schedule is ``timm.scheduler.create_scheduler_v2(name)`` stepped once per optimiser update
  (``trainer.scheduler``; ``cosine`` is the paper's), after a linear warmup whose first update is not
  at lr 0 (:class:`StepScheduler`).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .timm_import import timm

#: timm schedulers that step per optimiser update (``plateau`` needs a metric per epoch: not offered).
SCHEDULERS = ("cosine", "tanh", "poly", "step", "multistep", "wsd", "rsqrt", "constant", "none")


def check_optimizer(name: str) -> None:
    """Raise ``ValueError`` naming ``name`` and the valid choices unless timm knows the optimiser."""
    names = timm("optim").list_optimizers()
    if not isinstance(name, str) or name.lower() not in names:
        hint = difflib.get_close_matches(str(name).lower(), names, n=1)
        raise ValueError(
            f"unknown trainer.optimizer {name!r}{f' (did you mean {hint[0]!r}?)' if hint else ''}; "
            f"timm's optimisers are {names} (adamw is the paper's recipe, §6)"
        )


def check_scheduler(name: str) -> None:
    """Raise ``ValueError`` naming ``name`` and the valid choices unless it is one of :data:`SCHEDULERS`."""
    if name not in SCHEDULERS:
        raise ValueError(
            f"unknown trainer.scheduler {name!r}; the per-step timm schedules are {list(SCHEDULERS)} "
            "(cosine is the paper's recipe, §6)"
        )


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Parameter names (fnmatch patterns) kept out of weight decay besides timm's biases and 1-D tensors.

    Every ``nn.Embedding`` table (token, position), plus what the model lists in ``no_weight_decay()``
    (the timm convention; :class:`~zoo.model.SparseTransformer` lists its embeddings and start vector).
    """
    names = {f"{mod}.weight" if mod else "weight" for mod, m in model.named_modules() if isinstance(m, nn.Embedding)}
    listed = getattr(model, "no_weight_decay", None)
    if callable(listed):
        names |= set(listed())
    return names


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """timm's weight-decay parameter groups, decayed group first (the order of older checkpoints).

    ``timm.optim.param_groups_weight_decay``: biases and 1-D tensors (norm gains) are not decayed, and
    neither are :func:`no_weight_decay_names`; every other tensor (the Linear weights) is.
    """
    groups = timm("optim").param_groups_weight_decay(
        model, weight_decay=weight_decay, no_weight_decay_list=sorted(no_weight_decay_names(model))
    )
    return sorted(groups, key=lambda g: g["weight_decay"] == 0)  # stable: decayed, then not decayed


def create_optimizer(
    model: nn.Module,
    name: str = "adamw",
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    betas: Sequence[float] = (0.9, 0.95),
    eps: float = 1e-8,
    **options: Any,
) -> torch.optim.Optimizer:
    """``timm.optim.create_optimizer_v2(name)`` over :func:`decay_groups`; ``lr`` is the peak (after warmup).

    ``name`` is any of ``timm.optim.list_optimizers()`` (``adamw`` = ``torch.optim.AdamW``, the paper's
    Adam with decoupled weight decay, §6; ``lamb``, ``lion``, ``adafactor``, ...); ``betas`` and ``eps``
    are dropped for optimisers without them; ``options`` go to the optimiser (e.g. ``momentum``).
    """
    check_optimizer(name)
    if lr <= 0:
        raise ValueError(f"trainer.lr must be > 0, got {lr}")
    if weight_decay < 0:
        raise ValueError(f"trainer.weight_decay must be >= 0, got {weight_decay}")
    b1, b2 = (float(b) for b in betas)
    return timm("optim").create_optimizer_v2(
        model,
        opt=name.lower(),
        lr=lr,
        weight_decay=weight_decay,
        param_group_fn=lambda m: decay_groups(m, weight_decay),
        betas=(b1, b2),
        eps=eps,
        **options,
    )


class StepScheduler:
    """A ``timm.scheduler`` schedule stepped once per optimiser update, with the recipe's warmup.

    The recipe (§6, :func:`create_scheduler`): update ``s`` (0-based) of a run of ``T`` updates uses
    ``lr * (s + 1) / W`` during the ``W`` warmup updates (the first update is not wasted at lr 0, the
    ``W``-th reaches the peak), then the decay phase from the peak at update ``W`` down to
    ``lr * min_lr_ratio`` at update ``T``. A timm schedule starts its warmup at ``warmup_lr_init`` at
    index 0 and its decay phase at index ``warmup_t``, so the recipe is timm's schedule with
    ``warmup_t = W - 1``, ``warmup_lr_init = lr / W`` and ``warmup_prefix=True``, read at index ``s``
    for ``s < W`` and ``s - 1`` from then on (the peak lasts two updates, ``W - 1`` and ``W``).

    ``state_dict()`` holds the number of updates and timm's own state (plain numbers and lists), so a
    resumed run continues on the same curve.
    """

    def __init__(self, scheduler: Any, warmup_steps: int) -> None:
        self.scheduler = scheduler  # a timm Scheduler, or None for a constant lr ("none")
        self.warmup_steps = warmup_steps
        self.updates = 0  # optimiser updates taken
        self._apply()

    def index(self, updates: int) -> int:
        """timm's update index for the learning rate of update number ``updates`` (0-based)."""
        return updates - 1 if updates >= self.warmup_steps >= 1 else updates

    def _apply(self) -> None:
        if self.scheduler is not None:
            self.scheduler.step_update(self.index(self.updates))

    def step(self) -> None:
        """After each real optimiser update: set the learning rate of the next one."""
        self.updates += 1
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        return {
            "updates": self.updates,
            "warmup_steps": self.warmup_steps,
            "timm": self.scheduler.state_dict() if self.scheduler is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "updates" not in state:  # a torch LambdaLR state (checkpoints before timm): its step count
            self.updates = int(state.get("last_epoch", 0))
        else:
            self.updates = int(state["updates"])
            if self.scheduler is not None and state.get("timm") is not None:
                self.scheduler.load_state_dict(dict(state["timm"]))
        self._apply()


def create_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str = "cosine",
    warmup_steps: int = 100,
    total_steps: int = 1000,
    min_lr_ratio: float = 0.0,
    **options: Any,
) -> StepScheduler:
    """``timm.scheduler.create_scheduler_v2(name)`` per update: linear warmup, then ``name`` (§6: cosine).

    The decay phase lasts ``total_steps - warmup_steps`` updates and ends at ``lr * min_lr_ratio``
    (:class:`StepScheduler` says how the warmup maps onto timm's). ``options`` go to
    ``create_scheduler_v2`` in optimiser steps, e.g. ``decay_epochs`` / ``decay_rate`` for ``step``,
    ``decay_milestones`` for ``multistep``, ``cycle_limit`` for ``cosine``.
    """
    check_scheduler(name)
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"trainer.min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    peak = optimizer.param_groups[0]["lr"]
    scheduler, _ = timm("scheduler").create_scheduler_v2(
        optimizer,
        sched=name,
        num_epochs=max(1, total_steps - warmup_steps),
        warmup_epochs=max(0, warmup_steps - 1),
        warmup_lr=peak / max(1, warmup_steps),
        warmup_prefix=True,
        min_lr=peak * min_lr_ratio,
        step_on_epochs=False,
        updates_per_epoch=1,
        **options,
    )
    return StepScheduler(scheduler, warmup_steps)


def from_trainer_config(model: nn.Module, config: Any) -> tuple[torch.optim.Optimizer, StepScheduler]:
    """The optimiser and schedule a :class:`~zoo.train.TrainerConfig` asks for.

    Its ``optimizer``, ``optimizer_options``, ``lr``, ``weight_decay`` and ``betas``, then its
    ``scheduler``, ``scheduler_options``, ``warmup_steps`` (cut to ``steps``) and ``min_lr_ratio``.
    """
    optimizer = create_optimizer(
        model,
        config.optimizer,
        config.lr,
        config.weight_decay,
        config.betas,
        **dict(config.optimizer_options),
    )
    scheduler = create_scheduler(
        optimizer,
        config.scheduler,
        min(config.warmup_steps, config.steps),
        config.steps,
        config.min_lr_ratio,
        **dict(config.scheduler_options),
    )
    return optimizer, scheduler
