"""scripts/table2.py: the Table 2 generator on tiny run folders written here (the real sweep's folders are
made by ``python scripts/train.py -m experiment=table2_images_*,... seed=0,1``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import table2  # noqa: E402


def _run(
    folder: Path, variant: str, seed: int, bpd: float, train_time_s: float, steps: int = 10, family: str = "images"
) -> None:
    folder.mkdir(parents=True)
    metrics = {
        "overrides": [f"experiment=table2_{family}_{variant}", f"seed={seed}"],
        "seed": seed,
        "step": steps,
        "train_time_s": train_time_s,
        "test_bpd": bpd,
        "load_average": [0.5, 1.0],
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))


def test_rows_merge_seeds_and_time_is_a_ratio_to_dense(tmp_path):
    _run(tmp_path / "0", "dense", 0, 4.0, 20.0)
    _run(tmp_path / "1", "dense", 1, 4.2, 20.0)
    _run(tmp_path / "2", "strided", 0, 4.1, 5.0)
    _run(tmp_path / "3", "strided", 1, 4.3, 5.0)
    _run(tmp_path / "4", "fixed_distinct", 0, 4.5, 10.0)
    (tmp_path / "other").mkdir()  # a run of another experiment is left out
    (tmp_path / "other" / "metrics.json").write_text(json.dumps({"overrides": ["model=fixed"], "step": 1}))
    data = table2.collect("images", [str(tmp_path)])
    rows = {r["variant"]: r for r in data["rows"]}
    assert [r["variant"] for r in data["rows"]] == ["dense", "strided", "fixed_distinct"]
    assert rows["dense"]["seeds"] == [0, 1]
    assert rows["dense"]["test_bpd"][0] == pytest.approx(4.1)
    assert rows["dense"]["test_bpd"][1] == pytest.approx(0.1414, abs=1e-4)  # sample std over the 2 seeds
    assert rows["strided"]["s_per_iter"][0] == pytest.approx(0.5)
    assert rows["strided"]["time_ratio"] == pytest.approx(0.25)
    assert rows["fixed_distinct"]["test_bpd"][1] is None  # one seed: no std
    md = table2.markdown(data)
    assert "| 4.1000 +- 0.1414 |" in md and "| 0.25x |" in md
    assert "| 2.80 | 0.38 | 0.70x |" in md  # the paper's strided CIFAR-10 row beside ours
    assert "4.5000 |" in md and "| - | - | - |" in md  # no paper row for distinct sub-blocks


def test_without_a_dense_run_it_says_what_is_missing(tmp_path, capsys):
    _run(tmp_path / "0", "strided", 0, 4.1, 5.0)
    assert table2.main(["images", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"error: no run of experiment=table2_images_dense under ['{tmp_path}']: the ratios need it\n"
    )


def test_the_papers_enwik8_fixed_row_sits_beside_merged_heads(tmp_path):
    """§7.2: the paper's enwik8 fixed model merges the heads, so Table 2's text row is that variant's."""
    for i, variant in enumerate(["dense", "fixed", "fixed_merged"]):
        _run(tmp_path / str(i), variant, 0, 3.0 + i, 10.0, family="text")
    lines = table2.markdown(table2.collect("text", [str(tmp_path)])).splitlines()
    merged = next(line for line in lines if "`table2_text_fixed_merged`" in line)
    split = next(line for line in lines if "`table2_text_fixed`" in line)
    assert merged.endswith("| 0.99 | 0.55 | 0.42x |")
    assert split.endswith("| - | - | - |")
