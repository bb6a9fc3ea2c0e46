"""The optimiser recipe of Child et al. 2019 (§7): Adam with weight decay 0.01, a linear warmup then
cosine decay of the learning rate, and gradient clipping at norm 1.0 (the clipping is in the trainer).

Weight decay (decoupled, AdamW) applies only to the weight matrices of ``nn.Linear`` layers (and
convolutions, should a model have them). Biases, normalisation gains and every embedding (token,
position, start-of-sequence) are not decayed, as in GPT-2/minGPT: shrinking a norm gain or an
embedding towards zero is not a useful prior. The paper does not say which parameters it decays.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
from torch import nn

_DECAYED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: ``weight`` of Linear/Conv layers with ``weight_decay``, everything else with 0."""
    decay: dict[str, nn.Parameter] = {}
    for mod_name, module in model.named_modules():
        if isinstance(module, _DECAYED) and module.weight.requires_grad:
            decay[f"{mod_name}.weight" if mod_name else "weight"] = module.weight
    decay_ids = {id(p) for p in decay.values()}
    no_decay = [p for p in model.parameters() if p.requires_grad and id(p) not in decay_ids]
    return [
        {"params": list(decay.values()), "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.01,
    betas: Sequence[float] = (0.9, 0.95),
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`; ``lr`` is the peak learning rate reached after warmup."""
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    b1, b2 = (float(b) for b in betas)
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=(b1, b2), eps=eps)


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> float:
    """Learning-rate multiplier at optimiser step ``step`` (0-based).

    Linear warmup ``(step + 1) / warmup_steps`` for the first ``warmup_steps`` steps (so the first
    update is not wasted at lr 0), then a half cosine from 1 down to ``min_lr_ratio`` at ``total_steps``.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` with :func:`warmup_cosine`; stepped once per optimiser step, state_dict-resumable."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    fn = functools.partial(
        warmup_cosine, warmup_steps=warmup_steps, total_steps=total_steps, min_lr_ratio=min_lr_ratio
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
