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
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attention_patterns.backends.tile_kernel import cpu_contended
from attention_patterns.base import union_rows

from .kv_cache import KVCache
from .sampling import check_sampling, draw


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
        self._positions: Tensor | None = None  # (capacity, d) position embeddings, made at the first step
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
        for layer, block in enumerate(model.blocks):
            attn = block.attn
            q, k, v = attn.qkv_heads(block.ln_1(x))  # (B, H, 1, D)
            cache = self.cache.layers[layer]
            cache.write(k, v, t)
            y = self._attend_row(layer, q, t)  # (B, H, 1, Dv)
            x = block.dropout(x, attn.merge_heads(y))  # (B, 1, d)
            x = block.dropout(x, block.ffn(block.ln_2(x)))  # (B, 1, d)
        self.position = self.cache.length = t + 1
        return model.head(model.ln_f(x[:, -1]))  # (B, V)

    # ------------------------------------------------------------------ one attention row
    def _row(
        self, layer: int, t: int, device: torch.device
    ) -> tuple[Tensor, int, Tensor | None, Tensor | None]:
        """How query ``t`` of ``layer`` reads the cache, built once per step and cache layout:
        ``(flat, L, mask, empty)`` - the ``(H L,)`` slots of every head's keys in the ``(B, H S, D)`` view,
        the keys per head ``L``, the ``(1, H', 1, L)`` validity of padded keys (None: none padded) and
        the ``(1, H', 1, 1)`` heads without any key (None: every head has one)."""
        cache = self.cache.layers[layer]
        parity = layer % len(self._head_parts)
        key = (parity, cache.slots, cache.ring)
        if key not in self._rows:
            H = self.model.config.n_head
            rows = union_rows(self._head_parts[parity], t)  # one sorted tensor per head (or one for all)
            lengths = [r.numel() for r in rows]
            mask = empty = None
            if len(set(lengths)) == 1:
                keys = torch.stack(rows)  # (H', L)
            else:  # rows of different lengths: pad with position t (just written) and mask the padding
                keys = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=t)  # (H', L)
                valid = torch.arange(keys.shape[1])[None, :] < torch.tensor(lengths)[:, None]  # (H', L)
                none = ~valid.any(-1)  # (H',): heads whose row has no key
                if bool(none.any()):
                    valid[none, 0] = True  # attend to the padding (position t), then zero the output
                    empty = none.view(1, -1, 1, 1).to(device)
                mask = valid.view(1, len(rows), 1, -1).to(device)
            flat = (cache.slot(keys) + torch.arange(H)[:, None] * cache.slots).flatten()  # (H L,)
            self._rows[key] = (flat.to(device), keys.shape[1], mask, empty)  # L = 0: no head has a key
        return self._rows[key]

    def _attend_row(self, layer: int, q: Tensor, t: int) -> Tensor:  # q: (B, H, 1, Dqk)
        B, H, _, Dqk = q.shape
        cache = self.cache.layers[layer]
        assert cache.keys is not None and cache.values is not None
        Dv = cache.values.shape[-1]
        flat, L, mask, empty = self._row(layer, t, q.device)
        if L == 0:  # no head has a key: zero output (as the backends give empty rows)
            return q.new_zeros((B, H, 1, Dv))
        S = cache.slots
        kg = cache.keys.view(B, H * S, Dqk).index_select(1, flat).view(B, H, L, Dqk)  # (B, H, L, Dqk)
        vg = cache.values.view(B, H * S, Dv).index_select(1, flat).view(B, H, L, Dv)  # (B, H, L, Dv)
        # softmax(q k^T / sqrt(Dqk)) v over the row's keys (eq. 3), in one fused call
        y = F.scaled_dot_product_attention(q.to(kg.dtype), kg, vg, attn_mask=mask)  # (B, H, 1, Dv)
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
