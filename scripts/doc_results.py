"""Generated numbers for the README and the docs: script outputs in ``docs/results/``, rendered as markdown.

Every number the README and the docs show comes from a script's JSON output, never typed:

1. A script that measures something writes ``docs/results/NAME.json`` with :func:`save`. The file
   records the command line, the date, the machine and the script's ``data``, and names its renderer:
   ``"renderer": "MODULE:FUNCTION"``, a function of a module in ``scripts/`` that takes the ``data``
   and returns a markdown string or a dict of named markdown strings.
2. A page says where a table goes with a marker: ``<!-- gen:result NAME -->`` (the renderer's only or
   ``main`` table) or ``<!-- gen:result NAME.TABLE -->`` (one of its named tables). The MkDocs hook
   (``docs/hooks/generate.py``) replaces each marker when the site is built.
3. The README is not built, so its generated blocks sit between a marker and ``<!-- /gen:result -->``;
   ``python scripts/doc_results.py --readme`` rewrites them from the JSON files and
   ``python scripts/doc_results.py --check`` fails (exit 1) when the README is out of date or a marker
   in the docs names a result that is missing (``tests/test_doc_results.py`` runs the check).

Each rendered table is followed by a line naming the command and the date it was measured on,
unless the renderer returns ``{"...": ..., "_footer": False}``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "docs" / "results"
README = REPO / "README.md"
DOCS_DIR = REPO / "docs"

#: ``<!-- gen:result NAME -->`` or ``<!-- gen:result NAME.TABLE -->``
MARKER = re.compile(r"<!-- gen:result ([A-Za-z0-9_\-]+)(?:\.([A-Za-z0-9_\-]+))? -->")
END_MARKER = "<!-- /gen:result -->"
# a README block: the marker, anything, the end marker (non-greedy)
README_BLOCK = re.compile(
    r"(<!-- gen:result ([A-Za-z0-9_\-]+)(?:\.([A-Za-z0-9_\-]+))? -->)(.*?)(" + re.escape(END_MARKER) + ")",
    re.S,
)


def _machine() -> str:
    scripts = str(REPO / "scripts")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)
    try:
        from bench_common import machine

        return machine()
    except Exception:  # pragma: no cover - the machine line is informative only
        import platform

        return platform.platform()


def save(name: str, data: Any, renderer: str, command: str | None = None, path: str | Path | None = None) -> Path:
    """Write ``docs/results/NAME.json`` (or ``path``): ``data`` plus the command, date, machine and renderer.

    ``renderer`` is ``"MODULE:FUNCTION"`` of a module in ``scripts/`` (e.g. ``"benchmark_attention:markdown"``).
    ``command`` defaults to this process's command line.
    """
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
        raise ValueError(f"result name must be letters, digits, '_' or '-', got {name!r}")
    if ":" not in renderer:
        raise ValueError(f"renderer must be 'MODULE:FUNCTION' of a module in scripts/, got {renderer!r}")
    if command is None:
        argv = list(sys.argv)
        if argv and argv[0].endswith(".py"):
            try:
                argv[0] = str(Path(argv[0]).resolve().relative_to(REPO))
            except ValueError:
                pass
            argv.insert(0, "python")
        command = shlex.join(argv)
    record = {
        "name": name,
        "command": command,
        "date": _dt.date.today().isoformat(),
        "machine": _machine(),
        "renderer": renderer,
        "data": data,
    }
    target = Path(path) if path is not None else RESULTS_DIR / f"{name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(record, indent=1, default=float) + "\n")
    return target


def load(name: str) -> dict[str, Any]:
    """The record of ``docs/results/NAME.json``; ``FileNotFoundError`` naming the file if it is missing."""
    path = RESULTS_DIR / f"{name}.json"
    if not path.is_file():
        shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
        raise FileNotFoundError(
            f"{shown} does not exist: run the script that writes result {name!r} "
            "(see the command of the page that shows it)"
        )
    return json.loads(path.read_text())


def _renderer(spec: str):
    module_name, func = spec.split(":", 1)
    scripts = str(REPO / "scripts")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)
    return getattr(importlib.import_module(module_name), func)


def render(name: str, table: str | None = None) -> str:
    """The markdown for marker ``NAME`` / ``NAME.TABLE``, with a line naming its command and date."""
    record = load(name)
    out = _renderer(record["renderer"])(record["data"])
    footer = True
    if isinstance(out, dict):
        footer = out.get("_footer", True)
        key = table or "main"
        if key not in out:
            raise KeyError(
                f"result {name!r} has no table {key!r}; its tables are {sorted(k for k in out if k != '_footer')}"
            )
        out = out[key]
    elif table is not None:
        raise KeyError(f"result {name!r} has a single table; write <!-- gen:result {name} -->")
    out = out.rstrip("\n")
    if footer:
        out += f"\n\n<small>Generated from `docs/results/{name}.json`: `{record['command']}` ({record['date']}).</small>"
    return out


def render_markers(markdown: str) -> str:
    """Replace every ``<!-- gen:result ... -->`` marker of a docs page by its rendered markdown."""
    return MARKER.sub(lambda m: render(m.group(1), m.group(2)), markdown)


def update_readme(text: str) -> str:
    """``text`` (the README) with every generated block rewritten from the JSON files."""

    def block(m: re.Match) -> str:
        return f"{m.group(1)}\n{render(m.group(2), m.group(3))}\n{m.group(5)}"

    return README_BLOCK.sub(block, text)


def check() -> list[str]:
    """Problems: README blocks out of date, markers naming missing results or tables (empty = fine)."""
    problems = []
    text = README.read_text()
    try:
        if update_readme(text) != text:
            problems.append("README.md: a generated block is out of date (run python scripts/doc_results.py --readme)")
    except (FileNotFoundError, KeyError) as err:
        problems.append(f"README.md: {err}")
    for page in sorted(DOCS_DIR.rglob("*.md")):
        for m in MARKER.finditer(page.read_text()):
            try:
                render(m.group(1), m.group(2))
            except (FileNotFoundError, KeyError) as err:
                problems.append(f"{page.relative_to(REPO)}: {err}")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--readme", action="store_true", help="rewrite the README's generated blocks")
    p.add_argument("--check", action="store_true", help="exit 1 if the README or a docs marker is out of date")
    p.add_argument("--show", metavar="NAME[.TABLE]", help="print one result's markdown")
    args = p.parse_args(argv)
    if args.show:
        name, _, table = args.show.partition(".")
        print(render(name, table or None))
    if args.readme:
        README.write_text(update_readme(README.read_text()))
        print(f"rewrote the generated blocks of {README.relative_to(REPO)}")
    if args.check:
        problems = check()
        for line in problems:
            print(line, file=sys.stderr)
        if problems:
            return 1
        print("README and docs markers are up to date")
    if not (args.show or args.readme or args.check):
        p.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
