"""Every picture of a trained model for one example, written as PNG files (what ``scripts/visualize.py``
and the docs gallery use).

:func:`write_pictures` draws the kinds in :data:`KINDS` and returns the files it wrote with the
numbers behind them (the example's bits per dim, the queries, the recorded backend check).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from .attention import attention_maps, plot_attention_grid, plot_attention_queries
from .embeddings import plot_position_similarity, plot_position_tables
from .layout import Layout, save_png
from .predictions import plot_bits_map, plot_distributions, predict

#: the kinds of picture, in the order they are drawn
KINDS = ("attention", "embeddings", "distributions", "bits")


def parse_kinds(what: str | Sequence[str]) -> list[str]:
    """``"all"``, one kind, ``"a,b"`` or a list -> kinds of :data:`KINDS`; a bad name raises naming the valid ones."""
    names = [w.strip() for w in what.split(",")] if isinstance(what, str) else [str(w) for w in what]
    if "all" in names:
        return list(KINDS)
    bad = [n for n in names if n not in KINDS]
    if bad or not names:
        raise ValueError(f"unknown picture kind {bad[0] if bad else what!r}; what= takes {list(KINDS)} or 'all' "
                         "(several: what=[attention,bits])")  # fmt: skip
    return [k for k in KINDS if k in names]


def write_pictures(
    model: nn.Module,
    example: Tensor,
    out: str | os.PathLike,
    what: str | Sequence[str] = "all",
    queries: Sequence[int] | None = None,
    positions: Sequence[int] | None = None,
    dpi: int = 110,
) -> dict[str, Any]:
    """Draw the pictures ``what`` of ``model`` on ``example`` ``(T,)`` into the folder ``out``.

    Returns ``{"files": {name: path}, "queries", "example_bits_per_dim", "max_output_error"}``
    (the last two when the distributions/bits or the attention maps were drawn).
    """
    kinds = parse_kinds(what)
    out = Path(out)
    files: dict[str, Path] = {}
    info: dict[str, Any] = {"files": files}

    def save(name: str, fig: Any) -> None:
        files[name] = save_png(fig, out / f"{name}.png", dpi=dpi)

    if "attention" in kinds:
        maps = attention_maps(model, example, queries)
        info["queries"] = maps.queries
        info["max_output_error"] = maps.max_output_error
        for i, q in enumerate(maps.queries):
            save(f"attention_query{q}", plot_attention_grid(maps, query=i))
        for h in range(maps.probs.shape[1]):
            save(f"attention_head{h}", plot_attention_queries(maps, head=h))
    if "embeddings" in kinds:
        save("embedding_tables", plot_position_tables(model))
        layout = Layout.of(list(model.config.data_shape))
        if layout.image and layout.length == model.config.seq_len:
            save("embedding_similarity", plot_position_similarity(model))
    if "distributions" in kinds or "bits" in kinds:
        pred = predict(model, example)
        info["example_bits_per_dim"] = pred.bits_per_dim
        if "distributions" in kinds:
            save("distributions", plot_distributions(pred, positions))
        if "bits" in kinds:
            save("bits_map", plot_bits_map(pred))
    return info
