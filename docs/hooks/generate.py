"""MkDocs hook: generated parts of the docs come from the code, never typed by hand.

* before the build, ``scripts/plot_patterns.py`` draws one PNG per registered pattern into
  ``docs/assets/patterns/`` (git-ignored);
* ``<!-- gen:models -->`` is replaced by the table of registered model variants (parameter counts
  from building each variant on the ``meta`` device);
* ``<!-- gen:patterns -->`` by the table of registered attention patterns with their config fields;
* ``<!-- gen:gallery -->`` by a grid of the pattern pictures (one captioned figure per registered
  pattern) with a legend of their colours (``attention_patterns.plotting``);
* ``<!-- gen:backends -->`` by the table of attention backends and their availability here;
* ``<!-- gen:result NAME -->`` / ``<!-- gen:result NAME.TABLE -->`` by a table rendered from a script's
  output ``docs/results/NAME.json`` (``scripts/doc_results.py``: measured numbers are never typed).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PATTERN_DIR = ROOT / "docs" / "assets" / "patterns"


def on_pre_build(config, **kwargs):
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "plot_patterns.py"), "--out", str(PATTERN_DIR)],
        check=True,
        cwd=ROOT,
    )


def _fmt_value(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def models_table() -> str:
    import torch

    from zoo import registry

    rows = [
        "| model | parameters | layers | d | heads | attention | embedding | FFN | QK | seq_len |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in registry.list_models():
        cfg = registry.get_model_config(name)
        with torch.device("meta"):
            model = registry.build(name)
        params = sum(p.numel() for p in model.parameters())
        attn = dict(cfg.attention)
        attn_name = attn.pop("name")
        attn.pop("num_heads", None)
        ffn = "2d (half)" if cfg.half_ffn else "4d"
        qk = "d/2 (half)" if cfg.half_qk else "d"
        rows.append(
            f"| `{name}` | {params / 1e6:.2f}M | {cfg.n_layer} | {cfg.n_embd} | {cfg.n_head} | "
            f"{attn_name} ({_fmt_value(attn)}) | {cfg.embedding} {list(cfg.data_shape)} | {ffn} | {qk} | {cfg.seq_len} |"
        )
    return "\n".join(rows)


def patterns_table() -> str:
    import attention_patterns as ap

    rows = ["| name | config fields (defaults) | picture |", "|---|---|---|"]
    for name in ap.list_attentions():
        cfg = ap.get_config(name)()
        fields = ", ".join(
            f"`{f.name}={getattr(cfg, f.name)!r}`" for f in dataclasses.fields(cfg) if f.name not in ("name", "num_heads")
        )
        rows.append(f"| `{name}` | {fields or '-'} | [png](assets/patterns/{name}.png) |")
    return "\n".join(rows)


def backends_table() -> str:
    from attention_patterns.backends import backend_availability, create_backend, list_backends

    rows = ["| backend | trains (backward) | available on this build machine |", "|---|---|---|"]
    for name in list_backends():
        ok, why = backend_availability(name, "cpu")
        backward = "yes" if create_backend(name).supports_backward else "forward only"
        rows.append(f"| `{name}` | {backward} | {'yes' if ok else 'no: ' + why} |")
    return "\n".join(rows)


def pattern_gallery() -> str:
    """A legend and a grid of figures (markdown in HTML: ``md_in_html``), one per registered pattern."""
    import attention_patterns as ap
    from attention_patterns.plotting import HEAD_COLORS, QUERY_COLOR

    if str(ROOT / "scripts") not in sys.path:
        sys.path.insert(0, str(ROOT / "scripts"))
    from plot_patterns import small_config

    def swatch(color: str, label: str) -> str:
        return f'<span><span class="swatch" style="background:{color}"></span>{label}</span>'

    legend = [
        swatch(HEAD_COLORS[0], "attended by the first distinct head"),
        swatch(HEAD_COLORS[1], "by the second"),
        swatch(HEAD_COLORS[2], "by the third (one colour per distinct head; overlaps blend)"),
        swatch(QUERY_COLOR, "the output position (bottom row; its row is the thin line on top)"),
        swatch("#ffffff", "not attended"),
    ]
    figures = []
    for name in ap.list_attentions():
        cfg = small_config(name, 16)
        fields = ", ".join(f"{k}={v}" for k, v in cfg.items() if k != "name") or "no fields"
        figures.append(
            f'<figure markdown="span">\n[![{name}: {fields}](assets/patterns/{name}.png)](assets/patterns/{name}.png)\n'
            f"<figcaption><code>{name}</code>: {fields}</figcaption>\n</figure>"
        )
    return (
        '<div class="pattern-legend">' + "".join(legend) + "</div>\n\n"
        '<div class="pattern-gallery" markdown>\n' + "\n".join(figures) + "\n</div>"
    )


_GENERATORS = {
    "<!-- gen:models -->": models_table,
    "<!-- gen:patterns -->": patterns_table,
    "<!-- gen:gallery -->": pattern_gallery,
    "<!-- gen:backends -->": backends_table,
}


def on_page_markdown(markdown, page, config, files, **kwargs):
    for marker, fn in _GENERATORS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, fn())
    if "<!-- gen:result " in markdown:
        if str(ROOT / "scripts") not in sys.path:
            sys.path.insert(0, str(ROOT / "scripts"))
        import doc_results

        markdown = doc_results.render_markers(markdown)
    return markdown
