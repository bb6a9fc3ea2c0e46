"""Attention probabilities of chosen query rows (``AttentionBackend.attention_probs``, ``row_mask``).

For every registered pattern (every mode of the two-part patterns, Child et al. 2019 §4.3) and every
backend that runs here: the probabilities of a few rows are the rows of the dense softmax (float64
reference), sum to 1 over the keys the pattern allows, are exactly 0 on the others (the future
included) and ``probs @ v`` equals the backend's own ``attend`` output on those rows, so a picture
drawn from them shows what the backend computed. Rows with no allowed key are all zeros.
"""

from __future__ import annotations

import pytest
import torch
from test_backends import CASES, HEADS, build, qkv

from attention_patterns.backends import create_backend
from attention_patterns.backends.flex import FlexBackend

N = 150  # not a multiple of the test strides / blocks: ragged last blocks
ROWS = [0, 1, 17, 63, 64, 100, N - 1]


def backend(name: str):
    if name == "flex" and not torch.cuda.is_available():  # FlexAttention's unfused path: forward only on CPU
        return FlexBackend(block_size=16, compile=False)
    return create_backend(name, block_size=16) if name == "blocksparse" else create_backend(name)


def reference_probs(q, k, comp, layer):
    """Full (T, T) masked softmax in float64, from the dense element mask."""
    mask = comp.mask(q.shape[2], layer)  # (H', T, T)
    scores = (q.double() @ k.double().transpose(-1, -2)) * q.shape[-1] ** -0.5
    empty = ~mask.any(-1, keepdim=True)
    scores = scores.masked_fill(~mask, float("-inf")).masked_fill(empty, 0.0)
    return torch.softmax(scores, -1).masked_fill(~mask, 0.0), mask


@pytest.mark.parametrize("case_id,cfg", CASES, ids=[c[0] for c in CASES])
def test_row_mask_is_the_rows_of_the_mask(case_id, cfg):
    comp = build(cfg)
    for layer in range(comp.num_layers_period):
        full = comp.mask(N, layer)
        assert torch.equal(comp.row_mask(ROWS, N, layer), full[:, ROWS]), case_id


def check_probs(cfg, name):
    comp = build(cfg)
    be = backend(name)
    q, k, v = (x.detach() for x in qkv(N, D=8, Dv=12))
    rows = torch.tensor(ROWS)
    for layer in range(comp.num_layers_period):  # interleaved patterns alternate their parts
        probs = be.attention_probs(q, k, comp, layer, rows)  # (B, H, R, T)
        assert probs.shape == (1, HEADS, len(ROWS), N) and probs.dtype == torch.float32
        ref, mask = reference_probs(q, k, comp, layer)
        allowed = mask[:, rows].expand(HEADS, -1, -1)[None]  # (1, H, R, T)
        torch.testing.assert_close(probs.double(), ref[:, :, rows], atol=1e-6, rtol=1e-5)
        assert bool((probs[~allowed] == 0).all()), "weight on a key the pattern forbids"
        future = torch.arange(N)[None, :] > rows[:, None]  # (R, T)
        assert bool((probs[..., future] == 0).all()), "weight on a future position"
        sums = probs.sum(-1)  # (B, H, R)
        has_key = allowed.any(-1)
        torch.testing.assert_close(sums[has_key], torch.ones_like(sums[has_key]))
        assert bool((sums[~has_key] == 0).all())  # rows with no allowed key: all zeros, not NaN
        with torch.no_grad():
            out = be.attend(q, k, v, comp, layer)  # (B, H, T, Dv)
        torch.testing.assert_close(probs @ v, out[:, :, rows], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("case_id,cfg", CASES, ids=[c[0] for c in CASES])
def test_probs_are_the_softmax_the_backend_computed(case_id, cfg):
    for name in ("dense", "blocksparse"):  # blocksparse: structured pieces or the generic gather
        check_probs(cfg, name)


@pytest.mark.parametrize(
    "name", ["auto", pytest.param("flex", marks=[] if torch.cuda.is_available() else pytest.mark.slow)]
)
@pytest.mark.parametrize("mode", ["split", "interleaved"])
def test_probs_of_auto_and_flex(name, mode):
    check_probs({"name": "strided", "stride": 16, "mode": mode}, name)
    if name == "auto":  # auto delegates to the backend it picks for the device
        check_probs({"name": "fixed", "stride": 16, "c": 4, "mode": mode}, name)


def test_default_rows_scale_and_errors():
    comp = build({"name": "strided", "stride": 8, "mode": "split"})
    q, k, _ = (x.detach() for x in qkv(40, D=8))
    dense = create_backend("dense")
    every = dense.attention_probs(q, k, comp)  # all rows
    assert every.shape == (1, HEADS, 40, 40)
    ref, _ = reference_probs(q, k, comp, 0)
    torch.testing.assert_close(every.double(), ref, atol=1e-6, rtol=1e-5)
    sharp = dense.attention_probs(q, k, comp, rows=[39], scale=10.0)  # an explicit scale is used
    assert not torch.allclose(sharp, every[:, :, 39:40])
    with pytest.raises(ValueError, match=r"query row 40 is outside the sequence: rows must lie in \[0, 39\]"):
        dense.attention_probs(q, k, comp, rows=[3, 40])
    with pytest.raises(ValueError, match="q and k must be"):
        dense.attention_probs(q, k[:, :, :10], comp, rows=[3])
