"""notebooks/quickstart.ipynb runs top to bottom and its short training lowers the test bits/dim.

Executed with nbclient on the ``python3`` kernel; jupyter_client starts that kernel with the
interpreter running the tests (the kernelspec's ``python`` is replaced by ``sys.executable``), which
the test checks. Where no Jupyter kernel can be started, the code cells run in this process instead.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from pathlib import Path

import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"
RESULT = re.compile(r"test bits/dim: ([0-9.]+) before training, ([0-9.]+) after (\d+) steps")


def run_with_kernel(nb) -> str:
    from nbclient import NotebookClient

    nb.cells.append(nbformat.v4.new_code_cell("import sys; print('kernel python:', sys.executable)"))
    client = NotebookClient(
        nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(NOTEBOOK.parents[1])}}
    )
    client.execute()
    out = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                out.append(output["text"])
            elif output.get("output_type") == "error":
                raise AssertionError(f"notebook cell failed: {output['ename']}: {output['evalue']}")
    text = "".join(out)
    kernel_python = re.search(r"kernel python: (.+)", text).group(1).strip()
    assert os.path.realpath(kernel_python) == os.path.realpath(sys.executable), (
        f"the notebook ran on {kernel_python}, not on this environment's {sys.executable}"
    )
    return text


def run_in_process(nb) -> str:
    namespace: dict = {"__name__": "__main__"}
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        for cell in nb.cells:
            if cell.cell_type == "code":
                exec(compile(cell.source, str(NOTEBOOK), "exec"), namespace)
    return buffer.getvalue()


def kernel_available() -> bool:
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        KernelSpecManager().get_kernel_spec("python3")
        import ipykernel  # noqa: F401
    except Exception:
        return False
    return True


def test_quickstart_notebook_trains_and_prints_bits_per_dim():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert any('build("strided_half", n_layer=2)' in c.source for c in nb.cells if c.cell_type == "code")
    text = run_with_kernel(nb) if kernel_available() else run_in_process(nb)
    match = RESULT.search(text)
    assert match, f"the notebook did not print its bits/dim line; output was:\n{text[-2000:]}"
    before, after, steps = float(match.group(1)), float(match.group(2)), int(match.group(3))
    assert before == pytest.approx(8.0, abs=1e-3)  # zero-initialised logits: uniform over 256 byte values
    assert steps == 20 and after < before - 1.0
