"""notebooks/inside_the_model.ipynb: it runs top to bottom (a 2-step run here; the whole committed run
in the slow test) and its committed outputs show every picture.

Executed like notebooks/quickstart.ipynb (tests/test_notebook.py): on the ``python3`` kernel where one
can be started, else cell by cell in this process. ``ZOO_NOTEBOOK_STEPS`` shortens its training.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from test_notebook import kernel_available, run_in_process, run_with_kernel

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "inside_the_model.ipynb"
RESULT = re.compile(r"val bits/dim after (\d+) steps: ([0-9.]+)")
#: pictures the notebook shows: pattern, 3 attention maps, 2 embedding pictures, distributions, bits map,
#: completions and samples
PICTURES = 10


def _code(nb) -> str:
    return "\n".join(c.source for c in nb.cells if c.cell_type == "code")


def test_committed_outputs_show_every_picture():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    pictures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pictures) == PICTURES, "commit the notebook with its outputs (run it top to bottom)"
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1)), "the outputs must come from one top-to-bottom run"
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    match = RESULT.search(text)
    assert match and int(match.group(1)) == 300, "the committed outputs come from the notebook's own 300-step run"
    for call in ("attention_maps", "plot_attention_grid", "plot_attention_queries", "plot_position_tables",
                 "plot_position_similarity", "plot_distributions", "plot_bits_map"):  # fmt: skip
        assert f"zv.{call}(" in _code(nb)
    assert "generate(model, 16, prompt=" in _code(nb) and "media.completion_grid(" in _code(nb)


def test_notebook_runs_in_a_short_version(monkeypatch):
    monkeypatch.setenv("ZOO_NOTEBOOK_STEPS", "2")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    text = run_in_process(nb)  # the kernel path is the slow test's
    match = RESULT.search(text)
    assert match and int(match.group(1)) == 2, text[-2000:]
    assert text.count("<IPython.core.display.Image object>") == PICTURES


@pytest.mark.slow
def test_notebook_runs_as_committed_on_a_kernel():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    text = run_with_kernel(nb) if kernel_available() else run_in_process(nb)
    match = RESULT.search(text)
    assert match and int(match.group(1)) == 300
    assert float(match.group(2)) < 5.0  # far below the 8 bits/dim of the untrained model
    if kernel_available():
        outputs = [o for c in nb.cells for o in c.get("outputs", [])]
        assert len([o for o in outputs if "image/png" in o.get("data", {})]) == PICTURES
