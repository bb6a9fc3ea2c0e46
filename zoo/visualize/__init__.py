"""Pictures of a trained Sparse Transformer (Child et al. 2019): what it attends to, what its
position embeddings learned, what it predicts and where it is uncertain.

Each function takes a model (and an example, ``(T,)`` bytes) and returns a matplotlib figure;
:func:`save_png` writes one. In a notebook::

    from zoo import visualize as zv
    maps = zv.attention_maps(model, example)          # recorded from the model's own forward pass
    zv.plot_attention_grid(maps, query=0)             # layer x head grid (paper Figure 2)
    zv.plot_attention_queries(maps, head=1)           # one head across queries
    zv.plot_position_tables(model)                    # §5.3 tables and their cosine similarity
    zv.plot_position_similarity(model)                # summed position embedding on the image grid
    pred = zv.predict(model, example)
    zv.plot_distributions(pred)                       # 256-way distributions, true byte marked
    zv.plot_bits_map(pred)                            # bits per position (averages to bits/dim)
    zv.write_pictures(model, example, "pictures")     # all of them as PNG files

``scripts/visualize.py checkpoint=PATH what=all out=DIR`` draws them all from a checkpoint.
"""

from __future__ import annotations

from .attention import (
    AttentionMaps,
    attention_maps,
    plot_attention_grid,
    plot_attention_queries,
    record_attention,
    weight_image,
)
from .embeddings import (
    PositionTable,
    plot_position_similarity,
    plot_position_tables,
    position_similarity,
    position_tables,
    summed_positions,
)
from .gallery import KINDS, parse_kinds, write_pictures
from .layout import Layout, save_png, to_array, to_png
from .predictions import Predictions, bits_image, plot_bits_map, plot_distributions, predict

__all__ = [
    "KINDS",
    "AttentionMaps",
    "Layout",
    "PositionTable",
    "Predictions",
    "attention_maps",
    "bits_image",
    "parse_kinds",
    "plot_attention_grid",
    "plot_attention_queries",
    "plot_bits_map",
    "plot_distributions",
    "plot_position_similarity",
    "plot_position_tables",
    "position_similarity",
    "position_tables",
    "predict",
    "record_attention",
    "save_png",
    "summed_positions",
    "to_array",
    "to_png",
    "weight_image",
    "write_pictures",
]
