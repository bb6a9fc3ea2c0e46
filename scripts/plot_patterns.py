"""Write one PNG per registered attention pattern (paper Figure 3 style) for the docs.

Each picture shows, per distinct head, the connectivity matrix of a short sequence and, on a square
image grid, which pixels the middle output attends to (Child et al. 2019, §4, Figure 3)::

    python scripts/plot_patterns.py --out docs/assets/patterns        # all patterns, 16 x 16 image
    python scripts/plot_patterns.py --names strided fixed --side 32   # some patterns, 32 x 32 image

The configurations are small versions of the defaults chosen so that the structure is visible:
stride / row width / block size equal to the image side. Patterns registered later without an entry
in ``SMALL_CONFIGS`` get their defaults with these size fields shrunk the same way.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import attention_patterns as ap

#: per-pattern overrides; ``{side}`` placeholders are filled with the image side
SMALL_CONFIGS: dict[str, dict] = {
    "dense": {},
    "local": {"window": "{side}"},
    "strided": {"stride": "{side}", "num_heads": 2},
    "fixed": {"stride": "{side}", "c": "{quarter}", "num_heads": 2},
    "axial": {"width": "{side}", "height": "{side}", "num_heads": 2},
    "bigbird": {"block_size": "{half}", "window_blocks": 3, "global_blocks": 1, "random_blocks": 2},
    "longformer": {"block_size": "{half}", "window_blocks": 3, "global_block_indices": [0, "{side}"]},
    "variable": {
        "block_size": "{half}",
        "local_window_blocks": [2, 4, 6],
        "global_block_indices": [0],
        "num_random_blocks": 1,
    },
    "block_local": {"block_size": "{half}", "window_blocks": 3},
}
#: fields shrunk for patterns without an entry above
SIZE_FIELDS = ("stride", "width", "window", "block_size")


def small_config(name: str, side: int) -> dict:
    """A small configuration of pattern ``name`` for a ``side x side`` image."""
    sizes = {"side": side, "half": side // 2, "quarter": side // 4}
    if name in SMALL_CONFIGS:
        over = SMALL_CONFIGS[name]
    else:
        fields = {f.name for f in dataclasses.fields(ap.get_config(name))}
        over = {k: "{side}" for k in SIZE_FIELDS if k in fields}

    def fill(v):
        if isinstance(v, list):
            return [fill(x) for x in v]
        return int(v.format(**sizes)) if isinstance(v, str) else v

    return {"name": name, **{k: fill(v) for k, v in over.items()}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/assets/patterns"), help="output folder")
    parser.add_argument("--side", type=int, default=16, help="image side: n = side * side (default 16)")
    parser.add_argument(
        "--names", nargs="*", default=None, help="patterns to draw (default: every registered one)"
    )
    parser.add_argument("--dpi", type=int, default=120, help="resolution of the PNGs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[Path]:
    args = parse_args(argv)
    if args.side < 4:
        raise SystemExit(f"--side must be >= 4, got {args.side}")
    names = args.names or ap.list_attentions()
    for name in names:
        ap.get_config(name)  # unknown names fail early, listing the known ones
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    n = args.side * args.side
    for name in names:
        cfg = small_config(name, args.side)
        fig = ap.plot(cfg, n, image_shape=(args.side, args.side))
        path = args.out / f"{name}.png"
        fig.savefig(path, dpi=args.dpi)
        written.append(path)
        print(f"{path}  {cfg}")
    return written


if __name__ == "__main__":
    main()
