"""Generated numbers (scripts/doc_results.py): the README and docs markers render from docs/results/*.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import doc_results  # noqa: E402


def test_readme_and_docs_markers_are_up_to_date():
    assert doc_results.check() == []


def test_save_render_and_readme_block(tmp_path, monkeypatch):
    monkeypatch.setattr(doc_results, "RESULTS_DIR", tmp_path)
    path = doc_results.save("demo", {"x": 1.5}, renderer="record_run:fmt_duration", command="python demo.py")
    record = json.loads(path.read_text())
    assert record["command"] == "python demo.py" and record["data"] == {"x": 1.5} and record["date"]
    # a renderer returning named tables
    monkeypatch.setattr(doc_results, "_renderer", lambda spec: (lambda data: {"main": f"x={data['x']}", "b": "B"}))
    assert doc_results.render("demo").startswith("x=1.5\n\n<small>Generated from `docs/results/demo.json`")
    assert doc_results.render("demo", "b").startswith("B")
    with pytest.raises(KeyError, match="no table 'c'"):
        doc_results.render("demo", "c")
    text = "a\n<!-- gen:result demo -->\nstale 3.239\n<!-- /gen:result -->\nz\n"
    new = doc_results.update_readme(text)
    assert "stale" not in new and "x=1.5" in new and new.endswith("<!-- /gen:result -->\nz\n")
    assert doc_results.update_readme(new) == new  # idempotent
    assert "x=1.5" in doc_results.render_markers("<!-- gen:result demo -->")


def test_missing_result_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(doc_results, "RESULTS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="nothing.json does not exist"):
        doc_results.render("nothing")


def test_record_run_markdown_formats_a_run():
    import record_run

    data = {
        "overrides": [],
        "wall_s": 189.4,
        "trainer": {"steps": 1200, "batch_size": 8},
        "metrics": {"step": 1200, "test_bpd": 3.23581, "test_sequences": 10000,
                    "val_bpd": 3.2251, "num_params": 137000, "tokens_per_s": 91000.0},
    }  # fmt: skip
    md = record_run.markdown(data)
    assert "**3.2358**" in md and "3 min 09 s" in md and "1,200 x 8" in md and "`make run`" in md
