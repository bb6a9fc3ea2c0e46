"""Training runs read back into one table and one plot: what a sweep found, without joining files by hand.

    python scripts/collect.py multirun/2025-06-01/21-34-30             # print the markdown table
    python scripts/collect.py RUN_OR_SWEEP... --csv r.csv --markdown r.md --plot r.png
    python -m zoo.results RUN_OR_SWEEP...                               # the same, without --save

Each argument is a run folder (holding ``metrics.json``) or any folder above run folders (a ``-m`` sweep,
or several). A run's ``metrics.json`` holds its command-line overrides (:mod:`zoo.run_record`); the
overrides whose values differ between the runs are the *swept keys* and become the table's first
columns, the ones all runs share are listed above it. Runs whose swept values agree except for ``seed``
are one row with the mean +- standard deviation over their seeds (``seeds`` column). The plot shows val
bits/dim against training time, one line per run, one colour per row of the table.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import statistics
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: (column, metrics.json key, digits) of the measured columns, in table order
METRICS = (
    (
        "parameters",
        "num_params",
        0,
    ),  # no +- for these two when the seeds agree (they do unless settings differ)
    ("steps", "step", 0),
    ("wall time (s)", "wall_time_s", 0),
    ("train tokens/s", "tokens_per_s", 0),
    ("val bits/dim", "val_bpd", 4),
    ("test bits/dim", "test_bpd", 4),
)
SEED_KEY = "seed"


@dataclass
class Run:
    """One finished training run: its folder, its ``metrics.json`` and its overrides as ``{key: value}``."""

    path: Path
    metrics: dict[str, Any]
    overrides: dict[str, str]

    @property
    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.overrides.items()) or self.path.name


def parse_overrides(overrides: Iterable[str]) -> dict[str, str]:
    """``["model/attention=fixed", "+a.b=1", "~c"]`` -> ``{"model/attention": "fixed", "+a.b": "1", "~c": ""}``."""
    out = {}
    for item in overrides:
        key, _, value = str(item).partition("=")
        out[key] = value
    return out


def _overrides_of(folder: Path, metrics: Mapping[str, Any]) -> dict[str, str]:
    """The run's overrides: recorded in ``metrics.json``, else Hydra's ``.hydra/overrides.yaml``, else none."""
    if metrics.get("overrides") is not None:
        return parse_overrides(metrics["overrides"])
    hydra_file = folder / ".hydra" / "overrides.yaml"
    if hydra_file.is_file():
        from omegaconf import OmegaConf

        return parse_overrides(OmegaConf.to_container(OmegaConf.load(hydra_file)))  # type: ignore[arg-type]
    return {}


def _job_order(run: Run) -> tuple[Any, ...]:
    sweep = run.metrics.get("sweep") or {}
    return (str(sweep.get("dir", run.path.parent)), int(sweep.get("job", 0)), str(run.path))


def find_runs(paths: Sequence[str | Path]) -> list[Run]:
    """Every finished run in ``paths`` (run folders, or folders above them), in sweep-job order.

    A path without any ``metrics.json`` beneath it raises ``FileNotFoundError`` naming it.
    """
    runs: list[Run] = []
    for given in paths:
        root = Path(given)
        if not root.exists():
            raise FileNotFoundError(f"{root} does not exist")
        files = (
            [root / "metrics.json"]
            if (root / "metrics.json").is_file()
            else sorted(root.rglob("metrics.json"))
        )
        if not files:
            raise FileNotFoundError(
                f"{root} holds no metrics.json: give a training run's folder or a folder above run folders "
                "(e.g. a multirun/DATE/TIME sweep)"
            )
        for file in files:
            metrics = json.loads(file.read_text())
            runs.append(Run(file.parent, metrics, _overrides_of(file.parent, metrics)))
    return sorted(runs, key=_job_order)


def swept_keys(runs: Sequence[Run]) -> list[str]:
    """Override keys whose value is not the same in every run (a key missing from a run counts as a value)."""
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run.overrides if k not in keys]
    return [k for k in keys if len({run.overrides.get(k) for run in runs}) > 1]


def common_overrides(runs: Sequence[Run]) -> dict[str, str]:
    """Overrides every run shares (the sweep's fixed settings)."""
    if not runs:
        return {}
    first = runs[0].overrides
    return {k: v for k, v in first.items() if all(r.overrides.get(k) == v for r in runs[1:])}


def sweep_commands(runs: Sequence[Run]) -> list[str]:
    """The ``-m`` commands that made the runs' sweeps, rebuilt from each sweep folder's ``multirun.yaml``."""
    from omegaconf import OmegaConf

    commands: list[str] = []
    for folder in dict.fromkeys(str((r.metrics.get("sweep") or {}).get("dir", "")) for r in runs):
        path = Path(folder) / "multirun.yaml"
        if not folder or not path.is_file():
            continue
        overrides = OmegaConf.load(path).hydra.overrides
        extra = [o for o in overrides.hydra if o != "hydra.mode=MULTIRUN"]
        commands.append(" ".join(["python scripts/train.py -m", *overrides.task, *extra]))
    return commands


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return None, None
    if len(values) == 1:
        return values[0], None
    return statistics.fmean(values), statistics.stdev(values)  # sample standard deviation (n - 1)


def table(runs: Sequence[Run]) -> dict[str, Any]:
    """The runs as a table (JSON-able): ``{"keys", "common", "rows", "runs"}``.

    Each row: ``settings`` (swept key -> value, ``seed`` left out), ``seeds`` (the seeds merged into the
    row), ``runs`` (their folders) and per measured column ``{"mean", "std"}`` (``std`` None for one run).
    """
    keys = swept_keys(runs)
    setting_keys = [k for k in keys if k != SEED_KEY]
    groups: dict[tuple[Any, ...], list[Run]] = {}
    for run in runs:
        groups.setdefault(tuple(run.overrides.get(k) for k in setting_keys), []).append(run)
    rows = []
    for values, members in groups.items():
        row: dict[str, Any] = {
            "settings": {k: v for k, v in zip(setting_keys, values)},
            "seeds": [m.metrics.get("seed") for m in members],
            "runs": [str(m.path) for m in members],
        }
        for column, key, _ in METRICS:
            mean, std = _mean_std([m.metrics.get(key) for m in members])
            row[column] = {"mean": mean, "std": std}
        rows.append(row)
    loads = [x for r in runs for x in (r.metrics.get("load_average") or []) if x is not None]
    return {
        "keys": setting_keys,
        "common": common_overrides(runs),
        "rows": rows,
        "runs": len(runs),
        "sweeps": sweep_commands(runs),
        "load_average": [min(loads), max(loads)] if loads else None,  # 1-minute, at the runs' starts and ends
    }


def _cell(value: Mapping[str, Any], digits: int, column: str = "") -> str:
    mean, std = value.get("mean"), value.get("std")
    if mean is None:
        return "-"
    text = f"{mean:,.{digits}f}"
    if std is None or (std == 0 and column in ("parameters", "steps")):
        return text
    return f"{text} +- {std:,.{digits}f}"


def markdown(data: Mapping[str, Any]) -> str:
    """The table of :func:`table` in markdown, with the shared overrides in a line above it."""
    multi_seed = any(len(r["seeds"]) > 1 for r in data["rows"])
    header = [*data["keys"], *(["seeds"] if multi_seed else []), *(c for c, _, _ in METRICS)]
    lines = [f"Sweep: `{command}`" for command in data.get("sweeps") or []]
    if lines:
        lines.append("")
    if data["common"]:
        lines += ["Shared by every run: " + " ".join(f"`{k}={v}`" for k, v in data["common"].items()), ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in data["rows"]:
        cells = [f"`{row['settings'][k]}`" if row["settings"][k] is not None else "-" for k in data["keys"]]
        if multi_seed:
            cells.append(", ".join(str(s) for s in row["seeds"]))
        cells += [_cell(row[c], digits, c) for c, _, digits in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    if data.get("load_average"):
        low, high = data["load_average"]
        lines += ["", f"Load average (1 minute) at the starts and ends of the runs: {low:.1f} to {high:.1f}."]
    return "\n".join(lines) + "\n"


def to_csv(data: Mapping[str, Any]) -> str:
    """The table as CSV: the swept keys, ``seeds``, then ``COLUMN`` and ``COLUMN std`` per measured column."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*data["keys"], "seeds", *(x for c, _, _ in METRICS for x in (c, f"{c} std"))])
    for row in data["rows"]:
        values = [row[c][part] for c, _, _ in METRICS for part in ("mean", "std")]
        writer.writerow(
            [
                *(row["settings"][k] for k in data["keys"]),
                " ".join(str(s) for s in row["seeds"]),
                *("" if v is None else v for v in values),
            ]
        )
    return out.getvalue()


def plot(runs: Sequence[Run], path: str | Path, title: str | None = None) -> Path:
    """Val bits/dim of each run (its ``val_curve``) against the training sequences seen (left; the same for
    any machine) and against training time (right; depends on the machine and its load), one colour per
    row of the table (seeds of one setting share it); saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in swept_keys(runs) if k != SEED_KEY]
    colours = plt.get_cmap("tab10").colors
    styles = ["-", "--", ":", "-."]
    fig, (by_data, by_time) = plt.subplots(1, 2, figsize=(11, 4.6), sharey=True)
    seen: dict[tuple[Any, ...], Any] = {}
    for run in runs:
        setting = tuple(run.overrides.get(k) for k in keys)
        curve = run.metrics.get("val_curve") or []
        if not curve:
            continue
        first = setting not in seen
        index = seen.setdefault(setting, len(seen))
        style = {
            "color": colours[index % len(colours)],
            "linestyle": styles[(index // len(colours)) % len(styles)],
            "marker": "o",
            "markersize": 3,
        }
        label = " ".join(f"{_short(k)}={v}" for k, v in zip(keys, setting) if v is not None) or run.label
        values = [p["val_bpd"] for p in curve]
        by_data.plot(
            [p.get("sequences", p["step"]) for p in curve], values, label=label if first else None, **style
        )
        by_time.plot([p["time_s"] for p in curve], values, **style)
    if not seen:
        plt.close(fig)
        raise ValueError(
            "no run has a val_curve (runs recorded by zoo.run_record with trainer.eval_every > 0)"
        )
    by_data.set_xlabel("training sequences seen")
    by_data.set_ylabel("val bits/dim")
    by_time.set_xlabel("training time (s, evaluations excluded)")
    for ax in (by_data, by_time):
        ax.grid(alpha=0.3)
    fig.suptitle(title or "val bits/dim while training")
    rows = -(-len(seen) // 2)  # the legend below both panels, two columns: it never hides a curve
    fig.set_size_inches(11, 4.6 + 0.22 * rows)
    fig.legend(loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.04 * rows + 0.02, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _short(key: str) -> str:
    """``model.attention.stride`` -> ``stride``, ``model/attention`` -> ``attention``: legend labels."""
    return key.replace("/", ".").split(".")[-1]


def build_parser(prog: str = "python -m zoo.results") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description=__doc__.split("\n")[0],
        epilog="Example: python scripts/collect.py multirun/2025-06-01/21-34-30 --plot sweep.png",
    )
    p.add_argument("dirs", nargs="+", metavar="DIR", help="run folders or folders above them (sweeps)")
    p.add_argument("--csv", metavar="PATH", help="also write the table as CSV")
    p.add_argument("--markdown", metavar="PATH", help="also write the markdown table to a file")
    p.add_argument("--plot", metavar="PATH", help="also draw val bits/dim against training time (PNG)")
    return p


def collect(args: argparse.Namespace) -> tuple[list[Run], dict[str, Any]]:
    """Find the runs, print the table and write the files the options ask for."""
    runs = find_runs(args.dirs)
    data = table(runs)
    text = markdown(data)
    print(f"{len(runs)} run(s) in {', '.join(str(d) for d in args.dirs)}\n")
    print(text)
    for option, content in (("csv", to_csv(data)), ("markdown", text)):
        target = getattr(args, option)
        if target:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            Path(target).write_text(content)
            print(f"wrote {target}")
    if args.plot:
        print(f"wrote {plot(runs, args.plot)}")
    return runs, data


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        collect(args)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
