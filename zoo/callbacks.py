"""Training callbacks: what runs beside the loop at its events, kept out of the loop itself.

In the style of Lightning's callbacks: the :class:`~zoo.train.Trainer` calls every callback's hooks on
the main process (rank 0) only, after the event has happened; a callback never changes the training
state (weights, optimiser, RNG streams of the run), so runs with and without it train identically.
Pictures and samples logged during training (completions, predicted distributions, ...) are callbacks
that log through ``trainer.logger`` (:meth:`zoo.loggers.WandbLogger.log_images`).

Hooks (all optional; the base class does nothing):

* :meth:`Callback.on_evaluation` - after each periodic validation (every ``trainer.eval_every`` steps);
* :meth:`Callback.on_fit_end` - once, after the final evaluations, with the run's metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .train import Trainer


class Callback:
    """Base class of training callbacks (override the hooks you need)."""

    def on_evaluation(self, trainer: Trainer, step: int, val_bpd: float) -> None:
        """After a periodic validation at optimiser step ``step`` (``val_bpd`` on ``eval_examples``)."""

    def on_fit_end(self, trainer: Trainer, metrics: Mapping[str, Any]) -> None:
        """After the final evaluations; ``metrics`` is what :meth:`Trainer.fit` returns."""
