"""Every registered attention pattern against an independent brute-force reference.

The references below are written from the paper's definitions (docs/patterns.md) and the module docstrings of
``attention_patterns`` (Child et al. 2019, §4.2-4.3, and the block-sparse peers), with numpy on
index grids ``(i, j)``; they never call the package's parts, tables or hashes. Each test compares the
package's three representations (``mask``, ``layout``, ``mask_mod``) and its densities with them.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pytest
import torch

import attention_patterns as ap

# --------------------------------------------------------------------------- reference definitions


def _two_part_uses(mode: str, h: int, layer: int) -> tuple[bool, bool]:
    """Which of (A1, A2) head ``h`` of layer ``layer`` uses (paper §4.3)."""
    if mode == "merged":
        return True, True
    if mode == "split":
        return h % 2 == 0, h % 2 == 1
    assert mode == "interleaved"
    return layer % 2 == 0, layer % 2 == 1


def _py_block_hash(seed: int, h: int, row: int, k: int) -> int:
    """The seeded draw of ``attention_patterns.parts.block_hash`` in plain Python integers."""
    m = 0x7FFFFFFF
    x = (seed * 0x2545F491 + k * 0x1B873593 + 0x3C6EF372) & m
    x = (x + h * 0x6C8E9CF5 + row * 0x9E3779B1) & m
    x = ((x ^ (x >> 15)) * 0x2C1B3C6D) & m
    x = ((x ^ (x >> 12)) * 0x297A2D39) & m
    return x ^ (x >> 15)


def _random_cols(seed: int, h: int, row: int, count: int, lo: int, hi: int) -> set[int]:
    """Column blocks drawn for block row ``row``: ``count`` seeded draws in ``[lo, hi]`` (none if empty)."""
    span = hi - lo + 1
    if span <= 0:
        return set()
    cols = set()
    for k in range(count):  # one draw in each of `count` equal strata of the candidates
        s_lo, s_hi = lo + k * span // count, lo + (k + 1) * span // count - 1
        if s_hi >= s_lo:
            cols.add(s_lo + _py_block_hash(seed, h, row, k) % (s_hi - s_lo + 1))
    return cols


def _block_in(rows: np.ndarray, cols: np.ndarray, table: dict[int, set[int]]) -> np.ndarray:
    """``cols[...]`` is in ``table[rows[...]]`` (broadcasting)."""
    rows, cols = np.broadcast_arrays(rows, cols)
    out = np.zeros(rows.shape, dtype=bool)
    for r in np.unique(rows):
        sel = rows == r
        out[sel] = np.isin(cols[sel], sorted(table[int(r)]))
    return out


def _global_set(starts: list[int], ends: list[int] | None) -> list[int]:
    if ends is None:
        return list(starts)
    return sorted({b for s, e in zip(starts, ends) for b in range(s, e)})


def _window_ids(num_blocks: int, sizes: list[int]) -> np.ndarray:
    """Window index of each block: consecutive windows of ``sizes``, the last size repeating."""
    ids: list[int] = []
    w = 0
    while len(ids) < num_blocks:
        size = sizes[w] if w < len(sizes) else sizes[-1]
        ids.extend([w] * size)
        w += 1
    return np.array(ids[:num_blocks], dtype=np.int64)


def reference(cfg: dict, h: int, layer: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """``True`` where query ``i`` may attend key ``j`` in head ``h`` of layer ``layer`` (broadcasting)."""
    cfg = {**dataclasses.asdict(ap.get_config(cfg["name"])()), **cfg}  # the documented defaults
    name = cfg["name"]
    causal = j <= i
    if name == "dense":
        allowed = np.ones(np.broadcast_shapes(i.shape, j.shape), dtype=bool)
    elif name == "local":
        allowed = (i - j) < cfg["window"]
    elif name in ("strided", "fixed", "axial"):
        use1, use2 = _two_part_uses(cfg["mode"], h, layer)
        allowed = np.zeros(np.broadcast_shapes(i.shape, j.shape), dtype=bool)
        if name == "strided":
            ell = cfg["stride"]
            a1 = (i - j) < ell  # i - l < j <= i
            a2 = (i - j) % ell == 0
        elif name == "axial":
            w = cfg["width"]
            a1 = (i // w) == (j // w)  # same row
            a2 = (i - j) % w == 0  # same column
        else:
            ell, c = cfg["stride"], cfg["c"]
            groups = cfg["num_different_global_patterns"]
            g = ((h // 2) if cfg["mode"] == "split" else h) % groups
            a1 = (i // ell) == (j // ell)
            a2 = ((j % ell) >= ell - (g + 1) * c) & ((j % ell) < ell - g * c)
        if use1:
            allowed = allowed | a1
        if use2:
            allowed = allowed | a2
    else:  # block-sparse patterns on a grid of block_size blocks
        bs = cfg["block_size"]
        p, q = i // bs, j // bs
        rows = range(int(np.max(p)) + 1)
        if name == "block_local":
            allowed = (p - q) < cfg["window_blocks"]
        elif name == "longformer":
            glob = _global_set(cfg["global_block_indices"], cfg["global_block_end_indices"])
            allowed = ((p - q) < cfg["window_blocks"]) | np.isin(q, glob) | np.isin(p, glob)
        elif name == "bigbird":
            g, wb, r = cfg["global_blocks"], cfg["window_blocks"], cfg["random_blocks"]
            allowed = ((p - q) < wb) | (q < g) | (p < g)
            head = h if cfg["different_layout_per_head"] else 0
            table = {P: _random_cols(cfg["seed"], head, P, r, g, P - wb) for P in rows}
            allowed = allowed | _block_in(p, q, table)
        elif name == "variable":
            ids = _window_ids(int(np.max(p)) + 1, cfg["local_window_blocks"])
            glob = _global_set(cfg["global_block_indices"], cfg["global_block_end_indices"])
            allowed = (ids[p] == ids[q]) | np.isin(q, glob)
            if cfg["horizontal_global_attention"]:
                allowed = allowed | np.isin(p, glob)
            r = cfg["num_random_blocks"]
            table = {P: _random_cols(cfg["seed"], 0, P, r, 0, P - 1) for P in rows}
            allowed = allowed | _block_in(p, q, table)
        else:  # pragma: no cover - a new pattern needs a reference here
            raise KeyError(f"no brute-force reference for attention {name!r}")
    return allowed & causal


def reference_mask(cfg: dict, n: int, heads: int, layer: int = 0) -> np.ndarray:
    """Bool ``(heads, n, n)`` from :func:`reference` on the full index grid."""
    i = np.arange(n, dtype=np.int64)[:, None]
    j = np.arange(n, dtype=np.int64)[None, :]
    return np.stack([np.broadcast_to(reference(cfg, h, layer, i, j), (n, n)) for h in range(heads)])


def reference_layout(mask: np.ndarray, b: int) -> np.ndarray:
    """Block-reduce ``(H, n, n)`` to ``(H, ceil(n/b), ceil(n/b))``: a block is active iff any element is."""
    heads, n, _ = mask.shape
    nb = -(-n // b)
    padded = np.zeros((heads, nb * b, nb * b), dtype=bool)
    padded[:, :n, :n] = mask
    return padded.reshape(heads, nb, b, nb, b).any(axis=(2, 4))


def full_heads(t: torch.Tensor, heads: int) -> np.ndarray:
    """A ``(H', ...)`` representation with ``H'`` in ``{1, heads}`` expanded to ``heads``."""
    assert t.dtype == torch.bool
    assert t.shape[0] in (1, heads), f"head axis {t.shape[0]} is neither 1 nor num_heads={heads}"
    return np.broadcast_to(t.numpy(), (heads, *t.shape[1:]))


# --------------------------------------------------------------------------- the cases

# (config, sequence lengths, block sizes for layouts). Small primes (37, 61) and ragged lengths
# (not multiples of stride or block) everywhere; 3072 = 32 * 32 * 3 (CIFAR-10) for each pattern.
CASES: list[tuple[dict, tuple[int, ...], tuple[int, ...]]] = [
    ({"name": "dense"}, (1, 37, 3072), (1, 7, 128)),
    ({"name": "dense", "num_heads": 3}, (61,), (4, 61)),
    ({"name": "local", "window": 1}, (37,), (1, 5)),
    ({"name": "local", "window": 5, "num_heads": 2}, (37, 61), (3, 8)),
    ({"name": "local", "window": 200}, (61,), (16,)),
    ({"name": "local", "window": 55}, (3072,), (64, 100)),
    ({"name": "strided", "stride": 1, "num_heads": 2}, (37,), (4,)),
    ({"name": "strided", "stride": 4, "num_heads": 2}, (37, 61), (1, 3, 8)),
    ({"name": "strided", "stride": 7, "num_heads": 3}, (37, 100), (5, 7)),
    ({"name": "strided", "stride": 16, "num_heads": 4}, (61, 250), (16, 24)),
    ({"name": "strided", "stride": 5}, (61,), (5,)),  # num_heads unset -> 2 in split mode
    ({"name": "strided", "stride": 6, "mode": "merged"}, (37, 61), (4, 6)),
    ({"name": "strided", "stride": 6, "mode": "merged", "num_heads": 3}, (61,), (8,)),
    ({"name": "strided", "stride": 9, "mode": "interleaved", "num_heads": 2}, (37, 61), (3, 9)),
    ({"name": "strided", "stride": 55, "num_heads": 2}, (3072,), (64, 100, 128)),
    ({"name": "strided", "stride": 96, "mode": "merged"}, (3072,), (96, 128)),
    ({"name": "strided", "stride": 64, "mode": "interleaved"}, (3072,), (128,)),
    ({"name": "fixed", "stride": 8, "c": 2, "num_heads": 2}, (37, 61), (1, 3, 8)),
    ({"name": "fixed", "stride": 7, "c": 3, "num_heads": 3}, (37, 61), (5, 7)),
    ({"name": "fixed", "stride": 5, "c": 5, "num_heads": 2}, (37,), (4,)),  # c == stride
    (
        {"name": "fixed", "stride": 16, "c": 4, "num_different_global_patterns": 2, "num_heads": 4},
        (61, 100),
        (8, 12),
    ),
    (
        {"name": "fixed", "stride": 12, "c": 3, "num_different_global_patterns": 4},
        (61,),
        (6,),
    ),  # heads unset -> 8
    (
        {
            "name": "fixed",
            "stride": 10,
            "c": 2,
            "num_different_global_patterns": 2,
            "mode": "merged",
            "num_heads": 3,
        },
        (37, 61),
        (4, 10),
    ),
    ({"name": "fixed", "stride": 9, "c": 2, "mode": "merged"}, (61,), (3,)),
    (
        {
            "name": "fixed",
            "stride": 8,
            "c": 2,
            "num_different_global_patterns": 2,
            "mode": "interleaved",
            "num_heads": 2,
        },
        (37, 61),
        (4, 5),
    ),
    ({"name": "fixed", "stride": 128, "c": 16, "num_heads": 2}, (3072,), (64, 100, 128)),
    (
        {"name": "fixed", "stride": 128, "c": 32, "num_different_global_patterns": 2, "num_heads": 4},
        (3072,),
        (128,),
    ),
    ({"name": "axial", "width": 8, "num_heads": 2}, (37, 64), (4, 8)),
    ({"name": "axial", "width": 6, "height": 10, "num_heads": 3}, (60,), (7,)),
    ({"name": "axial", "width": 7, "mode": "merged"}, (61,), (5,)),
    ({"name": "axial", "width": 5, "mode": "interleaved"}, (37,), (3,)),
    ({"name": "axial", "width": 96, "height": 32, "num_heads": 2}, (3072,), (96, 128)),
    (
        {"name": "bigbird", "block_size": 4, "window_blocks": 3, "global_blocks": 1, "random_blocks": 1},
        (37, 61),
        (4, 6),
    ),
    (
        {
            "name": "bigbird",
            "block_size": 3,
            "window_blocks": 2,
            "global_blocks": 2,
            "random_blocks": 2,
            "seed": 7,
        },
        (61, 100),
        (3, 5),
    ),
    (
        {
            "name": "bigbird",
            "block_size": 2,
            "window_blocks": 1,
            "global_blocks": 0,
            "random_blocks": 3,
            "seed": 3,
            "different_layout_per_head": True,
            "num_heads": 3,
        },
        (61,),
        (2, 3),
    ),
    (
        {"name": "bigbird", "block_size": 5, "window_blocks": 2, "global_blocks": 1, "random_blocks": 0},
        (37,),
        (5,),
    ),
    (
        {"name": "bigbird", "block_size": 64, "window_blocks": 3, "global_blocks": 1, "random_blocks": 2},
        (3072,),
        (64, 100),
    ),
    ({"name": "longformer", "block_size": 4, "window_blocks": 2}, (37, 61), (4, 3)),
    (
        {"name": "longformer", "block_size": 3, "window_blocks": 1, "global_block_indices": [0, 5, 11]},
        (37, 61),
        (3, 7),
    ),
    (
        {
            "name": "longformer",
            "block_size": 4,
            "window_blocks": 3,
            "global_block_indices": [1, 6],
            "global_block_end_indices": [3, 8],
            "num_heads": 2,
        },
        (61,),
        (4, 6),
    ),
    (
        {"name": "longformer", "block_size": 64, "window_blocks": 3, "global_block_indices": [0, 20]},
        (3072,),
        (64, 100),
    ),
    ({"name": "variable", "block_size": 4, "local_window_blocks": [2, 3, 1]}, (37, 61), (4, 3)),
    (
        {
            "name": "variable",
            "block_size": 3,
            "local_window_blocks": [4],
            "global_block_indices": [2],
            "horizontal_global_attention": True,
            "num_random_blocks": 2,
            "seed": 5,
        },
        (37, 61),
        (3, 5),
    ),
    (
        {
            "name": "variable",
            "block_size": 4,
            "local_window_blocks": [1, 2],
            "global_block_indices": [0, 5],
            "global_block_end_indices": [2, 7],
        },
        (61,),
        (4, 7),
    ),
    (
        {"name": "variable", "block_size": 64, "local_window_blocks": [4, 8], "num_random_blocks": 1},
        (3072,),
        (64, 100),
    ),
    ({"name": "block_local", "block_size": 4, "window_blocks": 1}, (37, 61), (4, 3)),
    ({"name": "block_local", "block_size": 5, "window_blocks": 3, "num_heads": 2}, (37, 61), (5, 8)),
    ({"name": "block_local", "block_size": 64, "window_blocks": 2}, (3072,), (64, 100)),
]


def _case_id(cfg: dict, n: int) -> str:
    extra = ",".join(f"{k}={v}" for k, v in cfg.items() if k != "name")
    return f"{cfg['name']}({extra})-n{n}"


PARAMS = [pytest.param(cfg, n, blocks, id=_case_id(cfg, n)) for cfg, ns, blocks in CASES for n in ns]


def test_every_registered_pattern_has_cases():
    covered = {cfg["name"] for cfg, _, _ in CASES}
    assert covered == set(ap.list_attentions())
    big = {cfg["name"] for cfg, ns, _ in CASES if 3072 in ns}
    assert big == set(ap.list_attentions())


# --------------------------------------------------------------------------- mask, mask_mod, layout, density


@pytest.mark.parametrize("cfg, n, blocks", PARAMS)
def test_pattern_matches_brute_force(cfg, n, blocks):
    comp = ap.build_attention(cfg)
    heads = comp.num_heads
    if cfg.get("num_heads") is not None:
        assert heads == cfg["num_heads"]
    period = comp.num_layers_period
    assert period == (2 if cfg.get("mode") == "interleaved" else 1)
    tri = np.tril(np.ones((n, n), dtype=bool))
    for layer in range(period):
        ref = reference_mask(cfg, n, heads, layer)  # (H, n, n)
        assert not (ref & ~tri).any()

        mask = comp.mask(n, layer)
        assert mask.shape[1:] == (n, n)
        got = full_heads(mask, heads)
        for h in range(heads):
            bad = np.argwhere(got[h] != ref[h])
            assert bad.size == 0, f"head {h} layer {layer}: mask differs at (i, j) = {bad[:5].tolist()}"
        # the head axis is collapsed only when every head has the same mask
        if any(not np.array_equal(ref[0], ref[h]) for h in range(heads)):
            assert mask.shape[0] == heads == comp.mask_heads(layer)
        assert mask.shape[0] == comp.mask_heads(layer)

        # causality of every representation
        assert not (mask & ~torch.from_numpy(tri)).any()

        # the mask_mod on index grids, one scalar head at a time (as FlexAttention calls it)
        mod = comp.mask_mod(layer)
        q_idx = torch.arange(n).view(n, 1)
        kv_idx = torch.arange(n).view(1, n)
        for h in range(heads):
            out = mod(torch.tensor(0), torch.tensor(h), q_idx, kv_idx)
            assert np.array_equal(np.broadcast_to(out.numpy(), (n, n)), ref[h]), (
                f"mask_mod head {h} layer {layer}"
            )

        # layouts, including block sizes that do not divide n and blocks larger than n
        for b in (*blocks, n + 3):
            lay = comp.layout(n, b, layer)
            nb = -(-n // b)
            assert lay.shape == (mask.shape[0], nb, nb)
            ref_lay = reference_layout(ref, b)
            assert np.array_equal(full_heads(lay, heads), ref_lay), f"layout b={b} layer {layer}"
            assert not torch.triu(lay, diagonal=1).any()
            causal_blocks = nb * (nb + 1) / 2
            assert comp.block_density(n, b, layer) == pytest.approx(
                ref_lay.sum((1, 2)).mean() / causal_blocks
            )

        # density: fraction of the causal triangle, averaged over heads
        assert comp.density(n, layer) == pytest.approx(ref.sum((1, 2)).mean() / (n * (n + 1) / 2))
        counts = comp.row_counts(n, layer)
        assert counts.shape == (mask.shape[0], n)
        assert np.array_equal(np.broadcast_to(counts.numpy(), (heads, n)), ref.sum(-1))

    # interleaved patterns repeat with period 2; all others ignore the layer
    for layer in (period, period + 1, 5):
        assert torch.equal(comp.mask(n, layer), comp.mask(n, layer % period))


# --------------------------------------------------------------------------- densities


@pytest.mark.parametrize("n", [1, 2, 37, 3072])
def test_dense_density_is_one(n):
    comp = ap.build_attention({"name": "dense", "num_heads": 2})
    assert comp.density(n) == 1.0
    assert comp.block_density(n, 7) == 1.0


@pytest.mark.parametrize("n", [1024, 4096])
def test_strided_density_scales_like_inverse_sqrt_n(n):
    ell = int(math.isqrt(n))
    split = ap.build_attention({"name": "strided", "stride": ell, "num_heads": 2})
    merged = ap.build_attention({"name": "strided", "stride": ell, "mode": "merged"})
    # per row: the window holds about l keys (2l/n of the triangle), the strided part about i/l (1/l)
    d_split, d_merged = split.density(n), merged.density(n)
    assert 1.0 < d_split * math.sqrt(n) < 2.0
    assert 2.5 < d_merged * math.sqrt(n) < 3.5
    # exact count from the definition: window keys min(i+1, l), strided keys floor(i/l)+1, overlap 1
    i = np.arange(n)
    window, strided = np.minimum(i + 1, ell), i // ell + 1
    tri = n * (n + 1) / 2
    assert d_split == pytest.approx((window.sum() + strided.sum()) / 2 / tri)
    assert d_merged == pytest.approx((window + strided - 1).sum() / tri)


def test_fixed_density_from_definition():
    n, ell, c = 1000, 100, 10
    comp = ap.build_attention({"name": "fixed", "stride": ell, "c": c, "mode": "merged"})
    i = np.arange(n)
    own_block = i % ell + 1
    # summary columns j <= i outside i's own block: c per completed earlier block
    earlier_summaries = (i // ell) * c
    assert comp.density(n) == pytest.approx((own_block + earlier_summaries).sum() / (n * (n + 1) / 2))


# --------------------------------------------------------------------------- rows with no allowed key


@pytest.mark.parametrize("groups", [1, 2])
def test_fixed_split_summary_head_has_empty_rows(groups):
    n, ell, c = 61, 16, 4
    comp = ap.build_attention(
        {
            "name": "fixed",
            "stride": ell,
            "c": c,
            "num_different_global_patterns": groups,
            "num_heads": 2 * groups,
        }
    )
    counts = comp.row_counts(n)  # (H, n)
    mask = comp.mask(n)
    assert (counts == mask.sum(-1)).all()
    for h in range(2 * groups):
        if h % 2 == 0:
            assert (counts[h] > 0).all()  # own block always holds i itself
        else:
            g = (h // 2) % groups
            first = ell - (g + 1) * c  # first summary column of this head
            assert (counts[h, :first] == 0).all()
            assert (counts[h, first:] > 0).all()
    assert math.isfinite(comp.density(n))

    # the dense reference backend gives those rows a zero output, never NaN
    from attention_patterns.backends import create_backend

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2 * groups, n, 8, requires_grad=True) for _ in range(3))
    out = create_backend("dense").attend(q, k, v, comp)  # (B, H, T, Dv)
    assert torch.isfinite(out).all()
    empty = counts == 0  # (H, T)
    assert empty.any()
    assert (out[:, empty] == 0).all()
    assert (out[:, ~empty].abs().sum(-1) > 0).all()
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


# --------------------------------------------------------------------------- random blocks


def _bigbird(**kw):
    cfg = {
        "name": "bigbird",
        "block_size": 4,
        "window_blocks": 2,
        "global_blocks": 1,
        "random_blocks": 2,
        **kw,
    }
    return ap.build_attention(cfg)


def test_bigbird_random_blocks_are_seeded_and_reproducible():
    n = 400
    a, b = _bigbird(seed=11), _bigbird(seed=11)
    assert torch.equal(a.mask(n), b.mask(n))
    assert torch.equal(a.layout(n, 4), b.layout(n, 4))
    assert not torch.equal(a.mask(n), _bigbird(seed=12).mask(n))
    # without random blocks the seed does not matter
    assert torch.equal(_bigbird(random_blocks=0, seed=1).mask(n), _bigbird(random_blocks=0, seed=2).mask(n))


def test_bigbird_random_blocks_do_not_depend_on_n():
    comp = _bigbird(seed=4, different_layout_per_head=True, num_heads=2)
    big = comp.mask(401)
    for n in (5, 37, 64, 250):
        assert torch.equal(comp.mask(n), big[:, :n, :n]), n
    assert torch.equal(comp.layout(256, 4), comp.layout(400, 4)[:, :64, :64])


def test_bigbird_random_blocks_lie_outside_window_and_globals():
    g, wb, r, bs = 2, 3, 2, 4
    comp = _bigbird(
        seed=9,
        global_blocks=g,
        window_blocks=wb,
        random_blocks=r,
        num_heads=3,
        different_layout_per_head=True,
    )
    base = _bigbird(seed=9, global_blocks=g, window_blocks=wb, random_blocks=0, num_heads=3)
    nb = 60
    lay = full_heads(comp.layout(nb * bs, bs), 3)
    extra = lay & ~full_heads(base.layout(nb * bs, bs), 3)  # the random blocks only
    rows, cols = np.nonzero(extra.any(0))
    assert rows.size > 0
    assert (cols >= g).all() and (cols <= rows - wb).all()
    assert (extra.sum(-1) <= r).all()
    # every row draws min(r, candidates) DISTINCT random blocks (candidates: g <= Q <= P - wb)
    candidates = np.clip(np.arange(nb) - wb - g + 1, 0, None)
    assert (extra.sum(-1) == np.minimum(r, candidates)[None, :]).all()
    # per-head layouts differ
    assert not np.array_equal(extra[0], extra[1])
    shared = _bigbird(seed=9, global_blocks=g, window_blocks=wb, random_blocks=r, num_heads=3)
    assert shared.mask_heads() == 1


def test_variable_random_blocks_are_seeded():
    cfg = {"name": "variable", "block_size": 4, "local_window_blocks": [2], "num_random_blocks": 1}
    a = ap.build_attention({**cfg, "seed": 1})
    assert torch.equal(a.mask(300), ap.build_attention({**cfg, "seed": 1}).mask(300))
    assert not torch.equal(a.mask(300), ap.build_attention({**cfg, "seed": 2}).mask(300))
    assert torch.equal(a.mask(100), a.mask(300)[:, :100, :100])


# --------------------------------------------------------------------------- scale: n = 2**20


LONG_N, LONG_B = 1 << 20, 128
LONG_CASES = [
    {"name": "strided", "stride": 1024, "num_heads": 2},
    {"name": "fixed", "stride": 1024, "c": 32, "num_heads": 2},
    {"name": "dense"},
    {"name": "local", "window": 1000},
    # the slowest (~2 s); its parts are those of fixed (same block) and strided (every l-th) above
    pytest.param({"name": "axial", "width": 1024, "num_heads": 2}, marks=pytest.mark.slow),
    {"name": "bigbird", "block_size": 128, "window_blocks": 3, "global_blocks": 2, "random_blocks": 3},
    {"name": "longformer", "block_size": 128, "window_blocks": 3, "global_block_indices": [0, 4000]},
    {"name": "variable", "block_size": 128, "local_window_blocks": [3, 7], "num_random_blocks": 1},
    {"name": "block_local", "block_size": 128, "window_blocks": 2},
]


def test_long_cases_cover_every_pattern():
    names = {(c if isinstance(c, dict) else c.values[0])["name"] for c in LONG_CASES}
    assert names == set(ap.list_attentions())


@pytest.mark.parametrize("cfg", LONG_CASES, ids=lambda c: c["name"])
def test_layout_for_a_million_positions(cfg):
    """``layout`` never forms the n x n mask: n = 2**20 with b = 128 builds in seconds."""
    comp = ap.build_attention(cfg)
    heads = comp.num_heads
    nb = LONG_N // LONG_B
    start = time.perf_counter()
    lay = comp.layout(LONG_N, LONG_B)
    elapsed = time.perf_counter() - start
    assert elapsed < 60, f"layout took {elapsed:.1f} s"
    assert lay.shape == (comp.mask_heads(), nb, nb) and lay.dtype == torch.bool
    assert not torch.triu(lay, diagonal=1).any()
    lay_h = full_heads(lay, heads)
    # a few block rows, against the brute-force reference on those rows' elements
    for k in (0, 1, 7, 8, 9, 4001, nb - 1):
        i = np.arange(k * LONG_B, (k + 1) * LONG_B, dtype=np.int64)[:, None]
        cols = sorted({m for m in (*range(0, 12), *range(max(0, k - 20), k + 1), 4000) if m <= k})
        j = np.concatenate([np.arange(m * LONG_B, (m + 1) * LONG_B) for m in cols])[None, :]
        for h in range(heads):
            ref = reference(cfg, h, 0, i, j).reshape(LONG_B, len(cols), LONG_B).any(axis=(0, 2))
            assert np.array_equal(lay_h[h, k, cols], ref), f"head {h} block row {k}"


# --------------------------------------------------------------------------- FlexAttention


FLEX_CASES = [
    {"name": "dense", "num_heads": 2},
    {"name": "local", "window": 40},
    {"name": "strided", "stride": 16, "num_heads": 2},
    {"name": "strided", "stride": 16, "mode": "interleaved"},
    {"name": "fixed", "stride": 16, "c": 4, "num_different_global_patterns": 2, "num_heads": 4},
    {"name": "axial", "width": 16, "num_heads": 3},
    {
        "name": "bigbird",
        "block_size": 16,
        "window_blocks": 2,
        "random_blocks": 2,
        "different_layout_per_head": True,
        "num_heads": 2,
    },
    {"name": "longformer", "block_size": 16, "window_blocks": 2, "global_block_indices": [3]},
    {"name": "variable", "block_size": 16, "local_window_blocks": [2, 3], "num_random_blocks": 1},
    {"name": "block_local", "block_size": 16, "window_blocks": 3},
]


def test_flex_cases_cover_every_pattern():
    assert {c["name"] for c in FLEX_CASES} == set(ap.list_attentions())


@pytest.mark.parametrize("n", [256, 300])
@pytest.mark.parametrize("cfg", FLEX_CASES, ids=[_case_id(c, 0)[:-3] for c in FLEX_CASES])
def test_mask_mod_under_flex_attention_on_cpu(cfg, n):
    flex = pytest.importorskip("torch.nn.attention.flex_attention")
    comp = ap.build_attention(cfg)
    heads = comp.num_heads
    for layer in range(comp.num_layers_period):
        ref = reference_mask(cfg, n, heads, layer)
        # create_mask evaluates the mask_mod under torch.vmap over (b, h, q, kv), as flex does
        dense = flex.create_mask(comp.mask_mod(layer), 2, heads, n, n, device="cpu")
        assert dense.shape == (2, heads, n, n)
        assert np.array_equal(dense[0].numpy(), ref) and np.array_equal(dense[1].numpy(), ref)
        block_mask = flex.create_block_mask(
            comp.mask_mod(layer), 1, heads, n, n, device="cpu", BLOCK_SIZE=128
        )
        assert np.array_equal(block_mask.to_dense()[0].bool().numpy(), reference_layout(ref, 128))
        assert np.array_equal(
            block_mask.to_dense()[0].bool().numpy(), full_heads(comp.layout(n, 128, layer), heads)
        )
