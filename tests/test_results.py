"""zoo.results and scripts/collect.py: run folders -> one table (markdown, CSV) and a plot.

The runs here are folders with hand-made ``metrics.json`` records (the layout zoo.run_record writes), so
every expected mean and standard deviation is computed by hand; tests/test_ablations.py collects the
records of real training runs."""

from __future__ import annotations

import csv
import io
import json
import statistics
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from zoo import results

sys.path.insert(0, str(REPO_ROOT / "scripts"))
import collect  # noqa: E402
import doc_results  # noqa: E402


def write_run(folder: Path, overrides: list[str], seed: int, test_bpd: float, job: int, **extra) -> Path:
    folder.mkdir(parents=True)
    record = {
        "overrides": overrides,
        "seed": seed,
        "sweep": {"dir": str(folder.parent), "job": job},
        "num_params": 1000,
        "step": 10,
        "wall_time_s": 5.0 + job,
        "tokens_per_s": 100.0 * (job + 1),
        "val_bpd": test_bpd + 0.1,
        "test_bpd": test_bpd,
        "val_curve": [
            {"step": 5, "time_s": 1.0, "val_bpd": test_bpd + 1},
            {"step": 10, "time_s": 2.0, "val_bpd": test_bpd + 0.1},
        ],
        **extra,
    }
    (folder / "metrics.json").write_text(json.dumps(record))
    return folder


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """A 2 (pattern) x 2 (seed) sweep plus a job with other settings; folders in a non-sorted order."""
    root = tmp_path / "sweep"
    specs = [
        (["model/attention=strided", "seed=0", "trainer=smoke"], 0, 3.0),
        (["model/attention=strided", "seed=1", "trainer=smoke"], 1, 3.2),
        (["model/attention=fixed", "seed=0", "trainer=smoke"], 0, 3.5),
        (["model/attention=fixed", "seed=1", "trainer=smoke"], 1, 3.9),
    ]
    for job, (overrides, seed, bpd) in enumerate(specs):
        write_run(root / str(10 + job if job else 9), overrides, seed, bpd, job)  # "9" sorts after "10"
    return root


def test_runs_are_found_in_job_order_and_keys_split_into_swept_and_shared(sweep: Path):
    runs = results.find_runs([sweep])
    assert [r.metrics["sweep"]["job"] for r in runs] == [0, 1, 2, 3]
    assert results.swept_keys(runs) == ["model/attention", "seed"]
    assert results.common_overrides(runs) == {"trainer": "smoke"}
    assert results.find_runs([sweep / "11"])[0].overrides["model/attention"] == "strided"  # one run folder


def test_seeds_of_the_same_setting_are_one_row_with_mean_and_std(sweep: Path):
    data = results.table(results.find_runs([sweep]))
    assert data["keys"] == ["model/attention"] and len(data["rows"]) == 2
    strided, fixed = data["rows"]
    assert strided["settings"] == {"model/attention": "strided"} and strided["seeds"] == [0, 1]
    assert strided["test bits/dim"]["mean"] == pytest.approx(3.1)
    assert strided["test bits/dim"]["std"] == pytest.approx(statistics.stdev([3.0, 3.2]))
    assert fixed["test bits/dim"]["mean"] == pytest.approx(3.7)
    assert fixed["train tokens/s"]["mean"] == pytest.approx(350.0)

    text = results.markdown(data)
    assert "Shared by every run: `trainer=smoke`" in text
    assert "| model/attention | seeds | parameters |" in text
    assert "| `strided` | 0, 1 | 1,000 | 10 |" in text
    assert f"3.1000 +- {statistics.stdev([3.0, 3.2]):.4f}" in text

    table = list(csv.DictReader(io.StringIO(results.to_csv(data))))
    assert [row["model/attention"] for row in table] == ["strided", "fixed"]
    assert float(table[1]["test bits/dim"]) == pytest.approx(3.7)
    assert float(table[1]["test bits/dim std"]) == pytest.approx(statistics.stdev([3.5, 3.9]))


def test_single_runs_show_plain_values_and_missing_metrics_a_dash(tmp_path: Path):
    write_run(tmp_path / "a", ["model.embedding=data"], 0, 3.25, 0)
    write_run(tmp_path / "b", ["model.embedding=absolute"], 0, 3.5, 1)
    record = json.loads((tmp_path / "b" / "metrics.json").read_text())
    del record["test_bpd"]
    (tmp_path / "b" / "metrics.json").write_text(json.dumps(record))
    text = results.markdown(results.table(results.find_runs([tmp_path])))
    assert "| `data` | 1,000 | 10 | 5 | 100 | 3.3500 | 3.2500 |" in text
    assert "| `absolute` | 1,000 | 10 | 6 | 200 | 3.6000 | - |" in text
    assert "+-" not in text and "seeds" not in text


def test_overrides_come_from_hydra_when_the_record_has_none(tmp_path: Path):
    run = write_run(tmp_path / "r", [], 0, 3.0, 0)
    record = json.loads((run / "metrics.json").read_text())
    record["overrides"] = None  # e.g. zoo.train.run called outside a Hydra app
    (run / "metrics.json").write_text(json.dumps(record))
    (run / ".hydra").mkdir()
    (run / ".hydra" / "overrides.yaml").write_text("- model.half_ffn=true\n")
    assert results.find_runs([run])[0].overrides == {"model.half_ffn": "true"}


def test_plot_is_a_png(sweep: Path, tmp_path: Path):
    path = results.plot(results.find_runs([sweep]), tmp_path / "p.png")
    assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 5000


def test_errors_name_the_folder(tmp_path: Path, capsys: pytest.CaptureFixture):
    assert results.main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert results.main([str(tmp_path / "empty")]) == 2
    assert f"{tmp_path / 'empty'} holds no metrics.json" in capsys.readouterr().err


def test_collect_save_writes_a_docs_result_rendered_by_its_marker(sweep, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(doc_results, "RESULTS_DIR", tmp_path / "results")
    plot = tmp_path / "img" / "x.png"
    assert collect.main([str(sweep), "--save", "x", "--plot", str(plot)]) == 0
    assert plot.is_file()
    saved = json.loads((tmp_path / "results" / "x.json").read_text())
    assert saved["renderer"] == "collect:render" and "runs" not in saved["data"]["table"]["rows"][0]
    rendered = doc_results.render("x")
    assert "| `strided` | 0, 1 |" in rendered and "Generated from `docs/results/x.json`" in rendered
    assert "| `fixed` |" in capsys.readouterr().out
