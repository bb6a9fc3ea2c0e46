"""Fast generation: key/value-cached, sparse-aware decoding of a Sparse Transformer (Child et al. 2019).

Sampling is autoregressive (§7): byte ``t`` is drawn from the model's prediction at position ``t``,
which depends on bytes ``< t`` only. The reference sampler (:func:`zoo.sampling.sample`) re-runs the
whole prefix for every byte; :class:`Decoder` computes each position once:

1. **prefill** - one forward pass over the prompt (through the model's attention backend) writes
   every layer's keys and values into a :class:`~zoo.kv_cache.KVCache` and predicts the first new byte;
2. **step** - each new position computes its queries, keys and values once per layer and attends
   **only to the cached positions its pattern allows for that query**
   (:meth:`attention_patterns.AttentionPattern.row_keys`: strided, the window of ``l`` plus every
   ``l``-th earlier position; fixed, its own block plus the summary columns; local, its window;
   dense, everything). A step of a sparse pattern costs ``O(keys per row)``, not ``O(t)``.

Heads whose rows differ (``split`` mode, per-head random blocks) gather their own keys; rows with no
allowed key give a zero output, as in training (§4.2, the summary head of ``fixed``). Layers that
look back a bounded distance keep a rolling window only (:mod:`zoo.kv_cache`).

:func:`generate` is the user-facing API; every byte is drawn by :func:`zoo.sampling.draw`, the
reference sampler's own function, so a seeded generator gives the reference sampler's bytes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attention_patterns.backends.tile_kernel import cpu_contended
from attention_patterns.base import union_rows

from .kv_cache import KVCache, LayerCache
from .layers import GELU_SCALE
from .sampling import check_sampling, draw


@dataclass(frozen=True)
class _StepWeights:
    """One block's parameters as a decoding step uses them (transposed views for ``addmm``, no copies),
    read once per :class:`Decoder`: a step then makes no module calls, whose overhead would exceed the
    arithmetic of one position."""

    heads: int
    qk: int  # d_qk: query/key width of all heads
    ln_1: tuple[Tensor, Tensor, float]  # LayerNorm weight, bias, eps
    qkv_wt: Tensor  # (d, 2 d_qk + d)
    qkv_b: Tensor
    proj_wt: Tensor  # (d, d)
    proj_b: Tensor
    ln_2: tuple[Tensor, Tensor, float]
    fc1_wt: Tensor  # (d, hidden)
    fc1_b: Tensor
    fc2_wt: Tensor  # (hidden, d)
    fc2_b: Tensor

    @classmethod
    def of(cls, block: nn.Module) -> _StepWeights:
        attn, ffn = block.attn, block.ffn
        return cls(
            attn.n_head, attn.qk_dim, _norm(block.ln_1),
            attn.qkv.weight.t(), attn.qkv.bias, attn.proj.weight.t(), attn.proj.bias,
            _norm(block.ln_2), ffn.fc1.weight.t(), ffn.fc1.bias, ffn.fc2.weight.t(), ffn.fc2.bias,
        )  # fmt: skip


def _norm(ln: nn.LayerNorm) -> tuple[Tensor, Tensor, float]:
    return ln.weight, ln.bias, ln.eps


class Decoder:
    """Incremental decoding of ``model`` (a :class:`~zoo.model.SparseTransformer`) for a batch.

    ``capacity``: the longest sequence to decode (default: the model's ``seq_len``). Call
    :meth:`prefill` once with the prompt (or nothing), then :meth:`step` with each new byte::

        dec = Decoder(model, batch=4)
        logits = dec.prefill(prompt)        # (4, V): predicts byte P
        for _ in range(n):
            byte = draw(logits)             # (4,)
            logits = dec.step(byte)         # predicts the next byte

    The caller puts the model in eval mode and disables gradients (:func:`generate` does both).
    """

    def __init__(self, model: nn.Module, batch: int, capacity: int | None = None) -> None:
        self.model = model
        self.component = model.component
        self.batch = batch
        self.capacity = model.config.seq_len if capacity is None else capacity
        if not 1 <= self.capacity <= model.config.seq_len:
            raise ValueError(
                f"decoder capacity must be in [1, seq_len={model.config.seq_len}], got {self.capacity}"
            )
        self.cache = KVCache.for_model(model, self.capacity)
        period = self.component.num_layers_period
        self._head_parts = [self.component.head_parts(p) for p in range(period)]
        self._rows: dict[tuple, tuple] = {}  # how position t reads each cache layout (see _row)
        self._head_offsets: dict[int, Tensor] = {}  # slots per head -> (H, 1) offsets of the heads
        self._masks: tuple = ((), None, None)  # the rows' lengths of the last step and their masks
        self._positions: Tensor | None = None  # (capacity, d) position embeddings, made at the first step
        self._layers = [_StepWeights.of(block) for block in model.blocks]  # what a step multiplies by
        self._head = (model.head.weight.t(), model.head.bias, _norm(model.ln_f))
        self.position = 0  # the next position to compute

    # ------------------------------------------------------------------ the two phases
    def prefill(self, prompt: Tensor | None = None) -> Tensor:
        """Run positions ``0 .. P`` for ``prompt`` long ``(B, P)`` (``P = 0``: None); logits ``(B, V)`` of byte ``P``."""
        if self.position:
            raise RuntimeError("prefill() starts a decoder; it was already called")
        if prompt is None or prompt.shape[1] == 0:
            return self.step(None)
        model = self.model
        B, P = prompt.shape
        if B != self.batch:
            raise ValueError(f"the prompt has {B} rows but the decoder was made for a batch of {self.batch}")
        if P >= self.capacity:
            raise ValueError(f"a prompt of {P} bytes leaves no position to decode (capacity {self.capacity})")
        # positions 0..P: inputs start, x_0 .. x_{P-1}; the appended byte only pads the shift
        idx = torch.cat([prompt, prompt.new_zeros((B, 1))], dim=1)  # (B, P + 1)
        x = model.embed(idx)  # (B, P + 1, d)
        for layer, block in enumerate(model.blocks):
            attn = block.attn
            q, k, v = attn.qkv_heads(block.ln_1(x))  # (B, H, P + 1, D)
            self.cache.layers[layer].write(k, v, 0)
            y = attn.backend.attend(q, k, v, attn.component, layer=layer)  # (B, H, P + 1, Dv)
            x = block.dropout(x, attn.merge_heads(y))  # eval: x + attn(norm(x)), (B, P + 1, d)
            x = block.dropout(x, block.ffn(block.ln_2(x)))  # (B, P + 1, d)
        self.position = self.cache.length = P + 1
        return model.head(model.ln_f(x[:, -1]))  # (B, V)

    def step(self, prev: Tensor | None) -> Tensor:
        """Run the next position ``t`` from byte ``t - 1`` (``prev``, long ``(B,)``; None at ``t = 0``);
        logits ``(B, V)`` of byte ``t``."""
        t = self.position
        if t >= self.capacity:
            raise ValueError(f"the decoder is full: capacity {self.capacity} positions")
        if (prev is None) != (t == 0):
            raise ValueError(
                f"step() at position {t} needs {'no byte' if t == 0 else 'the byte of position t - 1'}"
            )
        model = self.model
        self._rows.clear()
        if self._positions is None:
            self._positions = model.embed_in.position(self.capacity)  # (capacity, d): one lookup per step
        x = model.embed_in.step(prev, t, self.batch, self._positions[t])  # (B, 1, d)
        if torch.is_autocast_enabled(x.device.type):  # through the modules: autocast casts as in training
            return self._step_modules(x, t)
        # the same arithmetic as the modules (FeedForward's no-grad path included) on (B, d) rows, called
        # directly: a step is dozens of tiny operations, and module calls would cost more than they do
        B, d = self.batch, x.shape[-1]
        x = x.reshape(B, d)  # (B, d): one position, no time axis
        shape = (d,)
        for layer, w in enumerate(self._layers):
            # attention branch (eq. 13): x + W_p attend(q, k, v) of norm(x)
            h = F.layer_norm(x, shape, *w.ln_1)  # (B, d)
            qkv = torch.addmm(w.qkv_b, h, w.qkv_wt)  # (B, 2 d_qk + d)
            qk, H = w.qk, w.heads
            self.cache.layers[layer].write_one(
                qkv[:, qk : 2 * qk].view(B, H, -1), qkv[:, 2 * qk :].view(B, H, -1), t
            )  # k (B, H, D_qk), v (B, H, D_v)
            y = self._attend_row(layer, qkv[:, :qk].view(B, H, 1, -1), t)  # (B, H, 1, D_v)
            x = torch.addmm(x, y.view(B, d), w.proj_wt).add_(w.proj_b)  # (B, d)
            # feed-forward branch (eq. 14), as FeedForward: silu(a u) / a with the scalings on the matmuls
            h = F.layer_norm(x, shape, *w.ln_2)  # (B, d)
            u = F.silu(torch.addmm(w.fc1_b, h, w.fc1_wt, beta=GELU_SCALE, alpha=GELU_SCALE))  # (B, hidden)
            x = torch.addmm(x, u, w.fc2_wt, alpha=1.0 / GELU_SCALE).add_(w.fc2_b)  # (B, d)
        self.position = self.cache.length = t + 1
        head_wt, head_b, ln_f = self._head
        return torch.addmm(head_b, F.layer_norm(x, shape, *ln_f), head_wt)  # (B, V)

    def _step_modules(self, x: Tensor, t: int) -> Tensor:
        """:meth:`step` through the blocks' modules (under autocast): ``x`` ``(B, 1, d)`` -> logits ``(B, V)``."""
        model = self.model
        for layer, block in enumerate(model.blocks):
            attn = block.attn
            q, k, v = attn.qkv_heads(block.ln_1(x))  # (B, H, 1, D)
            self.cache.layers[layer].write(k, v, t)
            y = self._attend_row(layer, q, t)  # (B, H, 1, Dv)
            x = block.dropout(x, attn.merge_heads(y))  # (B, 1, d)
            x = block.dropout(x, block.ffn(block.ln_2(x)))  # (B, 1, d)
        self.position = self.cache.length = t + 1
        return model.head(model.ln_f(x[:, -1]))  # (B, V)

    # ------------------------------------------------------------------ one attention row
    def _row(self, layer: int, t: int) -> tuple[Tensor, int, Tensor | None, Tensor | None]:
        """How query ``t`` of ``layer`` reads the cache, built once per step and cache layout:
        ``(flat, L, bias, empty)``: the ``(H L,)`` slots of every head's keys in the ``(B, H S, D)`` view,
        the keys per head ``L``, the ``(B H, 1, L)`` additive mask of padded keys (0 or ``-inf``; None:
        none padded) and the ``(B, H, 1, 1)`` heads without any key (None: every head has one)."""
        cache = self.cache.layers[layer]
        parity = layer % len(self._head_parts)
        key = (parity, cache.slots, cache.ring)
        plan = self._rows.get(key)
        if plan is None:
            plan = self._rows[key] = self._plan_row(parity, cache, t)
        return plan

    def _plan_row(
        self, parity: int, cache: LayerCache, t: int
    ) -> tuple[Tensor, int, Tensor | None, Tensor | None]:
        """:meth:`_row` for one cache layout: the keys by index arithmetic (:func:`union_rows`), the masks
        from the rows' lengths, which change far more rarely than the rows (the last masks are kept)."""
        assert cache.keys is not None
        H, S = cache.keys.shape[1], cache.slots
        rows = union_rows(self._head_parts[parity], t)  # sorted keys, per head (or one for all heads)
        lengths = tuple(r.shape[0] for r in rows)
        L = max(lengths)
        if min(lengths) == L:
            keys = rows[0][None] if len(rows) == 1 else torch.stack(rows)  # (H', L)
        else:  # rows of different lengths: pad with position t (just written) and mask the padding
            keys = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=t)  # (H', L)
        if cache.ring:
            keys = keys.remainder(S)
        offsets = self._head_offsets.get(S)
        if offsets is None:
            offsets = self._head_offsets[S] = (
                torch.arange(H)[:, None] * S
            )  # (H, 1): head h's slots start at h S
        flat = (keys + offsets).view(-1).to(cache.keys.device)  # (H L,): heads sharing a row repeat it
        if self._masks[0] != lengths:
            self._masks = (lengths, *self._padding_masks(lengths, H, cache.keys))
        return flat, L, self._masks[1], self._masks[2]  # L = 0: no head has a key

    def _padding_masks(
        self, lengths: tuple[int, ...], H: int, like: Tensor
    ) -> tuple[Tensor | None, Tensor | None]:
        """``(bias, empty)`` of :meth:`_row` for rows of these lengths (padded to the longest)."""
        L = max(lengths)
        if min(lengths) == L:
            return None, None
        counts = np.asarray(lengths)  # (H',)
        valid = np.arange(L)[None, :] < counts[:, None]  # (H', L)
        none = counts == 0  # (H',): heads whose row has no key
        empty = None
        if none.any():
            valid[none, 0] = True  # attend to the padding (position t), then zero the output
            empty = torch.from_numpy(np.broadcast_to(none[:, None, None], (H, 1, 1)).copy())
            empty = empty.view(1, H, 1, 1).to(like.device)
        additive = np.where(valid, np.float32(0), np.float32(-np.inf))  # (H', L)
        additive = np.broadcast_to(additive[None, :, None, :], (self.batch, H, 1, L))
        bias = torch.from_numpy(additive.reshape(self.batch * H, 1, L).copy())
        return bias.to(device=like.device, dtype=like.dtype), empty

    def _attend_row(self, layer: int, q: Tensor, t: int) -> Tensor:  # q: (B, H, 1, Dqk)
        B, H, _, Dqk = q.shape
        cache = self.cache.layers[layer]
        assert cache.keys is not None and cache.values is not None
        Dv = cache.values.shape[-1]
        flat, L, bias, empty = self._row(layer, t)
        if L == 0:  # no head has a key: zero output (as the backends give empty rows)
            return q.new_zeros((B, H, 1, Dv))
        S = cache.slots
        kg = cache.keys.view(B, H * S, Dqk).index_select(1, flat).view(B, H, L, Dqk)  # (B, H, L, Dqk)
        vg = cache.values.view(B, H * S, Dv).index_select(1, flat).view(B, H, L, Dv)  # (B, H, L, Dv)
        # softmax(q k^T / sqrt(Dqk)) v over the row's keys (eq. 3) as three batched matmul-sized calls: for one
        # query row SDPA takes its slow "math" path on CPU whenever it is given a mask (3x slower)
        q = q.to(kg.dtype).reshape(B * H, 1, Dqk)
        kt = kg.view(B * H, L, Dqk).transpose(1, 2)  # (B H, Dqk, L)
        if bias is None:  # every key valid
            scores = torch.bmm(q, kt).mul_(Dqk**-0.5)  # (B H, 1, L)
        else:  # padded keys: + 0 or -inf, riding on the matmul
            scores = torch.baddbmm(bias, q, kt, alpha=Dqk**-0.5)  # (B H, 1, L)
        y = torch.bmm(torch.softmax(scores, dim=-1), vg.view(B * H, L, Dv)).view(B, H, 1, Dv)
        return y if empty is None else y.masked_fill(empty, 0.0)


#: a decoding step on CPU with at most this many activations (batch x n_embd) runs on one thread
SERIAL_STEP_MAX = 1 << 14


@contextlib.contextmanager
def step_threads(device: torch.device, batch: int, width: int) -> Iterator[None]:
    """Decoding steps on one CPU thread when they are small or the CPU is shared.

    A step is dozens of operations on ``(B, 1, d)`` tensors: too small to split across threads, and
    on a CPU shared with other processes every multi-threaded operation waits for all of its threads
    (measured: a 16-image completion took 0.54 s of CPU time on one thread and 200 s of wall time
    on two threads of a 2-core machine at load 15).
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1 or (batch * width > SERIAL_STEP_MAX and not cpu_contended()):
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------------- prompts
def as_prompt(prompt: Any, num: int, vocab_size: int) -> Tensor | None:
    """A prompt as long ``(num, P)``: a tensor/array ``(P,)``, ``(1, P)`` or ``(num, P)``, ``bytes``, or a
    list of ``num`` byte strings / integer lists of one length (one row is repeated ``num`` times)."""
    if prompt is None:
        return None
    if isinstance(prompt, (bytes, bytearray)):
        rows: Any = [list(prompt)]
    elif isinstance(prompt, str):
        raise ValueError("prompt must be bytes, not str: pass text.encode('utf-8')")
    elif isinstance(prompt, (Tensor, np.ndarray)):
        rows = torch.as_tensor(prompt)
        if rows.dim() == 1:
            rows = rows[None]
        if rows.dim() != 2:
            raise ValueError(f"prompt must be (P,) or (num, P) bytes, got shape {tuple(rows.shape)}")
        if rows.dtype.is_floating_point or rows.dtype == torch.bool or rows.dtype.is_complex:
            raise ValueError(f"prompt must hold integer byte values, got dtype {rows.dtype}")
    elif isinstance(prompt, Sequence):
        rows = [
            list(r) if isinstance(r, (bytes, bytearray, Sequence, Tensor, np.ndarray)) else r for r in prompt
        ]
        if rows and not isinstance(rows[0], list):
            rows = [rows]  # one prompt given as a list of ints
        lengths = [len(r) for r in rows]
        if len(set(lengths)) > 1:
            raise ValueError(
                f"prompts must all have the same length, got lengths {lengths}: a batch is decoded in step, "
                "so trim them to a common length (e.g. the shortest) or generate each length separately"
            )
    else:
        raise ValueError(
            f"prompt must be bytes, a list of byte strings or a (num, P) tensor, got {type(prompt).__name__}"
        )
    rows = torch.as_tensor(rows, dtype=torch.long) if not isinstance(rows, Tensor) else rows.long()
    if rows.shape[0] == 1 and num > 1:
        rows = rows.expand(num, -1)
    if rows.shape[0] != num:
        raise ValueError(f"the prompt has {rows.shape[0]} rows but num={num}; give one row or num rows")
    if rows.numel():
        lo, hi = int(rows.min()), int(rows.max())
        if lo < 0 or hi >= vocab_size:
            raise ValueError(
                f"the prompt holds the value {lo if lo < 0 else hi}, outside the bytes [0, {vocab_size - 1}]"
            )
    return rows.contiguous()


# --------------------------------------------------------------------------------- the API
def check_generate_args(
    model: nn.Module,
    num: int,
    prompt: Any = None,
    max_new: int | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor | None, int]:
    """Check :func:`generate`'s arguments (``ValueError`` naming a bad one); ``(prompt (num, P) or None, max_new)``."""
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ValueError(f"num must be an integer >= 1, got {num!r}")
    check_sampling(temperature, top_k, top_p)
    config = model.config
    rows = as_prompt(prompt, num, config.vocab_size)
    P = 0 if rows is None else rows.shape[1]
    if P >= config.seq_len:
        raise ValueError(
            f"the prompt has {P} bytes; the model's seq_len={config.seq_len} leaves none to generate"
        )
    if max_new is None:
        max_new = config.seq_len - P
    if isinstance(max_new, bool) or not isinstance(max_new, int) or not 1 <= max_new <= config.seq_len - P:
        raise ValueError(
            f"max_new must be an integer in [1, {config.seq_len - P}] (seq_len={config.seq_len} minus the "
            f"{P}-byte prompt), got {max_new!r}"
        )
    return rows, max_new


def generate(
    model: nn.Module,
    num: int,
    prompt: Any = None,
    max_new: int | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``num`` sequences continuing ``prompt``: long ``(num, P + max_new)`` (prompt included).

    Args:
        model: a :class:`~zoo.model.SparseTransformer` (any pattern, backend, embedding; any dtype).
        num: number of sequences (the batch).
        prompt: ``None`` (unconditional) or a batch of byte prefixes of one length ``P``, see
            :func:`as_prompt`; unequal lengths raise ``ValueError``.
        max_new: bytes to generate (default: up to the model's ``seq_len``).
        temperature: divides the logits before sampling (:func:`zoo.sampling.draw`).
        top_k: sample among the ``top_k`` most likely bytes only (None: all).
        top_p: sample among the smallest set of bytes whose probability reaches ``top_p`` (None: all).
        generator: a seeded ``torch.Generator`` makes the bytes reproducible (the reference sampler's).
    """
    rows, max_new = check_generate_args(model, num, prompt, max_new, temperature, top_k, top_p)
    config = model.config
    P = 0 if rows is None else rows.shape[1]
    device = next(model.parameters()).device
    T = P + max_new
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():  # the prefill goes through the backend, whose caches training reuses
            out = torch.zeros((num, T), dtype=torch.long, device=device)
            if rows is not None:
                out[:, :P] = rows.to(device)
            decoder = Decoder(model, num, capacity=T)
            logits = decoder.prefill(out[:, :P]) if P else None  # (num, V): byte P
        # the steps touch only the decoder's own tensors: inference mode spares the autograd
        # bookkeeping of their many small operations
        with torch.inference_mode(), step_threads(device, num, config.n_embd):
            if logits is None:
                logits = decoder.step(None)  # position 0: byte 0
            for t in range(P, T):
                out[:, t] = draw(logits, temperature, top_k, top_p, generator)
                if t + 1 < T:
                    logits = decoder.step(out[:, t])  # byte t + 1
    finally:
        model.train(was_training)
    return out
