"""Key/value-cached decoding (zoo.generate, zoo.kv_cache) against the full forward pass and the reference sampler.

Every registered pattern and mode, on the dense (reference) and blocksparse backends: the logits of
every decoding step equal those of a full forward pass over the same prefix; the decoder reads only
the cached positions the pattern allows; a seeded generator gives the reference sampler's bytes.
"""

from __future__ import annotations

import gc
import types
import weakref

import pytest
import torch

import attention_patterns as ap
from zoo.generate import Decoder, generate
from zoo.kv_cache import KVCache
from zoo.registry import build
from zoo.sampling import sample

N = 45  # not a multiple of any stride / block below

# one small configuration per registered pattern (and mode); every registered pattern must appear
PATTERNS = {
    "dense": [{}],
    "local": [{"window": 5}],
    "strided": [{"stride": 4, "mode": m} for m in ("split", "merged", "interleaved")],
    "fixed": [
        {"stride": 6, "c": 2, "num_different_global_patterns": 2, "mode": m}
        for m in ("split", "merged", "interleaved")
    ],
    "axial": [{"width": 7, "mode": m} for m in ("split", "merged", "interleaved")],
    "bigbird": [{"block_size": 4, "window_blocks": 2, "random_blocks": 2, "different_layout_per_head": True}],
    "longformer": [{"block_size": 4, "window_blocks": 2, "global_block_indices": [1]}],
    "variable": [
        {
            "block_size": 4,
            "local_window_blocks": [2, 3],
            "num_random_blocks": 1,
            "horizontal_global_attention": True,
        }
    ],
    "block_local": [{"block_size": 4, "window_blocks": 2}],
}
CASES = [(name, cfg) for name, cfgs in PATTERNS.items() for cfg in cfgs]
IDS = [f"{name}-{cfg.get('mode', 'one')}" for name, cfg in CASES]


def test_every_registered_pattern_is_covered():
    assert set(PATTERNS) == set(ap.list_attentions())


def tiny_model(attention: dict, backend: str = "dense", seed: int = 0, **overrides) -> torch.nn.Module:
    """A 2-layer model (so interleaved patterns alternate) with random weights (the §6 init zeroes the logits)."""
    torch.manual_seed(seed)
    options = {"n_layer": 2, "n_embd": 16, "n_head": 4, "seq_len": N, "data_shape": [N], **overrides}
    model = build("strided", attention=attention, attention_backend=backend, **options)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.4)
    return model.eval()


def decode_logits(model, x: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """Cached logits of positions ``prompt_len .. T-1`` of ``x`` (B, T): ``(B, T - prompt_len, V)``."""
    dec = Decoder(model, x.shape[0], capacity=x.shape[1])
    out = [dec.prefill(x[:, :prompt_len] if prompt_len else None)]
    for t in range(prompt_len + 1, x.shape[1]):
        out.append(dec.step(x[:, t - 1]))
    return torch.stack(out, dim=1)


# --------------------------------------------------------------------------------- row keys
@pytest.mark.parametrize("name,cfg", CASES, ids=IDS)
def test_row_keys_equal_the_mask_rows(name, cfg):
    comp = ap.build_attention({"name": name, "num_heads": 4, **cfg})
    for layer in (0, 1):
        mask = comp.mask(N, layer)  # (H', N, N)
        assert torch.equal(comp.row_mask(range(N), N, layer), mask)  # the dense rows agree too
        for i in range(N):
            rows = comp.row_keys(i, layer)
            assert len(rows) == mask.shape[0]
            for h, keys in enumerate(rows):
                assert keys.dtype == torch.long and bool((keys <= i).all())  # causal
                assert torch.equal(keys, mask[h, i].nonzero().flatten()), (layer, i, h)


@pytest.mark.parametrize("name,cfg", CASES, ids=IDS)
def test_max_lookback_bounds_every_allowed_pair(name, cfg):
    comp = ap.build_attention({"name": name, "num_heads": 4, **cfg})
    i = torch.arange(N)
    for layer in (0, 1):
        back = comp.max_lookback(layer)
        reach = int(((i[:, None] - i[None, :]) * comp.mask(N, layer).any(0)).max())
        if back is None:
            assert reach > N // 2  # unbounded parts do look far back
        else:
            assert back == reach  # tight for the windowed parts


def test_lookback_of_the_windowed_patterns():
    assert ap.build_attention({"name": "local", "window": 9}).max_lookback() == 8
    assert (
        ap.build_attention({"name": "block_local", "block_size": 4, "window_blocks": 3}).max_lookback() == 11
    )
    inter = ap.build_attention({"name": "strided", "stride": 8, "mode": "interleaved"})
    assert (inter.max_lookback(0), inter.max_lookback(1)) == (7, None)
    assert ap.build_attention({"name": "dense"}).max_lookback() is None


def test_row_keys_at_one_million_positions():
    """Index arithmetic only: rows of n = 2**20 for every registered pattern (default configs), checked
    against the pattern's mask_mod evaluated on that one row."""
    n = 1 << 20
    keys = torch.arange(n)
    for name in ap.list_attentions():
        comp = ap.build_attention({"name": name, "num_heads": 4})
        for layer in range(comp.num_layers_period):
            fn = comp.mask_mod(layer)
            for i in (n - 1, 777_777):
                rows = comp.row_keys(i, layer)
                for h, row in enumerate(rows):
                    ref = fn(torch.tensor(0), torch.tensor(h), torch.tensor(i), keys).nonzero().flatten()
                    assert torch.equal(row, ref), (name, layer, i, h)


def test_row_keys_rejects_a_bad_position():
    comp = ap.build_attention({"name": "strided", "stride": 4, "num_heads": 2})
    with pytest.raises(ValueError, match="query position i must be an integer >= 0, got -1"):
        comp.row_keys(-1)


# --------------------------------------------------------------------------------- cached == full forward
def check_cached_against_prefixes(model, prefixes) -> None:
    """Cached logits of every step vs the full forward pass over each prefix in ``prefixes`` (all: N)."""
    x = torch.randint(0, 256, (2, N), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = model(x)  # (B, N, V); position t of the whole sequence sees the prefix x[:, :t+1] only
        for t in prefixes:
            torch.testing.assert_close(model(x[:, : t + 1])[:, t], whole[:, t], atol=1e-5, rtol=0)
        for prompt_len in (0, 11):
            cached = decode_logits(model, x, prompt_len)  # (B, N - prompt_len, V)
            torch.testing.assert_close(cached, whole[:, prompt_len:], atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", ["dense", "blocksparse"])
@pytest.mark.parametrize("name,cfg", CASES, ids=IDS)
def test_cached_logits_equal_the_full_forward(name, cfg, backend):
    """Every step, with and without a prompt (prompt 11 > every window: the rolling caches wrap)."""
    check_cached_against_prefixes(tiny_model({"name": name, **cfg}, backend), prefixes=(0, 11, 26, N - 1))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["dense", "blocksparse"])
@pytest.mark.parametrize("name,cfg", CASES, ids=IDS)
def test_cached_logits_equal_the_full_forward_of_every_prefix(name, cfg, backend):
    check_cached_against_prefixes(tiny_model({"name": name, **cfg}, backend), prefixes=range(N))


@pytest.mark.parametrize("name,cfg", CASES, ids=IDS)
def test_decoding_reads_only_the_allowed_cached_positions(name, cfg):
    """Poison (NaN) every cached key and value that a head's row does not allow: the step is unchanged."""
    model = tiny_model({"name": name, **cfg})
    comp = model.component
    x = torch.randint(0, 256, (2, N), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for t in (9, 30, N - 1):
            clean, dirty = Decoder(model, 2, N), Decoder(model, 2, N)
            clean.prefill(x[:, : t - 1])
            dirty.prefill(x[:, : t - 1])
            for layer, cache in enumerate(dirty.cache.layers):
                rows = comp.row_keys(t, layer)
                for h in range(model.config.n_head):
                    allowed = torch.zeros(cache.slots, dtype=torch.bool)
                    allowed[cache.slot(rows[h % len(rows)])] = True
                    cache.keys[:, h, ~allowed] = float("nan")
                    cache.values[:, h, ~allowed] = float("nan")
            a, b = clean.step(x[:, t - 2]), dirty.step(x[:, t - 2])
            assert torch.isfinite(b).all()
            torch.testing.assert_close(a, b, atol=0, rtol=0)


@pytest.mark.parametrize("name,cfg", CASES, ids=IDS)
def test_decoding_is_causal(name, cfg):
    """Changing byte m changes no cached prediction of positions <= m (and some later one)."""
    model = tiny_model({"name": name, **cfg})
    x = torch.randint(0, 256, (1, N), generator=torch.Generator().manual_seed(3))
    m = 20
    y = x.clone()
    y[0, m] = (x[0, m] + 1) % 256
    with torch.no_grad():
        a, b = decode_logits(model, x, 5), decode_logits(model, y, 5)  # positions 5..N-1
    assert torch.equal(a[:, : m - 5 + 1], b[:, : m - 5 + 1])
    assert not torch.equal(a[:, m - 5 + 1 :], b[:, m - 5 + 1 :])


@pytest.mark.parametrize(
    "overrides",
    [
        {"half_qk": True},
        {"embedding": "attention"},
        {"embedding": "absolute"},
        {"embedding": "data", "data_shape": [5, 9]},
    ],
    ids=["half_qk", "attention_embedding", "absolute_embedding", "data_embedding_2d"],
)
def test_cached_logits_with_half_qk_and_every_embedding(overrides):
    model = tiny_model({"name": "strided", "stride": 4}, "blocksparse", **overrides)
    x = torch.randint(0, 256, (3, N), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        full = model(x)
        torch.testing.assert_close(decode_logits(model, x, 7), full[:, 7:], atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_decoding(dtype):
    """Weights in bf16/fp16, or fp32 weights under autocast: the cache holds half-precision keys and the
    cached logits follow the full forward in that precision."""
    model = tiny_model({"name": "fixed", "stride": 6, "c": 2}, "dense")
    x = torch.randint(0, 256, (2, N), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=dtype):
            auto = decode_logits(model, x, 5)
        half = model.to(dtype)
        full = half(x).float()
        dec = Decoder(half, 2, N)
        dec.prefill(x[:, :5])
        assert dec.cache.layers[0].keys.dtype == dtype
        cached = decode_logits(half, x, 5).float()
    torch.testing.assert_close(cached, full[:, 5:], atol=0.1, rtol=0.05)
    torch.testing.assert_close(auto.float(), ref[:, 5:], atol=0.1, rtol=0.05)


# --------------------------------------------------------------------------------- the cache
def test_local_cache_is_a_rolling_window_bounded_by_it():
    sizes = {}
    for n in (40, 160):
        model = tiny_model({"name": "local", "window": 6}, seq_len=n, data_shape=[n])
        out = generate(
            model,
            3,
            prompt=torch.zeros((3, 10), dtype=torch.long),
            generator=torch.Generator().manual_seed(0),
        )
        assert out.shape == (3, n)
        dec = Decoder(model, 3)
        dec.prefill(torch.zeros((3, 10), dtype=torch.long))
        for _ in range(n - 12):
            dec.step(torch.zeros(3, dtype=torch.long))
        assert all(c.ring and c.slots == 6 for c in dec.cache.layers)
        sizes[n] = dec.cache.memory_bytes()
    # 2 layers x (keys + values) x batch 3 x 4 heads x 6 slots x 4 dims x 4 bytes, whatever n
    assert sizes[40] == sizes[160] == 2 * 2 * 3 * 4 * 6 * 4 * 4


def test_interleaved_strided_keeps_a_window_in_its_local_layers():
    model = tiny_model({"name": "strided", "stride": 4, "mode": "interleaved"})
    cache = KVCache.for_model(model, N)
    assert [(c.slots, c.ring) for c in cache.layers] == [(4, True), (N, False)]


def test_cache_reports_its_memory_and_length():
    model = tiny_model({"name": "strided", "stride": 4})
    dec = Decoder(model, 2, capacity=20)
    assert dec.cache.memory_bytes() == 0 and dec.cache.length == 0
    dec.prefill(torch.zeros((2, 6), dtype=torch.long))
    assert dec.cache.length == 7
    assert dec.cache.memory_bytes() == 2 * 2 * 2 * 4 * 20 * 4 * 4  # layers, k+v, B, H, slots, dims, fp32
    assert "length=7" in repr(dec.cache)


def _held_tensor_bytes(root: object) -> int:
    """Bytes of the tensor storages reachable from ``root`` (the model: weights, backend caches, ...)."""
    skip = (
        type,
        types.ModuleType,
        types.FunctionType,
        types.BuiltinFunctionType,
        types.MethodType,
        weakref.ref,
    )
    seen, storages, todo = set(), set(), [root]
    total = 0
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, skip):
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage()
            if storage.data_ptr() not in storages:
                storages.add(storage.data_ptr())
                total += storage.nbytes()
            continue
        todo.extend(gc.get_referents(obj))
    return total


@pytest.mark.parametrize("backend,options", [("dense", {}), ("blocksparse", {"cache_size": 1})])
def test_memory_of_ten_generations_with_distinct_lengths_does_not_grow(backend, options):
    """Each generation prefills a new prompt length: a backend cache keeping one entry per length
    would grow with every generation (the dense one keeps the longest mask and slices it)."""
    model = tiny_model({"name": "strided", "stride": 4}, backend, attention_backend_options=options)
    gen = torch.Generator().manual_seed(0)
    live = []
    for k in range(10):
        generate(model, 2, prompt=torch.zeros((2, 30 - 2 * k), dtype=torch.long), max_new=8, generator=gen)
        live.append(_held_tensor_bytes(model))
    assert max(live[1:]) <= live[0], live


def test_backend_caches_are_bounded():
    from attention_patterns.backends.lru import DEFAULT_SIZE

    model = tiny_model({"name": "strided", "stride": 4}, "blocksparse")
    with torch.no_grad():
        for n in range(10, 40):
            model(torch.zeros((1, n), dtype=torch.long))
    assert len(model.backend._plans) == DEFAULT_SIZE
    dense = tiny_model({"name": "strided", "stride": 4}, "dense")
    with torch.no_grad():
        for n in range(10, 40):
            dense(torch.zeros((1, n), dtype=torch.long))
    assert len(dense.backend.masks._cache) == 1  # one layer parity, one device: the longest mask


# --------------------------------------------------------------------------------- sampling
@pytest.mark.parametrize(
    "backend,kwargs",
    [("blocksparse", {}), ("dense", {"temperature": 0.7, "top_k": 20}), ("dense", {"top_p": 0.8})],
    ids=["plain", "top_k", "top_p"],
)
def test_same_seed_gives_the_reference_samplers_bytes(backend, kwargs):
    model = tiny_model({"name": "fixed", "stride": 6, "c": 2}, backend)
    prompt = torch.randint(0, 256, (3, 12), generator=torch.Generator().manual_seed(6))
    for p in (None, prompt):
        ours = generate(model, 3, prompt=p, generator=torch.Generator().manual_seed(9), **kwargs)
        ref = sample(model, 3, prompt=p, generator=torch.Generator().manual_seed(9), **kwargs)
        again = generate(model, 3, prompt=p, generator=torch.Generator().manual_seed(9), **kwargs)
        assert torch.equal(ours, ref) and torch.equal(ours, again)
        if p is not None:
            assert torch.equal(ours[:, :12], prompt)


def test_generate_prompt_forms_and_max_new():
    model = tiny_model({"name": "strided", "stride": 4})
    out = generate(model, 2, prompt=[b"abc", b"xyz"], max_new=5, generator=torch.Generator().manual_seed(0))
    assert (
        out.shape == (2, 8) and bytes(out[0, :3].tolist()) == b"abc" and bytes(out[1, :3].tolist()) == b"xyz"
    )
    one = generate(model, 3, prompt=b"hi", max_new=2)  # one prompt for every sequence
    assert one.shape == (3, 4) and bool((one[:, :2] == torch.tensor([104, 105])).all())
    assert model.training is False  # tiny_model is in eval mode: the mode is restored, not forced


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"prompt": [b"abc", b"de"]}, r"prompts must all have the same length, got lengths \[3, 2\]"),
        ({"prompt": "text"}, "prompt must be bytes, not str"),
        ({"prompt": torch.zeros((3, N), dtype=torch.long)}, f"the prompt has {N} bytes"),
        ({"prompt": torch.full((3, 4), 300)}, r"outside the bytes \[0, 255\]"),
        ({"prompt": torch.zeros((2, 4), dtype=torch.long)}, "the prompt has 2 rows but num=3"),
        ({"max_new": 0}, rf"max_new must be an integer in \[1, {N}\]"),
        ({"prompt": b"abcd", "max_new": N}, rf"max_new must be an integer in \[1, {N - 4}\]"),
        ({"temperature": 0}, "temperature must be > 0"),
        ({"top_k": 0}, "top_k must be an integer >= 1"),
        ({"top_p": 1.5}, r"top_p must be a number in \(0, 1\]"),
    ],
)
def test_generate_rejects_bad_arguments(kwargs, message):
    model = tiny_model({"name": "strided", "stride": 4})
    with pytest.raises(ValueError, match=message):
        generate(model, 3, **kwargs)
    with pytest.raises(ValueError, match="num must be an integer >= 1, got 0"):
        generate(model, 0)


def test_memory_test_sees_a_cache_that_grows():
    """The measure used above does see backend caches: without the bound, one plan per length piles up."""
    model = tiny_model(
        {"name": "strided", "stride": 4}, "blocksparse", attention_backend_options={"cache_size": 64}
    )
    gen = torch.Generator().manual_seed(0)
    live = []
    for k in range(3):
        generate(model, 2, prompt=torch.zeros((2, 30 - 2 * k), dtype=torch.long), max_new=8, generator=gen)
        live.append(_held_tensor_bytes(model))
    assert live[0] < live[1] < live[2]


@pytest.mark.slow
def test_cached_logits_with_the_flex_backend():
    """The prefill through FlexAttention (its unfused path on CPU: inference only)."""
    model = tiny_model({"name": "strided", "stride": 4}, "flex", attention_backend_options={"compile": False})
    x = torch.randint(0, 256, (2, N), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        torch.testing.assert_close(decode_logits(model, x, 11), model(x)[:, 11:], atol=1e-5, rtol=0)


def test_decoder_misuse_is_explained():
    model = tiny_model({"name": "strided", "stride": 4})
    dec = Decoder(model, 2, capacity=10)
    with pytest.raises(ValueError, match="the prompt has 3 rows but the decoder was made for a batch of 2"):
        dec.prefill(torch.zeros((3, 4), dtype=torch.long))
    with pytest.raises(ValueError, match="a prompt of 10 bytes leaves no position to decode"):
        dec.prefill(torch.zeros((2, 10), dtype=torch.long))
    with pytest.raises(ValueError, match="step\\(\\) at position 0 needs no byte"):
        dec.step(torch.zeros(2, dtype=torch.long))
    dec.prefill(torch.zeros((2, 8), dtype=torch.long))  # positions 0..8
    dec.step(torch.zeros(2, dtype=torch.long))  # position 9, the last
    with pytest.raises(ValueError, match="the decoder is full: capacity 10 positions"):
        dec.step(torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"decoder capacity must be in \[1, seq_len=45\], got 46"):
        Decoder(model, 1, capacity=46)


def test_generated_bytes_train_like_any_batch():
    """generate() runs its steps in inference mode; what it returns (and the backend caches its prefill
    filled) must still work in a training step."""
    model = tiny_model({"name": "strided", "stride": 4}, "blocksparse").train()
    out = generate(
        model, 2, prompt=torch.zeros((2, N - 1), dtype=torch.long), generator=torch.Generator().manual_seed(0)
    )
    model.loss(out).backward()  # same length as the prefill: reuses its plan
    assert model.training and all(p.grad is not None for p in model.parameters())
