"""Every attention backend against the dense masked reference (CPU; GPU cases marked ``gpu``).

For every registered pattern (all modes of the two-part patterns, Child et al. 2019 §4.3) and every
backend available here: outputs and gradients w.r.t. q, k, v equal the dense reference in float32
and, with a looser tolerance, bfloat16; for a prime ``n``, a ragged last block and ``n = 3072``.
Causality per backend (the gradient w.r.t. a future position is exactly zero), rows with no key
(``fixed`` split, summary head) give zeros and finite gradients, and the options are validated.
"""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import pytest
import torch

import attention_patterns as ap
from attention_patterns.backends import backend_availability, create_backend, list_backends
from attention_patterns.backends.auto import AutoBackend
from attention_patterns.backends.blocksparse import BlockSparseBackend
from attention_patterns.backends.flex import FlexBackend
from attention_patterns.backends.plan import head_selector
from attention_patterns.backends.xformers import XFormersBackend

CUDA = torch.cuda.is_available()

# Small strides and blocks so that every piece (band, residues, chunks, summary chunks, gathered
# blocks, per-head layouts) is exercised at n of a few hundred.
SMALL: dict[str, list[dict]] = {
    "dense": [{}],
    "local": [{"window": 24}, {"window": 200}],
    "strided": [{"stride": 16, "mode": m} for m in ("split", "merged", "interleaved")],
    "fixed": [{"stride": 16, "c": 4, "mode": m} for m in ("split", "merged", "interleaved")]
    + [{"stride": 16, "c": 4, "mode": "split", "num_different_global_patterns": 2}],
    "axial": [{"width": 12, "mode": m} for m in ("split", "merged", "interleaved")],
    "bigbird": [
        {"block_size": 16},
        {"block_size": 16, "different_layout_per_head": True, "random_blocks": 2},
    ],
    "longformer": [{"block_size": 16, "global_block_indices": [0, 5]}],
    "variable": [{"block_size": 16, "local_window_blocks": [2, 3], "num_random_blocks": 1}],
    "block_local": [{"block_size": 16, "window_blocks": 2}],
}


def pattern_cases() -> list[tuple[str, dict]]:
    """``(id, config)`` for every registered pattern (unknown names: their default config)."""
    cases = []
    for name in ap.list_attentions():
        for cfg in SMALL.get(name, [{}]):
            tag = "-".join(f"{k}={v}" for k, v in cfg.items() if k in ("mode", "different_layout_per_head"))
            cases.append((f"{name}{'-' + tag if tag else ''}", {"name": name, **cfg}))
    return cases


CASES = pattern_cases()
HEADS = 4


def build(cfg: dict, heads: int = HEADS):
    return ap.build_attention({**cfg, "num_heads": heads})


def qkv(
    n: int, dtype=torch.float32, B: int = 1, H: int = HEADS, D: int = 16, Dv: int | None = None, seed: int = 0
):
    g = torch.Generator().manual_seed(seed)
    shapes = [(B, H, n, D), (B, H, n, D), (B, H, n, Dv or D)]
    return [torch.randn(s, generator=g).to(dtype).requires_grad_() for s in shapes]


def reference(q, k, v, comp, layer):
    """Dense masked reference in float64 on the same (possibly rounded) inputs."""
    q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
    out = create_backend("dense").attend(q64, k64, v64, comp, layer)
    return q64, k64, v64, out


def check_against_dense(backend, comp, n, dtype=torch.float32, atol=2e-5, rtol=1e-4, grad_atol=None, **kw):
    for layer in range(comp.num_layers_period):
        q, k, v = qkv(n, dtype, **kw)
        out = backend.attend(q, k, v, comp, layer)
        q64, k64, v64, ref = reference(q, k, v, comp, layer)
        assert out.dtype == dtype and out.shape == ref.shape
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out.double(), ref, atol=atol, rtol=rtol)
        g = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        grads = torch.autograd.grad(out, (q, k, v), g.to(dtype))
        grads_ref = torch.autograd.grad(ref, (q64, k64, v64), g)
        for name, a, b in zip("qkv", grads, grads_ref):
            assert torch.isfinite(a).all(), name
            torch.testing.assert_close(
                a.double(), b, atol=grad_atol or atol, rtol=rtol, msg=lambda m, nm=name: f"d{nm}: {m}"
            )


# --------------------------------------------------------------------------- blocksparse: every pattern
@pytest.mark.parametrize("case_id,cfg", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("n", [97, 200])  # a prime, and a ragged last block for 16/32/64-blocks
@pytest.mark.parametrize("save_probs", [True, False], ids=["probs", "recompute"])
def test_blocksparse_matches_dense(case_id, cfg, n, save_probs):
    """Both backward strategies: kept tile softmax (bands, subsequences) and recomputation (all)."""
    comp = build(cfg)
    check_against_dense(BlockSparseBackend(block_size=32, save_probs=save_probs), comp, n)


def test_save_probs_policy_picks_pieces_by_size(monkeypatch):
    """``auto`` keeps the softmax of small bands and subsequences only; True/False force it."""
    from attention_patterns.backends import tile_kernel as tk

    comp = build({"name": "strided", "stride": 16, "mode": "merged"})
    cpu = torch.device("cpu")
    plan = BlockSparseBackend().plan(comp, 200, 0, HEADS, cpu, torch.float32, unequal_dims=True)
    assert plan.all_probs and all(p.probs for p in plan.pieces)
    assert not any(p.alone for p in plan.pieces)  # band + residues merged: two pieces per head
    plan = BlockSparseBackend().plan(comp, 200, 0, HEADS, cpu, torch.float32)  # equal head dims
    # bands recompute; causal subsequences of <= 64 positions (200 / 16 -> 13) keep their softmax
    assert [(type(p).__name__, p.probs) for p in plan.pieces] == [("BandPiece", False), ("CausalPiece", True)]
    plan = BlockSparseBackend().plan(comp, 3072, 0, HEADS, cpu, torch.float32)  # residues of 192 positions
    assert not any(p.probs for p in plan.pieces)
    split = BlockSparseBackend(save_probs=True).plan(
        build({"name": "strided", "stride": 16, "mode": "split"}), 200, 0, HEADS, cpu, torch.float32
    )
    assert all(p.alone for p in split.pieces) and split.all_probs
    plan = BlockSparseBackend(save_probs=False).plan(comp, 200, 0, HEADS, torch.device("cpu"), torch.float32)
    assert not any(p.probs for p in plan.pieces)
    fixed = build({"name": "fixed", "stride": 16, "c": 4, "mode": "merged"})
    plan = BlockSparseBackend(save_probs=True).plan(fixed, 200, 0, HEADS, torch.device("cpu"), torch.float32)
    assert [p.probs for p in plan.pieces] == [True, False]  # chunks keep P; summary columns cannot
    assert not plan.all_probs
    monkeypatch.setattr(tk, "PROBS_MAX_ELEMENTS", 100)
    monkeypatch.setattr("attention_patterns.backends.blocksparse.PROBS_MAX_ELEMENTS", 100)
    plan = BlockSparseBackend().plan(comp, 200, 0, HEADS, cpu, torch.float32, unequal_dims=True)
    assert not any(p.probs for p in plan.pieces)  # too large for "auto": recomputed
    with pytest.raises(ValueError, match="save_probs must be True, False or 'auto', got 'yes'"):
        BlockSparseBackend(save_probs="yes")


@pytest.mark.parametrize("merged", [False, True])
def test_probs_kernel_matches_math_kernel_with_empty_rows(merged):
    """``probs_forward``/``probs_backward`` equal the recomputing matmul kernel, alone and as one of two
    merged pieces, with rows that have no key (zero output and gradient, never NaN)."""
    from attention_patterns.backends import tile_kernel as tk

    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(2, 3, 10, 8, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(2, 3, 10, 12, generator=g, dtype=torch.float64)
    allowed = torch.rand(10, 10, generator=g) < 0.5
    allowed[[0, 4]] = False  # two rows with no key in this tile
    mask = torch.zeros(10, 10, dtype=torch.float64).masked_fill(~allowed, float("-inf"))
    out, lse, p = tk.probs_forward(q, k, v, scale=0.3, mask=mask)
    ref_out, ref_lse = tk.tile_forward(q, k, v, scale=0.3, mask=mask, kernel="math")
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(lse, ref_lse)
    assert torch.all(out[:, :, [0, 4]] == 0) and torch.all(torch.isinf(lse[:, :, [0, 4]]))
    dout = torch.randn(out.shape, generator=g, dtype=torch.float64)
    if merged:  # a second, disjoint piece: the diagonal, which every row has
        eye = torch.zeros(10, 10, dtype=torch.float64).masked_fill(~torch.eye(10, dtype=torch.bool), float("-inf"))
        o2, l2 = tk.tile_forward(q, k, v, scale=0.3, mask=eye, kernel="math")
        from attention_patterns.backends.pieces import merge_results

        m_out, m_lse = merge_results([(out, lse), (o2, l2)], torch.float64)
        got = tk.probs_backward(p, dout, q, k, v, scale=0.3, merged=(m_out, m_lse, lse))
        want = tk.tile_backward(dout, q, k, v, m_out, m_lse, scale=0.3, mask=mask, kernel="math")
    else:
        got = tk.probs_backward(p, dout, q, k, v, scale=0.3)
        want = tk.tile_backward(dout, q, k, v, out, lse.masked_fill(torch.isinf(lse), 0), scale=0.3, mask=mask,
                                kernel="math")  # fmt: skip
    for a, b in zip(got, want):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b)
    assert torch.all(got[0][:, :, [0, 4]] == 0)


@pytest.mark.parametrize("case_id,cfg", CASES, ids=[c[0] for c in CASES])
def test_blocksparse_generic_gather_matches_dense(case_id, cfg):
    """``structured=False`` forces the block gather for every pattern (also the per-head layouts)."""
    comp = build(cfg)
    check_against_dense(BlockSparseBackend(block_size=16, structured=False), comp, 131)


@pytest.mark.parametrize("serial", [True, False])
def test_blocksparse_thread_policies_agree(serial):
    """The single-threaded glue (shared CPU) and the multi-threaded one give the same result."""
    comp = build({"name": "fixed", "stride": 16, "c": 4, "mode": "merged"})
    check_against_dense(BlockSparseBackend(serial_glue=serial), comp, 150)


@pytest.mark.parametrize("structured", [True, False])
@pytest.mark.parametrize(
    "case_id,cfg",
    [c for c in CASES if c[0] in ("strided-mode=merged", "fixed-mode=split", "bigbird")],
    ids=lambda c: c if isinstance(c, str) else "",
)
def test_blocksparse_math_kernel_matches_dense(case_id, cfg, structured):
    """The matmul kernel (used off CPU) agrees too."""
    comp = build(cfg)
    check_against_dense(BlockSparseBackend(structured=structured, kernel="math"), comp, 150)


@pytest.mark.parametrize("case_id,cfg", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("save_probs", [True, False], ids=["probs", "recompute"])
def test_blocksparse_bfloat16(case_id, cfg, save_probs):
    comp = build(cfg)
    check_against_dense(
        BlockSparseBackend(save_probs=save_probs), comp, 113, dtype=torch.bfloat16, atol=3e-2, rtol=3e-2,
        grad_atol=6e-2,
    )  # fmt: skip


@pytest.mark.parametrize(
    "cfg",
    [
        {"name": "strided", "stride": 64},
        {"name": "fixed", "stride": 64, "c": 16},
        {"name": "strided", "stride": 64, "mode": "merged"},
    ],
)
@pytest.mark.parametrize("save_probs", [True, False], ids=["probs", "recompute"])
def test_blocksparse_n3072(cfg, save_probs):
    """The CIFAR-10 length (paper §7.2) with the benchmark's strides."""
    be = BlockSparseBackend(save_probs=save_probs)
    check_against_dense(be, build(cfg, heads=2), 3072, H=2, D=8, atol=5e-5)


def test_blocksparse_half_qk_model_shape():
    """The CIFAR-10 model's attention: n = 3072, stride 96, 2 heads, q/k head dim half the value's (§6).
    The kept-softmax path needs no padding of q and k (and the recomputing path pads them)."""
    comp = build({"name": "strided", "stride": 96, "mode": "split"}, heads=2)
    be = BlockSparseBackend()
    check_against_dense(be, comp, 3072, H=2, D=8, Dv=16, atol=5e-5)
    assert be.plan(comp, 3072, 0, 2, torch.device("cpu"), torch.float32, unequal_dims=True).all_probs
    check_against_dense(BlockSparseBackend(save_probs=False), comp, 3072, H=2, D=8, Dv=16, atol=5e-5)


def test_blocksparse_batch_and_head_dims():
    """Batch > 1, and different q/k and v head dims (half QK, paper §5.3 style)."""
    comp = build({"name": "fixed", "stride": 16, "c": 4, "mode": "merged"})
    check_against_dense(BlockSparseBackend(), comp, 100, B=2, D=8, Dv=16)
    comp = build({"name": "bigbird", "block_size": 16, "different_layout_per_head": True})
    check_against_dense(BlockSparseBackend(), comp, 100, B=2, D=8, Dv=16)


def test_blocksparse_inference_without_grad():
    comp = build({"name": "strided", "stride": 16})
    q, k, v = (x.detach() for x in qkv(120))
    with torch.no_grad():
        out = BlockSparseBackend().attend(q, k, v, comp)
    ref = create_backend("dense").attend(q, k, v, comp)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)


# --------------------------------------------------------------------------- structure and caching
def test_plan_uses_structured_pieces_and_is_cached():
    be = BlockSparseBackend()
    strided = build({"name": "strided", "stride": 64, "mode": "merged"})
    plan = be.plan(strided, 3072, 0, HEADS, torch.device("cpu"), torch.float32)
    assert plan.structured
    assert [type(p).__name__ for p in plan.groups[0].pieces] == ["BandPiece", "CausalPiece"]
    assert be.plan(strided, 3072, 2, HEADS, torch.device("cpu"), torch.float32) is plan  # same layer parity
    assert be.plan(strided, 3071, 0, HEADS, torch.device("cpu"), torch.float32) is not plan
    fixed_split = build({"name": "fixed", "stride": 64, "c": 16})
    plan = be.plan(fixed_split, 3072, 0, HEADS, torch.device("cpu"), torch.float32)
    assert [g.heads for g in plan.groups] == [[0, 2], [1, 3]]
    assert [type(p).__name__ for g in plan.groups for p in g.pieces] == ["CausalPiece", "SummaryPiece"]
    bigbird = build({"name": "bigbird", "block_size": 32})
    assert not be.plan(bigbird, 256, 0, HEADS, torch.device("cpu"), torch.float32).structured


def test_head_selector():
    assert head_selector([0, 1, 2, 3], 4) is None
    assert head_selector([1, 3], 4) == slice(1, 4, 2)
    assert head_selector([2], 4) == slice(2, 3, 1)
    assert head_selector([0, 1, 3], 4) == [0, 1, 3]


class _OddHeads(ap.AttentionPattern):
    """A custom component: heads 0, 1, 3 use a window, head 2 every 8th position (any parts/table work)."""

    name = "odd_heads"

    def parts(self):
        from attention_patterns.parts import EveryLth, Window

        return [Window(8), EveryLth(8)]

    def members(self, layer):
        table = torch.zeros((4, 2), dtype=torch.bool)
        table[[0, 1, 3], 0] = True
        table[2, 1] = True
        return table


def test_heads_not_in_progression():
    """Head groups that are not an arithmetic progression take the index_select path."""
    comp = _OddHeads(SimpleNamespace(num_heads=4))
    groups = BlockSparseBackend().plan(comp, 100, 0, 4, torch.device("cpu"), torch.float32).groups
    assert sorted(g.heads for g in groups) == [[0, 1, 3], [2]]
    assert any(isinstance(g.sel, torch.Tensor) for g in groups)
    check_against_dense(BlockSparseBackend(), comp, 100, H=4)


# --------------------------------------------------------------------------- causality and empty rows
def causal_backends():
    names = ["dense", "blocksparse", "auto"]
    return names + (["flex"] if CUDA else [])


@pytest.mark.parametrize("backend", causal_backends())
@pytest.mark.parametrize(
    "cfg",
    [
        {"name": "strided", "stride": 16, "mode": "merged"},
        {"name": "fixed", "stride": 16, "c": 4, "mode": "merged"},
        {"name": "bigbird", "block_size": 16},
        {"name": "dense"},
    ],
    ids=["strided", "fixed", "bigbird", "dense"],
)
def test_causality(backend, cfg):
    """Output at t does not depend on any position > t: those gradients are exactly zero."""
    comp = build(cfg)
    be = create_backend(backend)
    _check_causal(be, comp, backend)


@pytest.mark.parametrize("cfg", [{"name": "strided", "stride": 16, "mode": "merged"}, {"name": "local", "window": 24}])
def test_causality_blocksparse_kept_softmax(cfg):
    """The same for the blocksparse backward that keeps the softmax instead of recomputing it."""
    _check_causal(BlockSparseBackend(save_probs=True), build(cfg), "blocksparse")


def _check_causal(be, comp, backend):
    device = "cuda" if backend == "flex" else "cpu"
    n = 150
    for t in (0, 37, n - 40):
        q, k, v = (x.to(device).detach().requires_grad_() for x in qkv(n))
        out = be.attend(q, k, v, comp)
        out[:, :, t].sum().backward()
        assert torch.all(q.grad[:, :, t + 1 :] == 0) and torch.all(q.grad[:, :, :t] == 0)
        assert torch.all(k.grad[:, :, t + 1 :] == 0)
        assert torch.all(v.grad[:, :, t + 1 :] == 0)
        assert v.grad[:, :, : t + 1].abs().sum() > 0  # and it does depend on the past


@pytest.mark.parametrize("structured", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_empty_rows_give_zeros_and_finite_grads(structured, dtype):
    """``fixed`` split: head 1 uses only summary columns; queries before the first one have no key."""
    ell, c = 16, 4
    comp = build({"name": "fixed", "stride": ell, "c": c, "mode": "split"})
    q, k, v = qkv(70, dtype)
    out = BlockSparseBackend(structured=structured).attend(q, k, v, comp)
    assert torch.isfinite(out).all()
    assert torch.all(out[:, 1::2, : ell - c] == 0)  # no key: zero output
    assert out[:, 1::2, ell - c :].abs().sum() > 0
    out.sum().backward()
    for x in (q, k, v):
        assert torch.isfinite(x.grad).all()
    assert torch.all(q.grad[:, 1::2, : ell - c] == 0)


# --------------------------------------------------------------------------- options and errors
def test_blocksparse_options_are_validated():
    with pytest.raises(ValueError, match="block_size must be an integer in \\[16, 128\\], got 8"):
        BlockSparseBackend(block_size=8)
    with pytest.raises(ValueError, match="kernel must be one of"):
        BlockSparseBackend(kernel="cuda")
    with pytest.raises(ValueError, match="takes no options"):
        BlockSparseBackend(blocksize=64)
    comp = build({"name": "bigbird", "block_size": 16, "different_layout_per_head": True}, heads=4)
    q, k, v = qkv(64, H=2)
    with pytest.raises(ValueError, match="but q has 2 heads; set the component's num_heads to 2"):
        BlockSparseBackend().attend(q, k, v, comp)
    axial = build({"name": "axial", "width": 8, "height": 8})
    q, k, v = qkv(60)
    with pytest.raises(ValueError, match="needs n = 64, got n=60"):
        BlockSparseBackend().attend(q, k, v, axial)


def test_serial_glue_restores_threads_and_resolves_modes():
    from attention_patterns.backends import tile_kernel as tk

    n = torch.get_num_threads()
    with tk.serial_glue(True):
        assert torch.get_num_threads() == 1
        with tk._tile_threads(tk.PARALLEL_MIN_FLOPS):  # a large tile gets the caller's threads back
            assert torch.get_num_threads() == n
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == n
    cpu = torch.device("cpu")
    assert tk.use_serial_glue(False, cpu) is False and tk.use_serial_glue(True, cpu) is True
    assert tk.use_serial_glue(True, torch.device("meta")) is False
    assert isinstance(tk.use_serial_glue("auto", cpu), bool)
    with pytest.raises(ValueError, match="serial_glue must be True, False or 'auto'"):
        BlockSparseBackend(serial_glue="yes")


def test_registry_knows_the_backends():
    assert {"dense", "blocksparse", "flex", "xformers", "auto"} <= set(list_backends())
    assert backend_availability("blocksparse", "cpu") == (True, "")


# --------------------------------------------------------------------------- flex
@pytest.mark.parametrize("case_id,cfg", CASES, ids=[c[0] for c in CASES])
def test_flex_eager_forward_on_cpu(case_id, cfg):
    """FlexAttention's unfused path (compile=False) with our BlockMask equals the reference (forward)."""
    comp = build(cfg)
    be = FlexBackend(block_size=16, compile=False)
    for layer in range(comp.num_layers_period):
        q, k, v = (x.detach() for x in qkv(100))
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = be.attend(q, k, v, comp, layer)
        ref = create_backend("dense").attend(q, k, v, comp, layer)
        torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)


def test_flex_refuses_to_train_on_cpu():
    """Never call FlexAttention with grad on CPU (it would raise, and slow the process down)."""
    be = create_backend("flex")
    assert not FlexBackend.supports_backward_on("cpu")
    assert be.supports_backward == CUDA
    q, k, v = qkv(64)
    with pytest.raises(
        RuntimeError, match="use attention_backend='blocksparse'|Use attention_backend='blocksparse'"
    ):
        be.attend(q, k, v, build({"name": "strided", "stride": 16}))


def test_flex_block_mask_cached_and_validated():
    be = FlexBackend(block_size=16, compile=False)
    comp = build({"name": "strided", "stride": 16, "mode": "interleaved"})
    m0 = be.block_mask(comp, 128, 0, HEADS, torch.device("cpu"))
    assert be.block_mask(comp, 128, 2, HEADS, torch.device("cpu")) is m0
    assert be.block_mask(comp, 128, 1, HEADS, torch.device("cpu")) is not m0
    with pytest.raises(ValueError, match="multiple of 16"):
        FlexBackend(block_size=20)


@pytest.mark.slow
def test_flex_compiled_forward_on_cpu():
    """The compiled CPU kernel (inference): one pattern, ~30 s of compilation."""
    comp = build({"name": "fixed", "stride": 32, "c": 8, "mode": "split"})
    q, k, v = (x.detach() for x in qkv(256))
    with torch.no_grad():
        out = FlexBackend(block_size=32).attend(q, k, v, comp)
    torch.testing.assert_close(out, create_backend("dense").attend(q, k, v, comp), atol=2e-5, rtol=1e-4)


# --------------------------------------------------------------------------- xformers
def test_xformers_unavailable_here_says_why():
    ok, reason = backend_availability("xformers", "cpu")
    assert not ok and ("xformers" in reason or "CUDA" in reason)
    if not CUDA:
        assert not backend_availability("xformers", "cuda")[0]


class FakeXFormersOps:
    """Stand-in for xformers.ops following its documented semantics ((B, M, H, K) layout; a bias
    adds ``materialize((Mq, Mk))`` to the scaled scores), to test the backend's decompositions."""

    class LowerTriangularMask:
        def materialize(self, shape):
            return torch.full(shape, float("-inf")).triu(1)

    class LowerTriangularFromBottomRightLocalAttentionMask:
        def __init__(self, window_size):
            assert window_size > 0
            self.w = window_size

        def materialize(self, shape):
            mq, mk = shape
            ones = torch.ones(shape)
            shift = mk - mq
            keep = ones.tril(shift).triu(shift - self.w + 1)
            return torch.log(keep)

    @staticmethod
    def memory_efficient_attention(q, k, v, attn_bias=None, p=0.0, scale=None):
        assert q.dim() == 4 and p == 0.0
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        s = torch.einsum("bmhk,bnhk->bhmn", q, k) * scale
        if attn_bias is not None:
            s = s + attn_bias.materialize((q.shape[1], k.shape[1])).to(s.dtype)
        return torch.einsum("bhmn,bnhk->bmhk", s.softmax(-1), v)


@pytest.mark.parametrize(
    "cfg",
    [
        {"name": "dense"},
        {"name": "local", "window": 24},
        {"name": "strided", "stride": 16, "mode": "split"},
        {"name": "strided", "stride": 16, "mode": "interleaved"},
        {"name": "axial", "width": 12, "mode": "split"},
    ],
    ids=lambda c: f"{c['name']}-{c.get('mode', '')}",
)
def test_xformers_decomposition_with_stand_in_ops(cfg):
    ops = SimpleNamespace(
        memory_efficient_attention=FakeXFormersOps.memory_efficient_attention,
        LowerTriangularMask=FakeXFormersOps.LowerTriangularMask,
        LowerTriangularFromBottomRightLocalAttentionMask=FakeXFormersOps.LowerTriangularFromBottomRightLocalAttentionMask,
    )
    comp = build(cfg)
    assert XFormersBackend.supports(comp)
    check_against_dense(XFormersBackend(ops=ops), comp, 101)


def test_xformers_rejects_patterns_without_exact_bias():
    merged = build({"name": "strided", "stride": 16, "mode": "merged"})
    fixed = build({"name": "fixed", "stride": 16, "c": 4})
    assert not XFormersBackend.supports(merged) and not XFormersBackend.supports(fixed)
    q, k, v = qkv(64)
    with pytest.raises(ValueError, match="no exact attention bias for pattern 'strided'"):
        XFormersBackend(ops=SimpleNamespace()).attend(q, k, v, merged)


# --------------------------------------------------------------------------- auto
def test_auto_choice_is_logged_once_and_correct(caplog):
    """Each decision is logged once per (pattern, device, choice) at DEBUG (the model logs it at INFO),
    also when the length changes (the uncached sampler calls every prefix length)."""
    be = AutoBackend()
    comp = build({"name": "strided", "stride": 16})
    assert be.choose(comp, 100, "cpu") == "blocksparse"
    with caplog.at_level("DEBUG", logger="attention_patterns.backends.auto"):
        check_against_dense(be, comp, 203, H=HEADS, D=8)
        check_against_dense(be, comp, 203, H=HEADS, D=8)
        check_against_dense(be, comp, 64, H=HEADS, D=8)
    lines = [r.getMessage() for r in caplog.records if "auto attention backend" in r.getMessage()]
    assert len(lines) == 1 and "blocksparse" in lines[0]


def test_auto_forwards_options_to_the_backend_it_picks(caplog):
    """Options reach the chosen backend (values checked at once); unknown ones fail naming the valid ones."""
    be = AutoBackend(save_probs=True, block_size=32)
    comp = build({"name": "bigbird", "block_size": 16})
    check_against_dense(be, comp, 100, D=8)
    inner = be._backends["blocksparse"]
    assert inner.save_probs is True and inner.block_size == 32
    assert "save_probs=True" in repr(be)
    with pytest.raises(ValueError, match="save_probs must be True, False or 'auto', got 'yes'"):
        AutoBackend(save_probs="yes")
    with pytest.raises(ValueError, match=r"none of which takes \['blocksize'\]; valid options are \[.*'block_size'"):
        AutoBackend(blocksize=64)
    with caplog.at_level("WARNING", logger="attention_patterns.backends.auto"):
        AutoBackend(save_probs=True, compile=False)._backend("flex")  # flex takes compile, not save_probs
    assert "flex does not take options ['save_probs']" in caplog.records[-1].getMessage()


# --------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("backend", ["blocksparse", "flex"])
@pytest.mark.parametrize("case_id,cfg", CASES, ids=[c[0] for c in CASES])
def test_gpu_backends_match_dense(backend, case_id, cfg):
    comp = build(cfg)
    be = create_backend(backend)
    for layer in range(comp.num_layers_period):
        q, k, v = (x.detach().cuda().requires_grad_() for x in qkv(300))
        out = be.attend(q, k, v, comp, layer)
        ref = create_backend("dense").attend(q, k, v, comp, layer)
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-3)
        g = torch.randn_like(out)
        for a, b in zip(torch.autograd.grad(out, (q, k, v), g), torch.autograd.grad(ref, (q, k, v), g)):
            torch.testing.assert_close(a, b, atol=1e-4 * math.sqrt(300), rtol=1e-3)


@pytest.mark.parametrize("save_probs", [True, False], ids=["probs", "recompute"])
def test_blocksparse_backward_twice_with_retain_graph(save_probs):
    """``retain_graph=True``: a second backward pass reuses the saved states and gives the same gradients."""
    comp = build({"name": "fixed", "stride": 16, "c": 4, "mode": "split"})
    q, k, v = qkv(100, D=8, Dv=16)
    out = BlockSparseBackend(save_probs=save_probs).attend(q, k, v, comp)
    g = torch.randn_like(out)
    first = torch.autograd.grad(out, (q, k, v), g, retain_graph=True)
    second = torch.autograd.grad(out, (q, k, v), g)
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    _, _, _, ref = reference(q, k, v, comp, 0)
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "cfg,n",
    [
        ({"name": "strided", "stride": 16, "mode": "split"}, 256),  # band ranges + residue ranges
        ({"name": "strided", "stride": 16, "mode": "merged"}, 203),  # ragged: band ranges, strict residues whole
        ({"name": "fixed", "stride": 16, "c": 4, "mode": "split"}, 256),  # chunk ranges + summary columns
        ({"name": "local", "window": 40}, 150),
    ],
    ids=["strided-split", "strided-merged-ragged", "fixed-split", "local"],
)
def test_long_sequence_ranges_match_dense(monkeypatch, cfg, n):
    """Very long sequences cut bands and subsequences into ranges of calls (bounded temporaries);
    forced here with a tiny budget: outputs and gradients still equal the dense reference."""
    from attention_patterns.backends import pieces

    monkeypatch.setattr(pieces, "BAND_CHUNK_ELEMENTS", 2048)
    comp = build(cfg)
    be = BlockSparseBackend(save_probs=False)
    band = next((p for p in be.plan(comp, n, 0, HEADS, torch.device("cpu"), torch.float32).pieces
                 if isinstance(p, pieces.BandPiece)), None)  # fmt: skip
    if band is not None:
        assert len(band._chunks(2, 32)) > 1
    check_against_dense(be, comp, n)
    check_against_dense(be, comp, n, Dv=24)
