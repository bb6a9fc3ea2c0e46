"""Drawing bytes from a trained Sparse Transformer; the reference (uncached) sampler; bytes to images.

Generation is autoregressive (Child et al. 2019 §7: samples of the CIFAR-10 / ImageNet 64 models):
position ``t`` is drawn from ``softmax(logits[:, t] / temperature)`` where ``logits[:, t]`` depends only
on bytes ``< t`` (the model is causal), so filling the sequence left to right needs one forward pass per
position. :func:`sample` is the **reference** sampler: it re-runs the whole prefix at every step (no
key/value cache, ``O(T)`` forward passes of growing length). It is the oracle that the cached decoder
(:func:`zoo.generate.generate`, the one to use) is tested against; both draw every byte with
:func:`draw`, so the same generator gives the same bytes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn


def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raise ``ValueError`` naming a bad sampling option."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be an integer >= 1 or None, got {top_k!r}")
    if top_p is not None and (
        isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1
    ):
        raise ValueError(f"top_p must be a number in (0, 1] or None, got {top_p!r}")


def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """``logits`` ``(B, V)`` with everything outside the ``top_k`` largest and outside the smallest set
    whose probability reaches ``top_p`` (nucleus sampling, Holtzman et al. 2020) set to ``-inf``.
    The most likely byte always stays."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        ordered, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
        probs = torch.softmax(ordered, dim=-1)
        before = probs.cumsum(dim=-1) - probs  # probability of the bytes ranked above each one
        ordered = ordered.masked_fill(before >= top_p, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, ordered)
    return logits


def draw(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One byte per row of ``logits`` ``(B, V)``: long ``(B,)`` on ``logits``' device.

    Inverse-CDF sampling: one uniform ``u`` per row, the first byte whose cumulative probability
    exceeds ``u`` times the total (so a byte of probability 0 is never drawn). It runs where
    ``generator`` lives (the CPU, with the global generator, when it is None), so a seeded generator
    gives the same bytes on every device; it is ~6x cheaper than ``torch.multinomial`` for a batch of
    rows, which matters when a decoding step costs a millisecond.
    """
    logits = logits.float() if temperature == 1.0 else logits.float() / temperature  # x / 1 == x: one op less
    logits = filter_logits(logits, top_k, top_p)
    where = generator.device if generator is not None else torch.device("cpu")
    cdf = torch.softmax(logits, dim=-1).to(where).cumsum(dim=-1)  # (B, V)
    u = torch.rand((cdf.shape[0], 1), generator=generator, device=where)  # (B, 1) in [0, 1)
    out = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(1)  # (B,)
    return out.clamp_(max=cdf.shape[1] - 1).to(logits.device)


@torch.no_grad()
def sample(
    model: nn.Module,
    num: int,
    seq_len: int | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    prompt: Tensor | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
) -> Tensor:
    """The reference sampler: ``num`` sequences of ``seq_len`` (default: the model's) bytes, long ``(num, T)``.

    ``prompt``, long ``(num, P)``, fixes the first ``P`` bytes. Every step runs the model on the whole
    prefix (slow; see the module docstring).
    """
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    check_sampling(temperature, top_k, top_p)
    T = seq_len if seq_len is not None else model.config.seq_len
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = torch.zeros((num, T), dtype=torch.long, device=device)
    start = 0
    if prompt is not None:
        start = prompt.shape[1]
        out[:, :start] = prompt.to(device)
    for t in range(start, T):
        logits = model(out[:, : t + 1])[:, t]  # (num, V): depends on bytes < t only
        out[:, t] = draw(logits, temperature, top_k, top_p, generator)
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
