"""Pictures of a trained model (zoo.visualize, scripts/visualize.py) on a tiny checkpoint trained here.

Each picture is checked through the numbers it draws: the attention weights read back from the figure
are the model's own softmax (recomputed here from its weights), sum to 1 over the allowed keys and
are 0 on forbidden ones; the embedding pictures show the model's tables and their cosine
similarities; the bits map averages to the bits/dim the trainer's evaluation gives that example; and
the script writes every PNG.
"""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO_ROOT, compose
from matplotlib.colors import to_rgba

from zoo import visualize as zv
from zoo.attention import CausalSelfAttention
from zoo.model import ModelConfig, SparseTransformer
from zoo.registry import build
from zoo.train import Trainer, TrainerConfig, build_from_config, run
from zoo.visualize.layout import Layout
from zoo.visualize.predictions import TRUE_COLOR

SCRIPT = REPO_ROOT / "scripts" / "visualize.py"
OVERRIDES = [
    "data=synthetic",
    "data.size=16",
    "data.val_size=4",
    "data.test_size=4",
    "data.seq_len=64",
    "data.data_shape=[8,8]",
    "model=strided",
    "model.attention.stride=8",
    "model.n_layer=2",
    "model.n_embd=32",
    "model.n_head=2",
    "model.attention_backend=auto",
    "trainer=smoke",
    "trainer.threads=1",
]


def _load_script() -> Any:
    spec = importlib.util.spec_from_file_location("visualize_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["visualize_script"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A finished tiny run (4 steps): its checkpoint, the model loaded from it and a val example."""
    run_dir = tmp_path_factory.mktemp("run")
    cfg = compose("train", OVERRIDES)
    threads = torch.get_num_threads()
    try:
        metrics = run(cfg, run_dir)
    finally:
        torch.set_num_threads(threads)
    state = torch.load(metrics["checkpoint"], map_location="cpu", weights_only=False)
    model = SparseTransformer(ModelConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    _, data = build_from_config(cfg)
    return {"checkpoint": Path(metrics["checkpoint"]), "model": model, "data": data, "example": data.val[1]}


def _panel_arrays(fig) -> list[np.ma.MaskedArray]:
    return [ax.images[0].get_array() for ax in fig.axes if ax.images]


# ------------------------------------------------------------------------------------------ attention
def _softmax_from_weights(
    model: SparseTransformer, example: torch.Tensor, queries: list[int]
) -> list[torch.Tensor]:
    """Each block's attention probabilities of ``queries`` recomputed here: the block's input (a forward
    hook), its own q/k projection, scale 1/sqrt(d_qk) and the pattern's dense mask. ``(H, R, T)`` per layer."""
    inputs: list[torch.Tensor] = []
    blocks = [m for m in model.modules() if isinstance(m, CausalSelfAttention)]
    hooks = [b.register_forward_hook(lambda m, args, out: inputs.append(args[0])) for b in blocks]
    try:
        with torch.no_grad():
            model.eval()(example[None])
    finally:
        for h in hooks:
            h.remove()
    out = []
    for block, x in zip(blocks, inputs):
        T, nh, dqk = x.shape[1], block.n_head, block.qk_dim
        q, k, _ = block.qkv(x[0]).split([dqk, dqk, x.shape[-1]], dim=-1)  # (T, d_qk)
        q = q.view(T, nh, dqk // nh).transpose(0, 1).double()  # (H, T, hs)
        k = k.view(T, nh, dqk // nh).transpose(0, 1).double()
        mask = model.component.mask(T, block.layer).expand(nh, T, T)  # (H, T, T)
        scores = (q @ k.transpose(-1, -2)) * (dqk // nh) ** -0.5
        probs = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1)
        out.append(probs[:, queries])  # (H, R, T)
    return out


@pytest.mark.parametrize("backend", ["auto", "dense"])
def test_attention_maps_are_the_models_own_softmax(trained, backend):
    model, example = trained["model"], trained["example"]
    model.set_attention_backend(backend)
    queries = [0, 27, 63]
    maps = zv.attention_maps(model, example, queries)
    assert maps.probs.shape == (2, 2, 3, 64) and maps.backend == backend and maps.pattern == "strided"
    assert maps.max_output_error < 1e-5  # probs @ v equals what the backend returned
    assert all(b.attn.backend is model.backend for b in model.blocks)  # the recorder is gone
    expected = _softmax_from_weights(model, example, queries)
    for layer in range(2):
        torch.testing.assert_close(maps.probs[layer].double(), expected[layer], atol=1e-5, rtol=1e-4)
    allowed = maps.allowed
    assert bool((maps.probs[~allowed] == 0).all())
    torch.testing.assert_close(maps.probs.sum(-1), torch.ones(2, 2, 3))
    assert maps.head_parts[0] == ["Window", "EveryLth"]  # split mode: head h uses part h
    # the figure draws these very numbers: forbidden pixels masked (black), the rest the weights
    fig = zv.plot_attention_grid(maps, query=1)
    panels = _panel_arrays(fig)
    assert len(panels) == 4  # layer x head
    for (layer, head), image in zip([(0, 0), (0, 1), (1, 0), (1, 1)], panels):
        weights = maps.probs[layer, head, 1].view(8, 8).numpy()
        ok = maps.allowed[layer, head, 1].view(8, 8).numpy()
        assert np.array_equal(np.ma.getmaskarray(image), ~ok)
        np.testing.assert_allclose(image.compressed(), weights[ok], rtol=1e-6)
        assert image.sum() == pytest.approx(1.0, abs=1e-5)
    fig = zv.plot_attention_queries(maps, head=1)
    assert len(_panel_arrays(fig)) == 2 * 3  # layers x queries
    np.testing.assert_allclose(
        _panel_arrays(fig)[5].filled(0), maps.probs[1, 1, 2].view(8, 8).numpy(), rtol=1e-6
    )
    model.set_attention_backend("auto")


def test_rows_without_keys_are_drawn_all_forbidden_and_errors():
    # fixed, split: the summary head of the first block of positions has no key (zeros, never NaN)
    model = build("fixed", n_layer=1, n_embd=16, n_head=2, seq_len=64, data_shape=[8, 8],
                  attention={"name": "fixed", "stride": 8, "c": 2, "mode": "split"})  # fmt: skip
    example = torch.randint(0, 256, (64,), generator=torch.Generator().manual_seed(0))
    maps = zv.attention_maps(model, example, [3, 40])
    empty = ~maps.allowed.any(-1)
    assert bool(empty.any()) and bool((maps.probs.sum(-1)[empty] == 0).all())
    assert torch.isfinite(maps.probs).all()
    image, _ = zv.weight_image(maps, 0, 1, 0)
    assert np.ma.getmaskarray(image).all()  # nothing allowed: the whole panel is black
    zv.plot_attention_grid(maps, 0)  # draws without error
    with pytest.raises(
        ValueError, match=r"query 64 is not a position of the example: its positions are 0\.\.63"
    ):
        zv.attention_maps(model, example, [64])
    with pytest.raises(ValueError, match=r"head 2 does not exist"):
        zv.plot_attention_queries(maps, head=2)
    backend = model.backend
    with pytest.raises(RuntimeError, match="boom"), zv.record_attention(model, [1]):
        raise RuntimeError("boom")
    assert model.blocks[0].attn.backend is backend  # restored after an error


def test_text_strip_shows_the_characters():
    text = b"the quick brown fox jumps over the lazy dog. " * 3
    seq = torch.tensor(list(text[:128]))
    model = build("strided", n_layer=1, n_embd=16, n_head=2, seq_len=128, data_shape=[128],
                  attention={"name": "strided", "stride": 16, "mode": "split"})  # fmt: skip
    maps = zv.attention_maps(model, seq)
    assert maps.queries == [64, 119] and not maps.layout.image
    fig = zv.plot_attention_grid(maps, query=1)
    image = _panel_arrays(fig)[0]
    assert image.shape == (2, 64)  # the 120 positions up to the query, 64 per row
    np.testing.assert_allclose(image.compressed().sum(), 1.0, atol=1e-5)
    glyphs = "".join(t.get_text() for t in fig.axes[0].texts)
    assert glyphs == text[:120].decode()
    pred = zv.predict(model, seq)
    fig = zv.plot_bits_map(pred)
    assert "".join(t.get_text() for t in fig.axes[0].texts) == text[:128].decode()
    np.testing.assert_allclose(np.nanmean(fig.axes[0].images[0].get_array()), pred.bits_per_dim, rtol=1e-6)


# ------------------------------------------------------------------------------------------ embeddings
def test_embedding_pictures_show_the_models_tables(trained):
    model = trained["model"]
    tables = zv.position_tables(model)
    assert [t.name for t in tables] == ["row", "column"]
    fig = zv.plot_position_tables(model)
    images = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    assert len(images) == 4  # (table, similarity) per table
    for i, table in enumerate(model.embed_in.position.tables):
        w = table.weight.detach()
        np.testing.assert_array_equal(images[2 * i], w.numpy())
        np.testing.assert_allclose(images[2 * i + 1], (F.normalize(w, dim=-1) @ F.normalize(w, dim=-1).T).numpy(),
                                   atol=1e-6)  # fmt: skip
    summed = model.embed_in.position(64).detach()  # (T, d): row + column tables
    fig = zv.plot_position_similarity(model, positions=[9, 36])
    grids = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    for p, grid in zip([9, 36], grids):
        cos = F.cosine_similarity(summed[p][None], summed, dim=-1).view(8, 8).numpy()
        np.testing.assert_allclose(grid, cos, atol=1e-6)
        assert grid.flat[p] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "embedding,shape,names",
    [("attention", [8, 8], ["row (i // stride)", "column (i mod stride)"]), ("absolute", [8, 8], ["position"]),
     ("data", [4, 4, 3], ["row", "column", "channel"]), ("data", [3, 4, 4], ["channel", "row", "column"])],
)  # fmt: skip
def test_every_embedding_kind_is_named_and_drawn(embedding, shape, names):
    model = build("strided", n_layer=1, n_embd=16, n_head=2, seq_len=math.prod(shape), data_shape=shape,
                  embedding=embedding, attention={"name": "strided", "stride": 8, "mode": "split"})  # fmt: skip
    tables = zv.position_tables(model)
    assert [t.name for t in tables] == names
    assert [t.weight.shape[0] for t in tables] == model.embed_in.position.sizes
    assert len([ax for ax in zv.plot_position_tables(model).axes if ax.images]) == 2 * len(names)
    zv.plot_position_similarity(model)


def test_layout_of_colour_images():
    hwc, chw = Layout.of([4, 5, 3]), Layout.of([3, 4, 5])
    values = np.arange(60.0)
    np.testing.assert_array_equal(hwc.grid(values, "sum"), values.reshape(4, 5, 3).sum(-1))
    np.testing.assert_array_equal(chw.grid(values, "mean"), values.reshape(3, 4, 5).mean(0))
    for layout in (hwc, chw):
        for p in (0, 17, 59):
            assert layout.position(*layout.pixel(p)) == p
    assert hwc.pixel(17) == (1, 0, 2) and chw.pixel(17) == (3, 2, 0) and chw.pixel(21) == (0, 1, 1)
    assert not Layout.of([100]).image and Layout.of([100]).cols == 64


# ------------------------------------------------------------------------------------------ predictions
def test_bits_map_averages_to_the_evaluated_bits_per_dim(trained):
    model, example = trained["model"], trained["example"]
    pred = zv.predict(model, example)
    trainer = Trainer(model, trained["data"], TrainerConfig(progress=False, checkpoint=False, device="cpu"))
    evaluated = trainer.evaluate([example])  # the trainer's own evaluation of this one example
    assert pred.bits_per_dim == pytest.approx(evaluated, rel=1e-6)
    fig = zv.plot_bits_map(pred)
    picture, bits = (ax.images[0].get_array() for ax in fig.axes if ax.images)
    np.testing.assert_array_equal(picture, example.view(8, 8).numpy())
    assert float(np.mean(bits)) == pytest.approx(evaluated, rel=1e-6)
    np.testing.assert_allclose(bits, (-torch.log2(pred.probs[torch.arange(64), example])).view(8, 8).numpy(),
                               rtol=1e-4)  # fmt: skip


def test_distributions_show_the_predicted_probabilities(trained):
    pred = zv.predict(trained["model"], trained["example"])
    torch.testing.assert_close(pred.probs.sum(-1), torch.ones(64))
    positions = [0, 30, 63]
    fig = zv.plot_distributions(pred, positions)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 3
    for ax, p in zip(axes, positions):
        heights = np.array([bar.get_height() for bar in ax.patches])
        np.testing.assert_allclose(heights, pred.probs[p].numpy(), rtol=1e-6)
        true = int(trained["example"][p])
        red = to_rgba(TRUE_COLOR)
        assert [i for i, bar in enumerate(ax.patches) if bar.get_facecolor() == red] == [true]
        assert f"true byte {true} " in ax.get_title() and f"{float(pred.bits[p]):.2f} bits" in ax.get_title()
    with pytest.raises(
        ValueError, match=r"position 64 is not a position of the example: its positions are 0\.\.63"
    ):
        zv.plot_distributions(pred, [64])


# ------------------------------------------------------------------------------------------ the script
def test_script_writes_every_picture(trained, tmp_path):
    out = tmp_path / "pictures"
    cmd = [sys.executable, str(SCRIPT), f"checkpoint={trained['checkpoint'].parent.parent}", f"out={out}",
           "example=1"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == sorted(
        ["attention_query36.png", "attention_query53.png", "attention_head0.png", "attention_head1.png",
         "embedding_tables.png", "embedding_similarity.png", "distributions.png", "bits_map.png"]
    )  # fmt: skip
    for p in out.glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 2000
    pred = zv.predict(trained["model"], trained["example"])
    assert f"val example 1: {pred.bits_per_dim:.4f} bits/dim" in proc.stdout
    assert not (tmp_path / "outputs").exists()  # no Hydra run folder


def test_script_mistakes_print_one_line(trained, tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "what=attn"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: checkpoint=PATH is required (a checkpoint file or a run folder)"
    script = _load_script()

    def make(*overrides: str):
        return script.make_pictures(compose("visualize", [f"checkpoint={trained['checkpoint']}", *overrides]))

    with pytest.raises(
        ValueError, match=r"unknown picture kind 'attn'; what= takes \['attention', 'embeddings'"
    ):
        make("what=attn")
    with pytest.raises(ValueError, match=r"example=9 is not an index of the val split: it has 4 examples"):
        make("example=9")
    with pytest.raises(ValueError, match=r"queries must be a list of positions"):
        make("queries=[a]")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        script.make_pictures(compose("visualize", ["checkpoint=/no/such/run"]))


def test_script_records_the_gallery_numbers(trained, tmp_path, monkeypatch):
    script = _load_script()
    monkeypatch.setattr(script.doc_results, "RESULTS_DIR", tmp_path / "results")
    cfg = compose("visualize", [f"checkpoint={trained['checkpoint']}", f"out={tmp_path}", "what=[bits]",
                                "record=pictures_test"])  # fmt: skip
    info = script.make_pictures(cfg)
    record = script.doc_results.json.loads((tmp_path / "results" / "pictures_test.json").read_text())
    assert record["renderer"] == "visualize:markdown" and record["data"]["files"] == ["bits_map"]
    table = script.markdown(record["data"])
    assert f"| bits/dim of this example | {info['example_bits_per_dim']:.3f} |" in table
    assert "after 4 steps" in table
