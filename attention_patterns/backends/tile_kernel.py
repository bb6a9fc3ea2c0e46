"""Attention on one tile set with its log-sum-exp: the kernel under the block-sparse backend.

The block-sparse backend splits a pattern's attention set into disjoint *pieces* (a band, dense
causal attention inside reshaped subsequences, gathered key blocks, ...). Each piece is plain
softmax attention over some keys, and the pieces are merged exactly through their log-sum-exp
(the FlashAttention identity, Dao et al. 2022; the merged softmax is the softmax over the union of
the pieces' key sets, which is how a factorised pattern's ``A^(1) ∪ A^(2)`` is attended, Child et
al. 2019 §4.3 "merged").

The backward pass of a piece needs only the *merged* output ``O`` and log-sum-exp ``L`` of each
query row::

    P_ij = exp(s_ij - L_i),  dV = P^T dO,  dS = P * (dO V^T - rowsum(dO * O)),
    dQ = dS K * scale,       dK = dS^T Q * scale

so every piece's gradient contribution is computed independently and they are summed. Passing the
merged ``O`` and ``L`` into PyTorch's fused CPU flash-attention backward does exactly that.

Two implementations of :func:`tile_forward` / :func:`tile_backward`, which recompute the
probabilities in the backward pass:

* ``flash`` - ``aten._scaled_dot_product_flash_attention_for_cpu`` and its backward: fused,
  ``O(L)`` memory, skips upper tiles when ``causal``; CPU only, float32/float64/bfloat16/float16,
  equal head dims for q, k and v;
* ``math`` - matmul + softmax in plain PyTorch, any device (GPU fallback and test oracle);
  memory ``O(L S)`` per call.

and a third pair that keeps them, for small tiles (bands and short subsequences, where a kernel call
costs more than its arithmetic): :func:`probs_forward` also returns the tile's softmax ``P`` and
:func:`probs_backward` reuses it (``O(L S)`` memory per call, no recomputation, no padding of unequal
q/v head dims, any device). The backends use it when ``P`` is at most :data:`PROBS_MAX_ELEMENTS`.

Conventions: ``q`` is ``(N, M, L, D)``, ``k`` and ``v`` are ``(N, M, S, D)``; ``mask`` is an additive
float mask (``0`` or ``-inf``) in ``q``'s dtype, broadcastable to ``(N, M, L, S)``; ``causal`` means
``j <= i`` with top-left alignment (``L == S``). The returned log-sum-exp is ``-inf`` for rows listed
in ``empty`` (rows whose keys are all masked; their output is zero). The ``lse`` given to the
backward must be finite wherever a row has an allowed key and may be anything finite elsewhere.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

_FLASH_FWD = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
_FLASH_BWD = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
_FLASH_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)

KERNELS = ("auto", "flash", "math")

#: tile calls with at least this many flops use the caller's thread count inside :func:`serial_glue`
PARALLEL_MIN_FLOPS = 1 << 33

_STATE = threading.local()


#: a 2-thread add of 64K floats slower than this means the CPU is shared (idle machine: ~20 us)
CONTENDED_PROBE_S = 3e-4
#: seconds a contention probe stays valid
PROBE_PERIOD_S = 2.0

_PROBE = {"time": -math.inf, "threads": 0, "contended": False, "buffer": None}


def cpu_contended() -> bool:
    """True if multi-threaded operations currently wait for their threads (the CPU is shared).

    Measured, not guessed: the best of three multi-threaded adds on 64K floats (above PyTorch's
    grain size, so the add runs on every intra-op thread) takes ~20 us on an idle machine and
    milliseconds when other processes hold the cores. Cached for :data:`PROBE_PERIOD_S`.
    """
    threads = torch.get_num_threads()
    now = time.monotonic()
    if threads == 1:
        return False
    if now - _PROBE["time"] < PROBE_PERIOD_S and _PROBE["threads"] == threads:
        return _PROBE["contended"]
    if _PROBE["buffer"] is None:
        _PROBE["buffer"] = torch.zeros(1 << 16)
    x = _PROBE["buffer"]
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        x.mul_(0.5)
        best = min(best, time.perf_counter() - t0)
    _PROBE.update(time=now, threads=threads, contended=best > CONTENDED_PROBE_S)
    return _PROBE["contended"]


def use_serial_glue(mode: bool | str, device: torch.device) -> bool:
    """Resolve a backend's ``serial_glue`` option (True, False or ``"auto"``) for one call."""
    if device.type != "cpu" or mode is False:
        return False
    return True if mode is True else cpu_contended()


@contextmanager
def serial_glue(enabled: bool = True) -> Iterator[None]:
    """Run the block-sparse glue (copies, layout changes, small tiles) on one thread.

    A sparse plan is dozens of short operations. On a CPU shared with other processes every
    multi-threaded operation waits at its barrier until all of its threads got a time slice: with
    2 threads on a loaded 2-core machine, 30 copies of 1.5 MB took 207 ms instead of 4 ms on one
    thread. Inside this context PyTorch uses one thread, except the tile calls of at least
    :data:`PARALLEL_MIN_FLOPS`, which get the caller's thread count back (see :func:`_tile_threads`).
    On an idle machine all threads are better: the backends use this only when
    :func:`cpu_contended` says so (option ``serial_glue="auto"``).
    """
    n = torch.get_num_threads()
    if not enabled or n == 1 or getattr(_STATE, "threads", None) is not None:
        yield
        return
    _STATE.threads = n
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
        _STATE.threads = None


@contextmanager
def _tile_threads(flops: int) -> Iterator[None]:
    """Inside :func:`serial_glue`: the caller's thread count for a large tile call."""
    n = getattr(_STATE, "threads", None)
    if n is None or flops < PARALLEL_MIN_FLOPS:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(1)


def tile_flops(q: Tensor, k: Tensor, v: Tensor, causal: bool) -> int:
    """Forward flops of one tile call (two matmuls), halved for causal tiles."""
    L, S = q.shape[-2], k.shape[-2]
    flops = 2 * q[..., 0, 0].numel() * L * S * (q.shape[-1] + v.shape[-1])
    return flops // 2 if causal else flops


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype of log-sum-exps and merges: float64 for float64 inputs, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def flash_supported(q: Tensor, v: Tensor) -> bool:
    """True if the fused CPU flash kernel can serve these inputs."""
    return (
        _FLASH_FWD is not None
        and q.device.type == "cpu"
        and q.dtype in _FLASH_DTYPES
        and q.shape[-1] == v.shape[-1]
    )


def resolve_kernel(kernel: str, q: Tensor, v: Tensor) -> str:
    """``'flash'`` or ``'math'`` for ``kernel`` in :data:`KERNELS` (``auto`` prefers flash)."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {list(KERNELS)}, got {kernel!r}")
    if kernel == "auto":
        return "flash" if flash_supported(q, v) else "math"
    if kernel == "flash" and not flash_supported(q, v):
        raise ValueError(
            f"kernel='flash' needs CPU tensors of dtype in {list(_FLASH_DTYPES)} with equal q/v head dims "
            f"and torch's CPU flash-attention op; got device={q.device}, dtype={q.dtype}, "
            f"head dims {q.shape[-1]}/{v.shape[-1]}; use kernel='math' or 'auto'"
        )
    return kernel


def _causal_additive(L: int, S: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    i = torch.arange(L, device=device).view(L, 1)
    j = torch.arange(S, device=device).view(1, S)
    return torch.zeros((L, S), dtype=dtype, device=device).masked_fill(j > i, float("-inf"))


def _math_scores(q: Tensor, k: Tensor, mask: Tensor | None, causal: bool, scale: float) -> Tensor:
    """Scaled, masked scores in the accumulation dtype, ``(N, M, L, S)``."""
    s = torch.matmul(q, k.transpose(-1, -2)).to(acc_dtype(q.dtype)).mul_(scale)  # (N, M, L, S), fresh
    if mask is not None:
        s.add_(mask.to(s.dtype))
    if causal:
        s.add_(_causal_additive(q.shape[-2], k.shape[-2], s.dtype, s.device))
    return s


def tile_forward(
    q: Tensor,  # (N, M, L, D)
    k: Tensor,  # (N, M, S, D)
    v: Tensor,  # (N, M, S, Dv)
    *,
    scale: float,
    mask: Tensor | None = None,
    causal: bool = False,
    empty: Tensor | None = None,
    kernel: str = "flash",
) -> tuple[Tensor, Tensor]:  # (N, M, L, Dv), (N, M, L)
    """Softmax attention of ``q`` over ``k, v`` and the per-row log-sum-exp of the scaled scores."""
    if kernel == "flash":
        with _tile_threads(tile_flops(q, k, v, causal)):
            out, lse = _FLASH_FWD(q, k, v, 0.0, causal, attn_mask=mask, scale=scale)
        lse = lse.to(acc_dtype(q.dtype))
    else:
        s = _math_scores(q, k, mask, causal, scale)
        lse = torch.logsumexp(s, dim=-1)  # (N, M, L); -inf for rows with no key
        p = torch.exp(s - lse.masked_fill(torch.isinf(lse), 0.0).unsqueeze(-1))
        out = torch.matmul(p.to(v.dtype), v)
    if empty is not None:
        lse = lse.masked_fill(empty, float("-inf"))
    return out, lse


def tile_backward(
    dout: Tensor,  # (N, M, L, Dv)
    q: Tensor,  # (N, M, L, D)
    k: Tensor,  # (N, M, S, D)
    v: Tensor,  # (N, M, S, Dv)
    out: Tensor,  # (N, M, L, Dv) the merged output of these query rows
    lse: Tensor,  # (N, M, L) the merged log-sum-exp (finite)
    *,
    scale: float,
    mask: Tensor | None = None,
    causal: bool = False,
    kernel: str = "flash",
) -> tuple[Tensor, Tensor, Tensor]:  # (N, M, L, D), (N, M, S, D), (N, M, S, Dv)
    """Gradient contribution of this tile set, given the merged ``out`` and ``lse`` of its rows."""
    if kernel == "flash":
        lse = lse.to(torch.float64 if q.dtype == torch.float64 else torch.float32)
        with _tile_threads(2 * tile_flops(q, k, v, causal)):
            return _FLASH_BWD(dout, q, k, v, out, lse, 0.0, causal, attn_mask=mask, scale=scale)
    s = _math_scores(q, k, mask, causal, scale)
    p = torch.exp(s - lse.to(s.dtype).unsqueeze(-1))  # (N, M, L, S); 0 where masked
    dv = torch.matmul(p.transpose(-1, -2).to(dout.dtype), dout)
    dp = torch.matmul(dout, v.transpose(-1, -2)).to(p.dtype)
    delta = (dout.to(p.dtype) * out.to(p.dtype)).sum(-1, keepdim=True)  # (N, M, L, 1)
    ds = (p * (dp - delta) * scale).to(q.dtype)
    dq = torch.matmul(ds, k)
    dk = torch.matmul(ds.transpose(-1, -2), q)
    return dq, dk, dv


#: largest saved softmax (elements per batch row of a piece, i.e. per head) of :func:`probs_forward`
PROBS_MAX_ELEMENTS = 1 << 22


def probs_forward(
    q: Tensor,  # (N, M, L, D)
    k: Tensor,  # (N, M, S, D)
    v: Tensor,  # (N, M, S, Dv)
    *,
    scale: float,
    mask: Tensor | None = None,
    causal: bool = False,
    lse: bool = True,
    rows_have_keys: bool = False,
) -> tuple[Tensor, Tensor | None, Tensor]:  # (N, M, L, Dv), (N, M, L) or None, (N, M, L, S)
    """Softmax attention with the probabilities kept: ``(out, lse, P)``, ``P = softmax(q k^T scale + mask)``.

    ``P`` is in the accumulation dtype (:func:`acc_dtype`); rows with no allowed key get ``P = 0``,
    ``out = 0`` and ``lse = -inf``. q and v may have different head dims. ``lse=False`` skips the
    log-sum-exp (None is returned): a piece that is its heads' only piece never merges, and its
    backward needs ``P`` only. ``rows_have_keys=True`` promises that the mask leaves every row a key
    (it is checked otherwise; causal tiles always have one). Float32/float64 inputs whose mask leaves every row a key (bands and
    causal subsequences: their rows always see themselves) take a fused path: one batched matmul
    that adds the mask, one fused softmax. Otherwise the scores are computed in the inputs' dtype
    and the softmax in float32, step by step, with empty rows set to zero.
    """
    N, M, L, _ = q.shape
    S = k.shape[-2]
    fused = q.dtype in (torch.float32, torch.float64) and k.dtype == q.dtype
    add = _additive(mask, causal, N, M, L, S, q.dtype, q.device) if fused else None  # (1 or N M, L, S)
    if fused and (rows_have_keys or add is None or (causal and mask is None) or not bool(torch.isinf(add).all(-1).any())):
        q3, k3 = q.reshape(N * M, L, -1), k.reshape(N * M, S, -1)
        if add is None:
            s = torch.bmm(q3, k3.transpose(1, 2)).mul_(scale)
        else:
            s = torch.baddbmm(add, q3, k3.transpose(1, 2), alpha=scale)  # (N M, L, S) scores + mask
        out_lse = torch.logsumexp(s, dim=-1).view(N, M, L) if lse else None
        p = torch.softmax(s, dim=-1)
        del s
        out = torch.bmm(p, v.reshape(N * M, S, -1)).view(N, M, L, -1)
        return out, out_lse, p.view(N, M, L, S)
    p = _math_scores(q, k, mask, causal, scale)  # (N, M, L, S) scores, turned into P in place
    m = p.amax(dim=-1, keepdim=True)  # (N, M, L, 1); -inf on rows with no key
    m = m.masked_fill_(torch.isinf(m), 0.0)
    z = p.sub_(m).exp_().sum(dim=-1, keepdim=True)  # 0 on rows with no key
    out_lse = z.log().add_(m).squeeze(-1) if lse else None  # (N, M, L); -inf on rows with no key
    p = p.div_(z.masked_fill_(z == 0, 1.0))
    out = torch.matmul(p.to(v.dtype), v)
    return out, out_lse, p


_ADDITIVE: dict[tuple, Tensor] = {}


def _additive(mask: Tensor | None, causal: bool, N: int, M: int, L: int, S: int, dtype, device) -> Tensor | None:
    """The additive mask of a tile batched as ``(1 or N M, L, S)`` (the causal one cached per shape)."""
    if mask is not None:
        mask = mask.to(dtype)
        if mask.dim() == 4 and mask.shape[0] == 1 and mask.shape[1] == 1:
            mask = mask.reshape(1, L, S)  # one mask shared by every tile: stays broadcast
        else:
            mask = mask.expand(N, M, L, S).reshape(N * M, L, S)
    if not causal:
        return mask
    key = (L, S, dtype, str(device))
    if key not in _ADDITIVE:
        if len(_ADDITIVE) > 64:  # bounded: one entry per tile shape in use
            _ADDITIVE.clear()
        _ADDITIVE[key] = _causal_additive(L, S, dtype, device).unsqueeze(0)
    return _ADDITIVE[key] if mask is None else mask + _ADDITIVE[key]


def probs_backward(
    p: Tensor,  # (N, M, L, S) this tile's softmax from probs_forward
    dout: Tensor,  # (N, M, L, Dv)
    q: Tensor,  # (N, M, L, D)
    k: Tensor,  # (N, M, S, D)
    v: Tensor,  # (N, M, S, Dv)
    *,
    scale: float,
    merged: tuple[Tensor, Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:  # (N, M, L, D), (N, M, S, D), (N, M, S, Dv)
    """Gradients of the tile from its saved softmax ``p``.

    Alone (``merged=None``: the tile's keys are the row's whole attention set), the merged softmax is
    ``p`` and ``dS = softmax_backward(dP, P)``. When the tile is one of several disjoint pieces merged
    through their log-sum-exps, pass ``merged = (out, lse, lse_tile)`` (the merged output and
    log-sum-exp of these rows and the tile's own log-sum-exp): the merged probabilities are
    ``p exp(lse_tile - lse)`` and ``dS = P (dP - rowsum(dO * O))`` (see the module docstring).
    Batched matmuls over ``(N M)`` with the scale folded into the last two.
    """
    dt = p.dtype
    N, M, L, S = p.shape
    if merged is not None:
        out, lse, lse_tile = merged
        factor = torch.exp(lse_tile.to(dt) - lse.to(dt)).nan_to_num_(0.0)  # 0 where the tile has no key
        p = p * factor.unsqueeze(-1)
    p3 = p.reshape(N * M, L, S)
    do3 = dout.reshape(N * M, L, -1)
    dv = torch.bmm(p3.transpose(1, 2).to(dout.dtype), do3).view(N, M, S, -1)
    dp = torch.bmm(do3, v.reshape(N * M, S, -1).transpose(1, 2)).to(dt)  # (N M, L, S)
    if merged is None:
        ds = torch._softmax_backward_data(dp, p3, -1, dt)
    else:
        delta = (dout.to(dt) * out.to(dt)).sum(-1).reshape(N * M, L, 1)  # rowsum(dO * O)
        ds = dp.sub_(delta).mul_(p3)
    del dp
    ds = ds.to(q.dtype)
    q3, k3 = q.reshape(N * M, L, -1), k.reshape(N * M, S, -1)
    if q.dtype in (torch.float32, torch.float64):
        dq = torch.baddbmm(q3, ds, k3, beta=0, alpha=scale)
        dk = torch.baddbmm(k3, ds.transpose(1, 2), q3, beta=0, alpha=scale)
    else:
        ds = ds.mul_(scale)
        dq, dk = torch.bmm(ds, k3), torch.bmm(ds.transpose(1, 2), q3)
    return dq.view(N, M, L, -1), dk.view(N, M, S, -1), dv
