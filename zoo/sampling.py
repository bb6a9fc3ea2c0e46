"""Sampling from a trained Sparse Transformer, and turning byte samples into images.

Generation is autoregressive (Child et al. 2019 §7: samples of the CIFAR-10 / ImageNet 64 models):
position ``t`` is drawn from ``softmax(logits[:, t] / temperature)`` where ``logits[:, t]`` depends only
on bytes ``< t`` (the model is causal), so filling the sequence left to right needs one forward pass per
position. This reference sampler re-runs the whole prefix each step (no key/value cache): ``O(T)``
forward passes, fine for Fashion-MNIST-sized images and a handful of samples.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn


@torch.no_grad()
def sample(
    model: nn.Module,
    num: int,
    seq_len: int | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``num`` sequences of ``seq_len`` (default: the model's) bytes, long ``(num, T)``."""
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    T = seq_len if seq_len is not None else model.config.seq_len
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = torch.zeros((num, T), dtype=torch.long, device=device)
    for t in range(T):
        logits = model(out[:, : t + 1])[:, t].float() / temperature  # (num, V): depends on bytes < t only
        probs = torch.softmax(logits, dim=-1)
        out[:, t] = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(device)
    model.train(was_training)
    return out


def to_images(samples: Tensor, data_shape: list[int]) -> list[np.ndarray] | None:
    """Byte sequences ``(N, T)`` -> uint8 images ``(H, W)`` or ``(H, W, 3)``, or None if not image-shaped.

    ``[H, W]`` is grey; ``[H, W, C]`` interleaved channels; ``[C, H, W]`` channel planes (C in 1 or 3).
    """
    shape = list(data_shape)
    arr = samples.detach().cpu().numpy().astype(np.uint8)
    if len(shape) == 2:
        return [a.reshape(shape) for a in arr]
    if len(shape) == 3 and shape[2] in (1, 3):
        return [a.reshape(shape).squeeze(-1) if shape[2] == 1 else a.reshape(shape) for a in arr]
    if len(shape) == 3 and shape[0] in (1, 3):
        return [
            np.moveaxis(a.reshape(shape), 0, -1).squeeze(-1)
            if shape[0] == 1
            else np.moveaxis(a.reshape(shape), 0, -1)
            for a in arr
        ]
    return None
