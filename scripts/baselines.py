"""Bits per dim of general-purpose compressors and an order-k context model on each data set's test split.

    python scripts/baselines.py                                    # every data set whose files are here
    python scripts/baselines.py --data fashion_mnist wikipedia_excerpt --max-order 4

Each data set is built from its ``configs/data/<name>.yaml`` (nothing is downloaded); one whose files are
missing is listed as not measured. For each: gzip -9, bz2 -9 and xz -9e conditioned on the training split
(``|C(train + test)| - |C(train)|``), and order-0..k byte context models with Witten-Bell smoothing counted on
the training split, with the order chosen on the validation split (``zoo/baselines.py`` says how). At most
``--max-train-bytes`` training bytes are used (64 MiB, xz -9e's dictionary: a compressor cannot reach
further back); the small data sets use all of theirs. Writes ``docs/results/baselines.json``, shown with
``<!-- gen:result baselines -->`` (and ``baselines.context``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import doc_results  # noqa: E402

DATASETS = ["fashion_mnist", "wikipedia_excerpt", "cifar10", "imagenet64", "enwik8", "audio"]
NO_DOWNLOAD = {"download": False}  # data sets that would otherwise fetch their files


def load_split_arrays(name: str, max_train_bytes: int):
    """``(train, val, test, bits_per, info)`` arrays of data config ``name``; DataNotFoundError if absent."""
    from omegaconf import OmegaConf

    from zoo.baselines import split_array
    from zoo.data import build_data

    options = OmegaConf.to_container(OmegaConf.load(REPO / "configs" / "data" / f"{name}.yaml"), resolve=True)
    if "download" in options:
        options.update(NO_DOWNLOAD)
    bundle = build_data(options.pop("name"), **options)
    stream = bundle.info.get("bits_per") == "byte" and "split_bytes" in bundle.info
    keep = "last" if stream else "first"
    train = split_array(bundle.train, max_train_bytes, keep=keep)
    return (
        train,
        split_array(bundle.val),
        split_array(bundle.test),
        bundle.info.get("bits_per", "dim"),
        bundle,
    )


def measure(name: str, max_order: int, max_train_bytes: int, log=print) -> dict:
    from zoo.baselines import COMPRESSORS, ContextModel, compressor_bits
    from zoo.data.common import DataNotFoundError

    try:
        train, val, test, bits_per, bundle = load_split_arrays(name, max_train_bytes)
    except (DataNotFoundError, FileNotFoundError) as err:
        message = str(err).splitlines()[0].replace(f"{Path.cwd()}{os.sep}", "")  # paths relative to here
        log(f"{name}: not measured ({message})")
        return {"name": name, "missing": message}
    row = {
        "name": name,
        "bits_per": bits_per,
        "seq_len": int(bundle.seq_len),
        "train_bytes": int(train.size),
        "val_bytes": int(val.size),
        "test_bytes": int(test.size),
        "compressors": {},
    }
    tr, te = train.tobytes(), test.tobytes()
    for cname in COMPRESSORS:
        tic = time.perf_counter()
        row["compressors"][cname] = compressor_bits(tr, te, cname)
        log(
            f"{name}: {cname} {row['compressors'][cname]:.4f} bits/{bits_per} ({time.perf_counter() - tic:.0f} s)"
        )
    tic = time.perf_counter()
    model = ContextModel(train, max_order)
    val_bits, test_bits = model.bits(val), model.bits(test)
    best = min(range(max_order + 1), key=lambda k: val_bits[k])
    row["context"] = {
        "orders": list(range(max_order + 1)),
        "val": val_bits,
        "test": test_bits,
        "chosen_order": best,
    }
    log(
        f"{name}: order-{best} context model {test_bits[best]:.4f} bits/{bits_per} "
        f"(orders 0..{max_order}: {time.perf_counter() - tic:.0f} s)"
    )
    return row


def _f(x: float) -> str:
    return f"{x:.2f}"


def markdown(data: dict) -> dict:
    """``main``: one row per data set; ``context``: val and test bits of every context-model order."""
    rows = [r for r in data["datasets"] if "missing" not in r]
    missing = [r["name"] for r in data["datasets"] if "missing" in r]
    names = list(rows[0]["compressors"]) if rows else []
    head = "| data set (test split) | test bytes | " + " | ".join(names) + " | order-k context model |"
    out = [head, "|---|---|" + "---|" * len(names) + "---|"]
    for r in rows:
        c = r["context"]
        k = c["chosen_order"]
        cells = " | ".join(_f(r["compressors"][n]) for n in names)
        out.append(
            f"| `{r['name']}` (bits/{r['bits_per']}) | {r['test_bytes']:,} | {cells} | {_f(c['test'][k])} (k = {k}) |"
        )
    main = "\n".join(out)
    if missing:
        main += (
            "\n\nNot measured (no files where the data configs look): "
            + ", ".join(f"`{m}`" for m in missing)
            + "."
        )
    ctx = []
    for r in rows:
        c = r["context"]
        ctx.append(f"| `{r['name']}` val | " + " | ".join(_f(v) for v in c["val"]) + " |")
        ctx.append(f"| `{r['name']}` test | " + " | ".join(_f(v) for v in c["test"]) + " |")
    orders = max((len(r["context"]["orders"]) for r in rows), default=0)
    context = "\n".join(
        ["| split | " + " | ".join(f"k = {k}" for k in range(orders)) + " |", "|---|" + "---|" * orders, *ctx]
    )
    return {"main": main, "context": context}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", default=DATASETS, help="data configs (configs/data/NAME.yaml)")
    p.add_argument("--max-order", type=int, default=5, help="largest context-model order k (<= 6)")
    p.add_argument("--max-train-bytes", type=int, default=64 * 2**20)
    p.add_argument("--out", default=None, help="write the JSON here instead of docs/results/baselines.json")
    args = p.parse_args(argv)
    rows = [measure(name, args.max_order, args.max_train_bytes) for name in args.data]
    notes = {
        "compressors": "conditioned on the training split: 8 (|C(train + test)| - |C(train)|) / test bytes",
        "context": "order-k byte model, counts from the training split, interpolated Witten-Bell smoothing "
        "down to uniform; k chosen on the validation split",
        "max_train_bytes": args.max_train_bytes,
    }
    path = doc_results.save(
        "baselines", {"datasets": rows, "notes": notes}, "baselines:markdown", path=args.out
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
