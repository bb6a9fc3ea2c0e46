"""Tests of the Sparse Transformer model (zoo.model, zoo.embeddings, zoo.attention, zoo.layers).

Child et al. 2019: causality of every registered variant, the §6 initialisation, dropout only at
the end of residual branches (§5.4), half-size FFN / QK shapes (§6), the §5.3 embeddings, the
learned start embedding and block recomputation (§5.4).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from attention_patterns.backends import AttentionBackend, create_backend
from zoo.attention import CausalSelfAttention
from zoo.embeddings import position_coordinates
from zoo.layers import FeedForward, quick_gelu
from zoo.model import ModelConfig, SparseTransformer
from zoo.registry import build, get_model_config, list_models


def tiny_overrides(name: str) -> dict:
    """Shrink a registered variant (2 layers, small d, <= 96 positions) keeping its pattern, heads,
    embedding kind, half_* flags and data rank; strides become 8 so the sparsity is exercised."""
    config = get_model_config(name)
    attention = dict(config.attention)
    for key, value in (("stride", 8), ("width", 8), ("c", 2)):
        if key in attention:
            attention[key] = value
    rank = len(config.data_shape)
    shape = [96] if rank == 1 else [min(s, 8 if rank == 2 else 4) for s in config.data_shape]
    return {
        "n_layer": 2,
        "n_embd": max(32, 4 * config.n_head),
        "seq_len": math.prod(shape),
        "data_shape": shape,
        "attention": attention,
        "dropout": 0.0,
        "checkpoint_every": 0,
    }


@torch.no_grad()
def randomize(model: nn.Module, std: float = 0.3, seed: int = 0) -> nn.Module:
    """Non-zero logits and sizeable weights everywhere, so that every dependency shows in the output."""
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


# ---------------------------------------------------------------------------------- causality
@pytest.mark.parametrize("name", list_models())
def test_causality_every_variant(name):
    torch.manual_seed(0)
    model = randomize(build(name, **tiny_overrides(name))).eval()
    T = model.config.seq_len
    idx = torch.randint(0, 256, (2, T))

    # (1) gradient of output i w.r.t. the input embedding H_0[j] is exactly zero for j > i,
    #     and not zero for j = i (so the check can fail).
    x = model.embed(idx).detach().requires_grad_(True)  # (B, T, d)
    logits = model.forward_embedded(x)  # (B, T, V)
    for i in range(T):
        (grad,) = torch.autograd.grad(logits[:, i].sum(), x, retain_graph=True)
        future = grad[:, i + 1 :]
        assert torch.count_nonzero(future) == 0, f"{name}: output {i} depends on a later input"
        assert torch.count_nonzero(grad[:, i]) > 0

    # (2) changing byte j leaves logits[:, :j+1] bit-identical (the shift: logits[:, j] predicts
    #     byte j without seeing it) and changes logits[:, j+1].
    with torch.no_grad():
        base = model(idx)
        for j in sorted({0, 1, T // 3, T // 2, T - 2, T - 1}):
            changed = idx.clone()
            changed[:, j] = (changed[:, j] + 1 + torch.randint(0, 255, (2,))) % 256
            out = model(changed)
            assert torch.equal(out[:, : j + 1], base[:, : j + 1]), f"{name}: byte {j} leaked backwards"
            if j + 1 < T:
                assert not torch.equal(out[:, j + 1], base[:, j + 1])


@pytest.mark.parametrize("name", ["strided", "fixed_half", "enwik8_paper"])
def test_no_leak_between_examples_and_start_embedding(name):
    torch.manual_seed(1)
    model = randomize(build(name, **tiny_overrides(name))).eval()
    T = model.config.seq_len
    idx = torch.randint(0, 256, (3, T))
    other = idx.clone()
    other[1] = torch.randint(0, 256, (T,))
    with torch.no_grad():
        a, b = model(idx), model(other)
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
    assert not torch.equal(a[1, 1:], b[1, 1:])
    # the first prediction sees only the start embedding: identical for every example
    assert torch.allclose(a[:, 0], a[0:1, 0].expand_as(a[:, 0]), rtol=0, atol=1e-6)
    # n bytes -> n predictions
    assert a.shape == (3, T, 256)


def test_shorter_sequences_are_prefixes_and_longer_ones_fail():
    torch.manual_seed(2)
    model = randomize(build("strided", **tiny_overrides("strided"))).eval()
    T = model.config.seq_len
    idx = torch.randint(0, 256, (2, T))
    with torch.no_grad():
        full = model(idx)
        part = model(idx[:, : T // 2])
    torch.testing.assert_close(part, full[:, : T // 2], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=rf"longer than the model's seq_len={T}"):
        model(torch.randint(0, 256, (1, T + 1)))


# ---------------------------------------------------------------------------------- initialisation (§6)
@pytest.mark.parametrize("init", ["paper", "openai"])
def test_initialisation_statistics(init):
    torch.manual_seed(0)
    d, N = 256, 4
    model = build("strided", n_embd=d, n_layer=N, n_head=4, init=init)
    r = 1 / math.sqrt(2 * N)

    def lin(d_in: int) -> float:  # the linear-weight std of each convention, written out
        return 0.125 / math.sqrt(d_in) if init == "paper" else math.sqrt(0.125 / d_in)

    def check_std(t: torch.Tensor, expected: float, what: str) -> None:
        std = t.detach().float().std().item()
        assert abs(t.detach().float().mean().item()) < 0.05 * expected + 3 * expected / math.sqrt(t.numel())
        assert std == pytest.approx(expected, rel=0.05), f"{what}: std {std} != {expected}"

    # embeddings: as printed in §6 under both conventions
    check_std(model.embed_in.token.weight, 0.125 / math.sqrt(d), "W_e")
    pos = model.embed_in.position
    assert pos.n_emb == 2
    check_std(torch.cat([t.weight for t in pos.tables]), 0.125 / math.sqrt(d * 2), "position tables")
    for block in model.blocks:
        check_std(block.attn.qkv.weight, lin(d), "W_q,k,v")
        check_std(block.attn.proj.weight, lin(d) * r, "W_p")
        check_std(block.ffn.fc1.weight, lin(d), "W_1")
        check_std(block.ffn.fc2.weight, lin(4 * d) * r, "W_2")
        for lin_ in (block.attn.qkv, block.attn.proj, block.ffn.fc1, block.ffn.fc2):
            assert torch.count_nonzero(lin_.bias) == 0
        for ln in (block.ln_1, block.ln_2):
            assert torch.equal(ln.weight, torch.ones(d)) and torch.equal(ln.bias, torch.zeros(d))
    assert torch.count_nonzero(model.head.weight) == 0 and torch.count_nonzero(model.head.bias) == 0
    # zero logits: the first loss is exactly the uniform distribution's ln 256 nats per byte
    loss = model.loss(torch.randint(0, 256, (2, 784)))
    assert loss.item() == pytest.approx(math.log(256), abs=1e-5)


def test_openai_init_scales_only_the_linear_weights():
    """Same seed, both conventions: every linear weight is 1/sqrt(0.125) = 2.83x larger, the rest identical."""
    over = dict(n_embd=64, n_layer=3, n_head=2, half_qk=True, half_ffn=True)
    torch.manual_seed(5)
    paper = build("strided", init="paper", **over)
    torch.manual_seed(5)
    openai = build("strided", init="openai", **over)
    linear = {f"{n}.weight" for n, m in paper.named_modules() if isinstance(m, nn.Linear)}
    assert len(linear) == 3 * 4 + 1  # qkv, proj, fc1, fc2 per block, and the (zero) logits
    a, b = paper.state_dict(), openai.state_dict()
    for name in a:
        if name in linear:
            torch.testing.assert_close(b[name], a[name] / math.sqrt(0.125), rtol=1e-6, atol=0)
        else:
            assert torch.equal(a[name], b[name]), name


def test_init_option_is_checked():
    with pytest.raises(ValueError, match=r"init must be one of \['paper', 'openai'\], got 'xavier'"):
        build("strided", init="xavier")


def test_position_embedding_std_scales_with_n_emb():
    torch.manual_seed(0)
    d = 256
    model = build("cifar10_paper", n_layer=1, n_embd=d, seq_len=4096, data_shape=[64, 64], checkpoint_every=0)
    tables = model.embed_in.position.tables
    assert [t.num_embeddings for t in tables] == [64, 64]
    std = torch.cat([t.weight for t in tables]).std().item()
    assert std == pytest.approx(0.125 / math.sqrt(2 * d), rel=0.05)


# ---------------------------------------------------------------------------------- dropout (§5.4)
def test_dropout_model_in_eval_mode_equals_model_without_dropout():
    over = tiny_overrides("fixed")
    torch.manual_seed(3)
    with_dropout = build("fixed", **{**over, "dropout": 0.5})
    torch.manual_seed(3)
    without = build("fixed", **over)
    for (na, pa), (nb, pb) in zip(with_dropout.state_dict().items(), without.state_dict().items()):
        assert na == nb and torch.equal(pa, pb)
    randomize(with_dropout), randomize(without)
    idx = torch.randint(0, 256, (2, over["seq_len"]))
    with torch.no_grad():
        assert torch.equal(with_dropout.eval()(idx), without.eval()(idx))
        with_dropout.train()
        assert not torch.equal(with_dropout(idx), without(idx))  # dropout is active in training


def test_dropout_only_at_the_end_of_residual_branches():
    model = randomize(build("strided", **{**tiny_overrides("strided"), "dropout": 0.5})).train()
    dropouts = [name for name, m in model.named_modules() if isinstance(m, nn.Dropout)]
    assert dropouts == [f"blocks.{i}.dropout" for i in range(model.config.n_layer)]
    for block in model.blocks:
        for sub in (block.attn, block.ffn, block.ln_1, block.ln_2):
            assert not any(isinstance(m, nn.Dropout) for m in sub.modules())
    # in training mode the attention (weights included), the FFN and the embeddings are deterministic
    idx = torch.randint(0, 256, (2, model.config.seq_len))
    with torch.no_grad():
        x = model.embed(idx)
        assert torch.equal(x, model.embed(idx))
        block = model.blocks[0]
        assert torch.equal(block.attn(x), block.attn(x))
        assert torch.equal(block.ffn(x), block.ffn(x))
        assert not torch.equal(block(x), block(x))  # ... while the residual branches are dropped


# ---------------------------------------------------------------------------------- shapes (§6)
@pytest.mark.parametrize("half_ffn", [False, True])
@pytest.mark.parametrize("half_qk", [False, True])
def test_half_ffn_and_half_qk_shapes(half_ffn, half_qk):
    d, H = 64, 4
    model = build("strided", n_layer=1, n_embd=d, n_head=H, half_ffn=half_ffn, half_qk=half_qk)
    block = model.blocks[0]
    hidden = 2 * d if half_ffn else 4 * d
    qk = d // 2 if half_qk else d
    assert block.ffn.fc1.weight.shape == (hidden, d) and block.ffn.fc2.weight.shape == (d, hidden)
    assert block.attn.qkv.weight.shape == (2 * qk + d, d)  # q, k: qk each; v: d
    assert block.attn.proj.weight.shape == (d, d)
    # the backend receives per-head q/k of qk/H dims and v of d/H dims
    seen = {}

    class Spy(AttentionBackend):
        name = "spy"

        def attend(self, q, k, v, component, layer=0, scale=None):
            seen.update(q=q.shape, k=k.shape, v=v.shape)
            return create_backend("dense").attend(q, k, v, component, layer, scale)

    block.attn.backend = Spy()
    out = model(torch.randint(0, 256, (2, 784)))
    assert out.shape == (2, 784, 256)
    assert seen == {"q": (2, H, 784, qk // H), "k": (2, H, 784, qk // H), "v": (2, H, 784, d // H)}


def test_quick_gelu_and_feedforward():
    x = torch.linspace(-4, 4, 101)
    assert torch.allclose(quick_gelu(x), x * torch.sigmoid(1.702 * x))
    assert torch.allclose(quick_gelu(x), torch.nn.functional.gelu(x), atol=0.03)  # an approximation of GELU
    ffn = FeedForward(8, 16).double()
    for p_ in ffn.parameters():  # non-zero biases too
        torch.nn.init.normal_(p_)
    x = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    out = ffn(x)
    assert out.shape == (2, 3, 8)
    h = ffn.fc1(x)
    ref = ffn.fc2(h * torch.sigmoid(1.702 * h))  # W_2 f(W_1 x + b_1) + b_2 (§5.2), plain autograd
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(out)
    params = (x, *ffn.parameters())
    for a, b in zip(torch.autograd.grad(out, params, g), torch.autograd.grad(ref, params, g)):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(quick_gelu, (x.detach()[0, :2].clone().requires_grad_(),))


# ---------------------------------------------------------------------------------- attention plumbing
def test_blocks_pass_their_layer_index_and_share_one_component_and_backend():
    calls = []

    class Recorder(AttentionBackend):
        name = "recorder"

        def __init__(self):
            super().__init__()
            self.dense = create_backend("dense")

        def attend(self, q, k, v, component, layer=0, scale=None):
            calls.append((component, layer))
            return self.dense.attend(q, k, v, component, layer, scale)

    over = tiny_overrides("strided")
    over["attention"] = {**over["attention"], "mode": "interleaved"}
    # the dense reference, explicitly: the recorder below computes with it too, so outputs are bit-identical
    model = randomize(build("strided", **{**over, "n_layer": 3, "attention_backend": "dense"})).eval()
    reference = model(torch.zeros(1, over["seq_len"], dtype=torch.long))
    recorder = Recorder()
    for block in model.blocks:
        block.attn.backend = recorder
    out = model(torch.zeros(1, over["seq_len"], dtype=torch.long))
    assert [layer for _, layer in calls] == [0, 1, 2]
    assert all(comp is model.component for comp, _ in calls)
    assert model.component.num_heads == model.config.n_head
    assert torch.equal(out, reference)  # any backend plugs in without model changes
    # interleaved: layers 0 and 1 use different parts, so the masks differ
    assert not torch.equal(model.component.mask(16, 0), model.component.mask(16, 1))


def test_attention_module_matches_manual_masked_attention():
    torch.manual_seed(4)
    model = randomize(build("fixed", n_layer=1, n_embd=32, n_head=4, half_qk=True), std=0.2)
    attn: CausalSelfAttention = model.blocks[0].attn
    x = torch.randn(2, 784, 32)
    q, k, v = attn.qkv(x).split([16, 16, 32], dim=-1)
    q = q.view(2, 784, 4, 4).transpose(1, 2)
    k = k.view(2, 784, 4, 4).transpose(1, 2)
    v = v.view(2, 784, 4, 8).transpose(1, 2)
    mask = model.component.mask(784, 0)  # (H', T, T)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(4)
    scores = scores.masked_fill(~mask, float("-inf"))
    empty = ~mask.any(-1, keepdim=True)
    probs = torch.softmax(scores.masked_fill(empty, 0.0), -1).masked_fill(~mask, 0.0)
    expected = attn.proj((probs @ v).transpose(1, 2).reshape(2, 784, 32))
    torch.testing.assert_close(attn(x), expected, rtol=1e-4, atol=1e-5)
    assert torch.isfinite(attn(x)).all()


# ---------------------------------------------------------------------------------- embeddings (§5.3)
def test_data_embedding_coordinates_follow_byte_order():
    coords = position_coordinates([32, 32, 3], 3072)
    i = torch.arange(3072)
    assert torch.equal(coords, torch.stack([i // 96, (i // 3) % 32, i % 3]))  # row, column, channel
    planes = position_coordinates([3, 32, 32], 3072)
    assert torch.equal(planes, torch.stack([i // 1024, (i // 32) % 32, i % 32]))  # channel, row, column
    model = build("strided", n_layer=1, n_embd=32, seq_len=3072, data_shape=[32, 32, 3])
    assert [t.num_embeddings for t in model.embed_in.position.tables] == [32, 32, 3]
    # the embedding of position t is the sum of its row, column and channel rows
    pos = model.embed_in.position(3072)
    t = 1000
    tables = model.embed_in.position.tables
    expected = tables[0].weight[t // 96] + tables[1].weight[(t // 3) % 32] + tables[2].weight[t % 3]
    torch.testing.assert_close(pos[t], expected)


def test_attention_and_absolute_embeddings():
    model = build(
        "fixed",
        n_layer=1,
        n_embd=32,
        seq_len=100,
        embedding="attention",
        data_shape=[100],
        attention={"name": "fixed", "stride": 16, "c": 4},
    )
    pos = model.embed_in.position
    assert pos.sizes == [7, 16]  # ceil(100 / 16) rows of width the stride
    i = torch.arange(100)
    assert torch.equal(pos.coords, torch.stack([i // 16, i % 16]))
    axial = build(
        "dense", n_layer=1, n_embd=32, embedding="attention", attention={"name": "axial", "width": 28}
    )
    assert axial.embed_in.position.sizes == [28, 28]
    absolute = build("strided", n_layer=1, n_embd=32, embedding="absolute")
    assert absolute.embed_in.position.sizes == [784]
    with pytest.raises(ValueError, match="attention 'dense' has no 'stride'"):
        build("dense", embedding="attention")


def test_first_input_is_the_start_embedding():
    model = build("strided", n_layer=1, n_embd=32)
    idx = torch.randint(0, 256, (2, 784))
    x = model.embed(idx)
    emb = model.embed_in
    pos = emb.position(784)
    torch.testing.assert_close(x[:, 0], (emb.start + pos[0]).expand(2, -1))
    torch.testing.assert_close(x[:, 5], emb.token.weight[idx[:, 4]] + pos[5])


# ---------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"n_embd": 130, "n_head": 4}, "n_embd=130 must be divisible by n_head=4"),
        ({"n_embd": 36, "n_head": 4, "half_qk": True}, r"divisible by 2 \* n_head = 8"),
        ({"seq_len": 700}, r"seq_len == prod\(data_shape\)"),
        ({"embedding": "learned"}, "embedding must be one of"),
        ({"dropout": 1.0}, "dropout must be a number in"),
        ({"checkpoint_every": -1}, "checkpoint_every must be an integer >= 0"),
        ({"n_layer": 0}, "n_layer must be an integer >= 1"),
        ({"attention": {"name": "axial", "width": 28, "height": 10}}, "cannot serve seq_len=784"),
        ({"attention": {"name": "strided", "stride": 0}}, "stride must be an integer >= 1"),
        ({"attention": {"name": "strided", "num_heads": 4}}, "disagrees with n_head=2"),
        ({"attention_backend": "nope"}, "unknown attention backend 'nope'"),
        ({"data_shape": [28, 0]}, "data_shape must be a non-empty list of positive sizes"),
    ],
)
def test_invalid_configs_fail_clearly(overrides, message):
    with pytest.raises(ValueError, match=message):
        build("strided", **overrides)


def test_bad_inputs_fail_clearly():
    model = build("strided", n_layer=1, n_embd=32)
    with pytest.raises(ValueError, match=r"idx must be \(B, T\)"):
        model(torch.zeros(784, dtype=torch.long))
    with pytest.raises(ValueError, match="integer tensor"):
        model(torch.zeros(1, 784))


# ---------------------------------------------------------------------------------- recomputation (§5.4)
@pytest.mark.parametrize("every", [1, 2])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_checkpoint_every_gives_the_same_gradients(every, dropout):
    over = {**tiny_overrides("strided_half"), "n_layer": 3, "dropout": dropout}
    plain = randomize(build("strided_half", **over), std=0.1).train()
    ckpt = build("strided_half", **{**over, "checkpoint_every": every}).train()
    ckpt.load_state_dict(plain.state_dict())
    idx = torch.randint(0, 256, (2, over["seq_len"]))
    grads = []
    for model in (plain, ckpt):
        torch.manual_seed(5)
        loss = model.loss(idx)
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-5, atol=1e-7, msg=n)
    assert any(torch.count_nonzero(g) for g in grads[0].values())


def test_checkpoint_only_in_training(monkeypatch):
    import zoo.model as zm

    calls = []
    real = zm.checkpoint

    def counting(fn, *args, **kwargs):
        calls.append(kwargs.get("use_reentrant"))
        return real(fn, *args, **kwargs)

    monkeypatch.setattr(zm, "checkpoint", counting)
    model = build("strided", **{**tiny_overrides("strided"), "n_layer": 4, "checkpoint_every": 2})
    idx = torch.randint(0, 256, (1, model.config.seq_len))
    model.train().loss(idx).backward()
    assert calls == [False, False]  # blocks 0 and 2, non-reentrant
    calls.clear()
    model.eval()(idx)
    assert calls == []


# ---------------------------------------------------------------------------------- utilities
def test_num_parameters_loss_and_backend_switch():
    config = ModelConfig(n_layer=2, n_embd=32, n_head=4)
    model = SparseTransformer(config)
    manual = sum(p.numel() for p in model.parameters())
    assert model.num_parameters() == manual
    emb = 256 * 32 + 32 + 2 * 28 * 32  # W_e, start, row + column tables
    assert model.num_parameters(exclude_embeddings=True) == manual - emb
    randomize(model, std=0.1)
    idx = torch.randint(0, 256, (2, 784))
    logits = model(idx)
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), idx.reshape(-1))
    torch.testing.assert_close(model.loss(idx), expected)
    model.set_attention_backend("dense")
    assert all(b.attn.backend is model.backend for b in model.blocks)
    torch.testing.assert_close(model(idx), logits)
    with pytest.raises(ValueError, match="unknown attention backend"):
        model.set_attention_backend("nope")


@pytest.mark.parametrize("value", [256, 300, -1])
def test_out_of_range_bytes_fail_naming_the_value(value):
    model = build("strided", n_layer=1)
    idx = torch.zeros((2, 784), dtype=torch.long)
    idx[1, 100] = value
    with pytest.raises(ValueError, match=rf"value {value}, outside the vocabulary \[0, 255\]"):
        model(idx)


def test_default_backend_is_auto_and_the_model_logs_what_it_resolved(caplog):
    """``auto`` is the default; the model logs the backend it resolved once per device (one INFO line)."""
    model = build("strided", n_layer=2)
    assert model.config.attention_backend == "auto" and model.backend.name == "auto"
    assert model.resolved_backend(784, "cpu") == "auto -> blocksparse"
    idx = torch.randint(0, 256, (1, 784))
    with caplog.at_level("INFO", logger="zoo.model"):
        model(idx)
        model(idx[:, :100])
        model.loss(idx).backward()
    lines = [r.getMessage() for r in caplog.records if r.name == "zoo.model"]
    assert lines == ["attention: pattern 'strided' computed by backend auto -> blocksparse on cpu (n=784)"]
    model.set_attention_backend("dense")
    assert model.resolved_backend(784, "cpu") == "dense"
    with caplog.at_level("INFO", logger="zoo.model"):
        model(idx)
    assert "computed by backend dense on cpu" in caplog.records[-1].getMessage()
