"""The pictures of docs/sampling.md, from a checkpoint of the default recipe: one command, reproducible.

    python scripts/sampling_pictures.py outputs/DATE/TIME      # or: make pictures CHECKPOINT=outputs/DATE/TIME
    python scripts/sampling_pictures.py RUN --name fashion_mnist_1h --label "the one-hour run's checkpoint"

Writes ``docs/img/sampling_complete.png`` (8 Fashion-MNIST test images: top half given, 2 completions
each, the originals) and ``docs/img/sampling_unconditional.png`` (16 samples), both with seed 0 through
:func:`zoo.samples.run_sampling` (what ``scripts/sample.py`` runs), and ``docs/results/sampling_pictures.json``
(the checkpoint's step and test bits/dim, the settings and the bytes/s), rendered as the caption.
``--name NAME`` writes ``docs/img/NAME_complete.png``, ``docs/img/NAME_unconditional.png`` and
``docs/results/NAME_pictures.json`` instead (another model's pictures); ``--label`` names the checkpoint
in the caption.
"""

from __future__ import annotations

import argparse
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


DEFAULT_LABEL = "the default run's checkpoint"


def caption(data: dict) -> dict:
    """One line per picture: the checkpoint and the settings that made it."""
    lines = []
    for name, r in data["pictures"].items():
        options = ", ".join(f"{k}={v}" for k, v in PICTURES[name].items())
        lines.append(
            f"`{r['file']}`: `scripts/sample.py {options.replace(', ', ' ')}` on {data.get('label', DEFAULT_LABEL)} "
            f"(step {data['step']}, test {data['test_bpd']:.3f} bits/dim), {r['bytes_per_s']:,.0f} bytes/s."
        )
    return {"main": "\n\n".join(lines)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a run folder or a checkpoint file")
    parser.add_argument("--name", default="sampling", help="file prefix: docs/img/NAME_*.png (default: sampling)")
    parser.add_argument("--label", default=DEFAULT_LABEL, help="how the caption names the checkpoint")
    parser.add_argument("--root", default=str(ROOT), help=argparse.SUPPRESS)  # tests write elsewhere
    args = parser.parse_args(argv)
    root = Path(args.root)
    data: dict = {"checkpoint": args.checkpoint, "label": args.label, "pictures": {}}
    for name, options in PICTURES.items():
        out = root / "docs" / "img" / f"{args.name}_{name}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        result = run_sampling({"checkpoint": args.checkpoint, "out": str(out), **options})
        data["step"] = result["step"]
        data["pictures"][name] = {"file": str(out.relative_to(root)), "bytes_per_s": result["bytes_per_s"]}
        print(f"wrote {out} ({result['bytes_per_s']:,.0f} bytes/s)")
    run = Path(result["checkpoint"]).parent.parent / "metrics.json"
    data["test_bpd"] = json.loads(run.read_text())["test_bpd"] if run.is_file() else float("nan")
    from doc_results import save

    results = "sampling_pictures" if args.name == "sampling" else f"{args.name}_pictures"
    path = save(results, data, renderer="sampling_pictures:caption", path=root / "docs" / "results" / f"{results}.json")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
