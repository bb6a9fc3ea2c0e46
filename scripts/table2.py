"""Table 2 of Child et al. 2019 at CPU scale, from the run folders of a Table 2 sweep.

    python scripts/train.py -m experiment=table2_images_dense,table2_images_strided,... seed=0,1
    python scripts/table2.py images multirun/DATE/TIME      # writes docs/results/table2_images.json

One row per pattern variant (the runs of its seeds merged): test bits/dim as mean +- standard deviation
over the seeds, the seconds per training iteration (the run's training time over its steps, evaluations
excluded) and that time as a ratio to the dense variant's, beside the paper's Table 2 (CIFAR-10 for the
image family, enwik8 for the text family). ``docs/reproducing.md`` shows the table through
``<!-- gen:result table2_images -->`` (``scripts/doc_results.py``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "scripts"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from zoo.results import find_runs  # noqa: E402

#: the variants of a family in table order: experiment suffix -> what it is
VARIANTS = {
    "dense": "dense attention",
    "strided": "strided, split heads",
    "fixed": "fixed, split heads",
    "fixed_merged": "fixed, merged heads",
    "fixed_interleaved": "fixed, interleaved layers",
    "fixed_distinct": "fixed, merged heads, distinct summary sub-blocks",
}
#: Table 2 of the paper: (bits per dim, seconds per iteration) on CIFAR-10 and on enwik8, beside the variant
#: that is the paper's model: its enwik8 fixed model merges the heads (§7.2); for CIFAR-10's fixed row the
#: paper does not say which integration it used, so it sits beside the split variant
PAPER = {
    "images": {"dense": (2.82, 0.54), "fixed": (2.85, 0.47), "strided": (2.80, 0.38)},
    "text": {"dense": (1.00, 1.31), "fixed_merged": (0.99, 0.55), "strided": (1.13, 0.35)},
}
PAPER_DATA = {"images": "CIFAR-10", "text": "enwik8"}


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def collect(family: str, paths: list[str]) -> dict[str, Any]:
    """The rows of the family's Table 2 from run folders (or folders above them)."""
    if family not in PAPER:
        raise ValueError(f"family must be one of {sorted(PAPER)}, got {family!r}")
    groups: dict[str, list] = {}
    for run in find_runs(paths):
        experiment = run.overrides.get("experiment", "")
        prefix = f"table2_{family}_"
        if not experiment.startswith(prefix) or experiment[len(prefix):] not in VARIANTS:
            continue
        groups.setdefault(experiment[len(prefix):], []).append(run)
    if "dense" not in groups:
        raise ValueError(f"no run of experiment=table2_{family}_dense under {paths}: the ratios need it")
    rows = []
    for variant in (v for v in VARIANTS if v in groups):
        runs = groups[variant]
        bpd = [r.metrics["test_bpd"] for r in runs if r.metrics.get("test_bpd") is not None]
        iters = [r.metrics["train_time_s"] / r.metrics["step"] for r in runs if r.metrics.get("step")]
        rows.append(
            {
                "variant": variant,
                "seeds": sorted(r.metrics.get("seed") for r in runs),
                "steps": runs[0].metrics.get("step"),
                "test_bpd": _mean_std(bpd) if bpd else None,
                "s_per_iter": _mean_std(iters),
                "runs": [str(r.path) for r in runs],
            }
        )
    dense_iter = rows[0]["s_per_iter"][0]
    for row in rows:
        row["time_ratio"] = row["s_per_iter"][0] / dense_iter
    loads = [x for rs in groups.values() for r in rs for x in (r.metrics.get("load_average") or []) if x is not None]
    return {
        "family": family,
        "rows": rows,
        "load_average": [min(loads), max(loads)] if loads else None,
    }


def _pm(value: tuple[float, float | None] | None, digits: int) -> str:
    if value is None:
        return "-"
    mean, std = value
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} +- {std:.{digits}f}"


def markdown(data: dict[str, Any]) -> str:
    """Our rows beside the paper's (``-`` where the paper has no such variant)."""
    family = data["family"]
    paper = PAPER[family]
    unit = "bits/dim" if family == "images" else "bits/byte"
    lines = [
        f"| variant | seeds | steps | test {unit} | s / iteration | time vs dense | "
        f"paper ({PAPER_DATA[family]}) {unit} | paper s / iteration | paper time vs dense |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in data["rows"]:
        ours = paper.get(row["variant"])
        theirs = (
            f"{ours[0]:.2f} | {ours[1]:.2f} | {ours[1] / paper['dense'][1]:.2f}x" if ours else "- | - | -"
        )
        lines.append(
            f"| {VARIANTS[row['variant']]} (`table2_{family}_{row['variant']}`) | "
            f"{', '.join(str(s) for s in row['seeds'])} | {row['steps']:,} | {_pm(row['test_bpd'], 4)} | "
            f"{_pm(row['s_per_iter'], 4)} | {row['time_ratio']:.2f}x | {theirs} |"
        )
    if data.get("load_average"):
        low, high = data["load_average"]
        lines += ["", f"Load average (1 minute) at the starts and ends of the runs: {low:.1f} to {high:.1f}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python scripts/table2.py", description=__doc__.split("\n")[0]
    )
    parser.add_argument("family", choices=sorted(PAPER), help="images (Fashion-MNIST) or text (the excerpt)")
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="run folders or folders above them (sweeps)")
    parser.add_argument("--save", metavar="NAME", help="docs/results/NAME.json (default: table2_FAMILY)")
    args = parser.parse_args(argv)
    try:
        data = collect(args.family, args.dirs)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(markdown(data))
    from doc_results import save

    print(f"wrote {save(args.save or f'table2_{args.family}', data, renderer='table2:markdown')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
