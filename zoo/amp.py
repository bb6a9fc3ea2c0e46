"""Mixed precision for the trainer (Child et al. 2019, §5.6: half-precision training with dynamic loss scaling).

``trainer.precision``:

* ``fp32`` -- no autocast.
* ``bf16`` -- ``torch.autocast(dtype=torch.bfloat16)``; bfloat16 has float32's exponent range, so no
  loss scaling is needed.
* ``fp16`` -- ``torch.autocast(dtype=torch.float16)`` with dynamic loss scaling
  (``torch.amp.GradScaler``; on CPU the ``"cpu"`` scaler of PyTorch >= 2.3): the loss is multiplied by
  a scale before backward, gradients are unscaled before clipping, and a step whose gradients
  overflow is skipped while the scale is halved (it doubles again after ``growth_interval`` good
  steps). The paper (§5.6) keeps weights in single precision and computes activations and gradients
  in half precision with dynamic loss scaling, which is what autocast + GradScaler does.

The metric (:func:`zoo.metrics.nll_nats`) is always computed in float32.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: Any) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"trainer.precision must be one of {list(PRECISIONS)}, got {precision!r}")
    return str(precision)


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context for ``precision`` on ``device`` (a null context for ``fp32``)."""
    check_precision(precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def make_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A dynamic loss scaler for ``fp16`` (``None`` otherwise)."""
    if check_precision(precision) != "fp16":
        return None
    return torch.amp.GradScaler(device.type)
