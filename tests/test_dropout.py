"""Residual dropout (paper §5.4): the fused ``x + dropout(branch)`` and its fast CPU mask."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from zoo.dropout import ResidualDropout, dropout_mask, keep_probability


@pytest.mark.parametrize("p", [0.01, 0.25, 0.4, 0.5, 0.9])
def test_mask_values_and_keep_rate(p):
    q = keep_probability(p)
    assert abs(q - (1 - p)) <= 2**-17  # p rounded to a multiple of 2^-16
    torch.manual_seed(0)
    n = 1 << 20
    mask = dropout_mask((n,), p, torch.empty(0))
    assert mask.dtype == torch.float32 and mask.shape == (n,)
    values = torch.unique(mask)
    assert len(values) == 2 and values[0] == 0 and values[1] == torch.tensor(1 / q, dtype=torch.float32)
    kept = (mask > 0).double()
    sigma = math.sqrt(q * (1 - q) / n)
    assert abs(kept.mean().item() - q) < 6 * sigma
    # every 8- or 16-bit chunk of the random words is uniform (plain random_() leaves bit 63 at 0,
    # which would keep every element at positions 7 mod 8, or 3 mod 4, for p <= 0.5)
    for r in range(8):
        rate = kept[r::8].mean().item()
        assert abs(rate - q) < 6 * math.sqrt(q * (1 - q) / (n // 8)), (r, rate)
    assert abs(mask.double().mean().item() - 1.0) < 6 * sigma / q  # unbiased: E[mask] = 1


def test_mask_shape_dtype_and_bad_p():
    m = dropout_mask((3, 5, 7), 0.3, torch.empty(0, dtype=torch.bfloat16))  # 105: not a multiple of 4
    assert m.shape == (3, 5, 7) and m.dtype == torch.bfloat16
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match=f"dropout probability must be in \\[0, 1\\), got {bad}"):
            dropout_mask((4,), bad, torch.empty(0))


def test_forward_backward_and_reproducibility():
    drop = ResidualDropout(0.25).train()
    x = torch.randn(2, 50, 16, requires_grad=True)
    b = torch.randn(2, 50, 16, requires_grad=True)
    torch.manual_seed(7)
    out = drop(x, b)
    torch.manual_seed(7)
    mask = dropout_mask(b.shape, 0.25, b)  # the same random words
    torch.testing.assert_close(out, x + b * mask)  # up to the rounding of the fused multiply-add
    assert torch.equal(out, torch.addcmul(x, b, mask))
    g = torch.randn_like(out)
    gx, gb = torch.autograd.grad(out, (x, b), g)
    assert torch.equal(gx, g) and torch.equal(gb, g * mask)
    torch.manual_seed(7)
    assert torch.equal(drop(x, b), out)  # seeded: the same mask
    assert not torch.equal(drop(x, b), out)  # the next draw differs
    assert 0.6 < (mask > 0).float().mean() < 0.9


def test_eval_and_zero_p_are_a_plain_residual_add():
    x, b = torch.randn(4, 8), torch.randn(4, 8)
    assert torch.equal(ResidualDropout(0.5).eval()(x, b), x + b)
    assert torch.equal(ResidualDropout(0.0).train()(x, b), x + b)


def test_is_a_dropout_module_and_falls_back_for_broadcasting():
    drop = ResidualDropout(0.5)
    assert isinstance(drop, torch.nn.Dropout) and "p=0.5" in repr(drop)
    x = torch.randn(4, 8)
    b = torch.randn(8)  # broadcast: not the fused path, still x + dropout(b)
    out = drop.train()(x, b)
    kept = (out - x) != 0
    assert torch.all(kept == kept[0])  # one mask for the broadcast branch
    torch.testing.assert_close((out - x)[0][kept[0]], (b * 2)[kept[0]])


def test_statistics_match_torch_dropout():
    """Same expectation and variance as ``F.dropout`` (kept values scaled by 1/q)."""
    torch.manual_seed(0)
    b = torch.ones(1 << 18)
    ours = ResidualDropout(0.4).train()(torch.zeros_like(b), b)
    theirs = F.dropout(b, 0.4, training=True)
    for stat in (torch.mean, torch.var):
        assert abs(stat(ours).item() - stat(theirs).item()) < 0.02
