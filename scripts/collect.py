"""Collect training runs and sweeps into one table (markdown / CSV) and a plot of bits/dim against time.

    python scripts/collect.py multirun/2025-06-01/21-34-30              # the table of a -m sweep
    python scripts/collect.py outputs/ --csv runs.csv --plot runs.png    # every run under outputs/
    python scripts/collect.py SWEEP --save ablation_tutorial             # for the docs (see below)

One row per setting of the swept keys (the overrides that differ between runs), mean +- std over seeds
when the same setting ran with several; :mod:`zoo.results` does the work (also ``python -m zoo.results``).
``--save NAME`` also writes ``docs/results/NAME.json`` (shown by ``<!-- gen:result NAME -->`` markers,
:mod:`doc_results`) and the plot ``docs/img/NAME.png``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import doc_results  # noqa: E402

from zoo import results  # noqa: E402


def render(data: dict[str, Any]) -> str:
    """Renderer of ``docs/results/NAME.json`` (:mod:`doc_results`): the collected table in markdown."""
    return results.markdown(data["table"])


def main(argv: list[str] | None = None) -> int:
    parser = results.build_parser(prog="python scripts/collect.py")
    parser.description = __doc__.split("\n")[0]
    parser.add_argument(
        "--save",
        metavar="NAME",
        help="also write docs/results/NAME.json (the table, for <!-- gen:result NAME --> markers) and docs/img/NAME.png",
    )
    args = parser.parse_args(argv)
    if args.save and not args.plot:
        args.plot = str(REPO / "docs" / "img" / f"{args.save}.png")
    try:
        runs, table = results.collect(args)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.save:
        for row in table["rows"]:  # folders of this machine's sweep: not useful in the docs
            row.pop("runs", None)
        plot = Path(args.plot).resolve()
        data = {
            "table": table,
            "plot": str(plot.relative_to(REPO)) if plot.is_relative_to(REPO) else str(plot),
        }
        print(f"wrote {doc_results.save(args.save, data, renderer='collect:render')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
