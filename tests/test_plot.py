"""Pictures of the attention patterns (paper Figure 3 style) and the script that writes them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure

import attention_patterns as ap
from attention_patterns.plotting import QUERY_COLOR

ROOT = Path(__file__).resolve().parents[1]


def _load_script():
    spec = importlib.util.spec_from_file_location(
        "plot_patterns_script", ROOT / "scripts" / "plot_patterns.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _small(name: str) -> dict:
    return _load_script().small_config(name, 8)


def _image_panels(fig: Figure) -> list[np.ndarray]:
    """RGB arrays of the bottom-row (image grid) panels."""
    axes = fig.axes
    return [ax.get_images()[0].get_array() for ax in axes[len(axes) // 2 :]]


@pytest.mark.parametrize("name", ap.list_attentions())
def test_plot_returns_a_figure_for_every_pattern(name):
    cfg = _small(name)
    fig = ap.plot(cfg, 64)
    assert isinstance(fig, Figure)
    assert fig.canvas.get_default_filetype() == "png"
    comp = ap.build_attention(cfg)
    heads = comp.mask(64)
    distinct = len({tuple(h.flatten().tolist()) for h in heads})
    columns = distinct + (1 if distinct > 1 else 0)
    assert len(fig.axes) == 2 * columns  # matrix row + image row (64 = 8 x 8)
    # the image panels show exactly the positions the middle pixel attends to, and the query in black
    query = 4 * 8 + 4
    attended = heads[:, query].any(0).reshape(8, 8).numpy()
    overlay = _image_panels(fig)[-1]
    white = (overlay == 1.0).all(-1)
    black = np.isclose(overlay, matplotlib.colors.to_rgb(QUERY_COLOR)).all(-1)
    assert black[4, 4] and black.sum() == 1
    painted = ~white & ~black
    expected = attended.copy()
    expected[4, 4] = False
    assert np.array_equal(painted, expected)


def test_plot_accepts_components_layers_and_shapes():
    comp = ap.build_attention({"name": "strided", "stride": 6, "mode": "interleaved"})
    fig0 = ap.plot(comp, 36, layer=0)
    fig1 = ap.plot(comp, 36, layer=1)
    a0, a1 = _image_panels(fig0)[0], _image_panels(fig1)[0]
    assert not np.array_equal(a0, a1)  # layer 0 uses the window, layer 1 the column
    # rows x cols x channels, interleaved channels (CIFAR-like byte order)
    fig = ap.plot({"name": "strided", "stride": 12, "num_heads": 2}, 48, image_shape=(4, 4, 3), query=20)
    assert len(fig.axes) == 6
    # no grid for a prime length: only the matrices
    fig = ap.plot({"name": "fixed", "stride": 6, "c": 2, "num_heads": 2}, 37)
    assert len(fig.axes) == 3
    # union of the heads in a single column
    fig = ap.plot({"name": "fixed", "stride": 8, "c": 2, "num_heads": 4}, 64, union=True)
    assert len(fig.axes) == 2
    fig = ap.plot("dense", 16, title="baseline")
    assert fig._suptitle.get_text() == "baseline"


def test_plot_of_a_long_sequence_draws_the_block_layout():
    comp = ap.build_attention({"name": "strided", "stride": 64, "num_heads": 2})
    fig = ap.plot(comp, 4096, max_matrix=256)
    matrix = fig.axes[0].get_images()[0].get_array()
    assert matrix.shape[:2] == (256, 256)
    assert "block layout, b=16" in fig.axes[0].get_ylabel()


def test_plot_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"image_shape \(5, 5\) has 25 positions but n=36"):
        ap.plot("dense", 36, image_shape=(5, 5))
    with pytest.raises(ValueError, match="image_shape must be"):
        ap.plot("dense", 36, image_shape=(6, 6, 1, 1))
    with pytest.raises(ValueError, match=r"query must be a position in \[0, 36\), got 36"):
        ap.plot("dense", 36, query=36)
    with pytest.raises(ValueError, match="needs n = 64, got n=36"):
        ap.plot({"name": "axial", "width": 8, "height": 8, "num_heads": 2}, 36)


def test_plot_keeps_working_after_the_submodule_is_imported():
    import attention_patterns.plotting as plot_module  # must not shadow the function `plot`

    assert isinstance(ap.plot("dense", 16), Figure)
    assert isinstance(plot_module.plot("dense", 16), Figure)


def test_script_writes_a_png_per_pattern(tmp_path):
    script = _load_script()
    written = script.main(["--out", str(tmp_path / "patterns"), "--side", "8", "--dpi", "40"])
    names = sorted(p.stem for p in (tmp_path / "patterns").glob("*.png"))
    assert names == ap.list_attentions()
    assert sorted(written) == sorted((tmp_path / "patterns").glob("*.png"))
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_script_rejects_unknown_names(tmp_path):
    script = _load_script()
    with pytest.raises(ValueError, match="unknown attention 'strdied'"):
        script.main(["--out", str(tmp_path), "--names", "strdied"])
    assert script.main(["--out", str(tmp_path), "--names", "fixed", "--side", "8", "--dpi", "30"]) == [
        tmp_path / "fixed.png"
    ]
