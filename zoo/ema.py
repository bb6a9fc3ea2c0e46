"""An exponential moving average of the weights (``trainer.ema_decay``), kept by timm's ``ModelEmaV3``.

The paper does not mention weight averaging (§6); OpenAI's Sparse Transformer code keeps an average
with decay 0.999 and evaluates it. With ``trainer.ema_decay=d > 0`` the trainer keeps

    ema = w_1                          after the first optimiser update (a copy),
    ema = d * ema + (1 - d) * w_k      after every later update k,

evaluates the average (periodic and final val, test, ``best.pt`` chosen by it), and stores it in every
checkpoint as ``model_ema`` beside the trained weights ``model`` (the key timm's own
``timm.models.load_checkpoint`` reads first). Under DDP every rank averages its own, identical copy
of the weights, so the averages agree without any communication. :func:`eval_weights` picks the
weights to evaluate or sample with from a checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from torch import nn

from .timm_import import timm

log = logging.getLogger(__name__)

EMA_KEY = "model_ema"


def check_ema_decay(decay: float) -> None:
    """Raise ``ValueError`` naming ``decay`` unless it is in [0, 1) (0 = no average)."""
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 <= decay < 1.0:
        raise ValueError(
            f"trainer.ema_decay must be a number in [0, 1) (0 = no weight average; 0.999 as in OpenAI's code), "
            f"got {decay!r}"
        )


def create_ema(model: nn.Module, decay: float) -> Any:
    """timm's ``ModelEmaV3`` of ``model`` (a copy on its device) with ``decay``; ``None`` when ``decay`` is 0.

    Call it after moving the model to its device and before wrapping it in DDP; update it with
    ``ema.update(model, step=k)`` after update ``k`` (1-based: ``k = 1`` copies the weights).
    """
    check_ema_decay(decay)
    if decay == 0:
        return None
    ema = timm("utils").ModelEmaV3(model, decay=float(decay))
    ema.module.requires_grad_(False)  # updated in place under no_grad, never by the optimiser
    return ema


def eval_weights(state: Mapping[str, Any]) -> Mapping[str, Any]:
    """The weights of a checkpoint to evaluate or sample with: the average when it holds one, else ``model``."""
    ema = state.get(EMA_KEY)
    return ema if ema is not None else state["model"]


def ema_state(ema: Any) -> dict[str, Any] | None:
    """What a checkpoint stores under :data:`EMA_KEY`: the averaged weights (a model state dict)."""
    return ema.module.state_dict() if ema is not None else None


def load_ema_state(ema: Any, state: Mapping[str, Any], model: nn.Module, source: str = "the checkpoint") -> None:
    """Restore the average from ``state[EMA_KEY]``; without one, restart it from ``model``'s weights (a warning)."""
    if ema is None:
        return
    saved = state.get(EMA_KEY)
    if saved is None:
        log.warning(
            "%s holds no weight average (trained without trainer.ema_decay): the average restarts from its weights",
            source,
        )
        ema.set(model)
    else:
        ema.module.load_state_dict(saved)
