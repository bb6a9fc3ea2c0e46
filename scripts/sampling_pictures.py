"""The pictures of docs/sampling.md, from a checkpoint of the default recipe: one command, reproducible.

    python scripts/sampling_pictures.py outputs/DATE/TIME      # or: make pictures CHECKPOINT=outputs/DATE/TIME

Writes ``docs/img/sampling_complete.png`` (8 Fashion-MNIST test images: top half given, 2 completions
each, the originals) and ``docs/img/sampling_unconditional.png`` (16 samples), both with seed 0 through
:func:`zoo.samples.run_sampling` (what ``scripts/sample.py`` runs), and ``docs/results/sampling_pictures.json``
(the checkpoint's step and test bits/dim, the settings and the bytes/s), rendered as the caption.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "scripts"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from zoo.samples import run_sampling  # noqa: E402

PICTURES = {
    "complete": {"mode": "complete", "num": 8, "completions": 2, "seed": 0, "scale": 3},
    "unconditional": {"mode": "unconditional", "num": 16, "nrow": 8, "seed": 0, "scale": 3},
}


def caption(data: dict) -> dict:
    """One line per picture: the checkpoint and the settings that made it."""
    lines = []
    for name, r in data["pictures"].items():
        options = ", ".join(f"{k}={v}" for k, v in PICTURES[name].items())
        lines.append(
            f"`{r['file']}`: `scripts/sample.py {options.replace(', ', ' ')}` on the default run's checkpoint "
            f"(step {data['step']}, test {data['test_bpd']:.3f} bits/dim), {r['bytes_per_s']:,.0f} bytes/s."
        )
    return {"main": "\n\n".join(lines)}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    checkpoint = argv[0]
    data: dict = {"checkpoint": checkpoint, "pictures": {}}
    for name, options in PICTURES.items():
        out = ROOT / "docs" / "img" / f"sampling_{name}.png"
        result = run_sampling({"checkpoint": checkpoint, "out": str(out), **options})
        data["step"] = result["step"]
        data["pictures"][name] = {"file": str(out.relative_to(ROOT)), "bytes_per_s": result["bytes_per_s"]}
        print(f"wrote {out} ({result['bytes_per_s']:,.0f} bytes/s)")
    run = Path(result["checkpoint"]).parent.parent / "metrics.json"
    data["test_bpd"] = json.loads(run.read_text())["test_bpd"] if run.is_file() else float("nan")
    from doc_results import save

    print(f"wrote {save('sampling_pictures', data, renderer='sampling_pictures:caption')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
