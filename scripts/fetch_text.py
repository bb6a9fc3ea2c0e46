"""Fetch the text excerpt of ``data=wikipedia_excerpt`` (``make data-text``): 6 MB of Wikipedia XML (CC BY-SA)
that gensim's wheel on PyPI ships as test data, checked and written into ``$ZOO_DATA_ROOT/wikipedia_excerpt/``.

    python scripts/fetch_text.py                        # pip download gensim==4.4.0 --no-deps, then extract
    python scripts/fetch_text.py --wheel gensim-4.4.0-py3-none-any.whl   # a wheel you already have
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from zoo.data.wikipedia_excerpt import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(prog="python scripts/fetch_text.py"))
