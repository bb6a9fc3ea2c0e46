"""Sampling speed: the key/value-cached, sparse-aware decoder (zoo.generate) vs the reference sampler.

Three tables, measured in one run (cached cases interleaved, medians of ``--repeats``):

* **speedup** - one image sampled from scratch by the reference sampler (:func:`zoo.sampling.sample`:
  the whole prefix re-run for every byte) and by :func:`zoo.generate.generate`: a 784-byte
  Fashion-MNIST image with the default model (``strided``), a 3072-byte CIFAR-10-shaped image with
  ``cifar10_paper`` cut to 2 layers (Child et al. 2019 §7). Wall time and this process's CPU time
  (on a shared CPU the decoder's many small operations lose more wall time to other processes than
  the reference's large ones: the CPU-time ratio is what an idle core gives);
* **batch** - 16 completions of 784-byte images with the default model (392 bytes given, 392 sampled);
* **patterns** - bytes/s of the decoder for strided, fixed, local and dense attention at n = 784
  (default model, 16 sequences) and n = 3072 (2-layer ``cifar10_paper``, 1 sequence), with the
  memory of the key/value cache (the local pattern keeps a window only).

Weights are the §6 initialisation (the speed does not depend on them). ``--backend`` is the attention
backend of the forward passes (the reference's, and the decoder's prefill); the decoder's steps read
the cache directly. Writes ``docs/results/sampling.json`` (``scripts/doc_results.py``) unless ``--no-save``::

    python scripts/benchmark_sampling.py                 # everything (the reference at n = 3072 takes minutes)
    python scripts/benchmark_sampling.py --no-reference  # decoder tables only
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "scripts"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_common import interleaved_medians, machine, table  # noqa: E402

from zoo import registry  # noqa: E402
from zoo.generate import Decoder, generate  # noqa: E402
from zoo.sampling import sample  # noqa: E402

IMAGES = {  # name -> (registry variant, overrides)
    "Fashion-MNIST 28x28 (default model)": ("strided", {}),
    "CIFAR-10 32x32x3 (cifar10_paper, 2 layers)": ("cifar10_paper", {"n_layer": 2, "dropout": 0.0}),
}
PATTERNS = {  # name -> attention config, per sequence length
    784: {
        "strided": {"name": "strided", "stride": 28, "mode": "split"},
        "fixed": {"name": "fixed", "stride": 28, "c": 4, "mode": "split"},
        "local": {"name": "local", "window": 28},
        "dense": {"name": "dense"},
    },
    3072: {
        "strided": {"name": "strided", "stride": 96, "mode": "split"},
        "fixed": {"name": "fixed", "stride": 96, "c": 8, "mode": "split"},
        "local": {"name": "local", "window": 96},
        "dense": {"name": "dense"},
    },
}


def build(variant: str, backend: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return registry.build(variant, attention_backend=backend, **overrides).eval()


def cache_bytes(model: torch.nn.Module, num: int) -> int:
    """Memory of the key/value cache after decoding a whole sequence of ``num`` rows."""
    dec = Decoder(model, num)
    with torch.no_grad():
        dec.prefill(torch.zeros((num, model.config.seq_len - 1), dtype=torch.long))
    return dec.cache.memory_bytes()


def run_generate(model, num: int, prompt_len: int = 0):
    prompt = torch.zeros((num, prompt_len), dtype=torch.long) if prompt_len else None
    return lambda: generate(model, num, prompt=prompt, generator=torch.Generator().manual_seed(0))


def speedup_rows(args) -> list[dict]:
    rows = []
    models = {name: build(v, args.backend, **o) for name, (v, o) in IMAGES.items()}
    cached, _ = interleaved_medians(
        {name: run_generate(m, 1) for name, m in models.items()}, args.repeats, torch.device("cpu")
    )
    for name, model in models.items():
        row = {"image": name, "bytes": model.config.seq_len, "cached_s": cached[name], "reference_s": None}
        tic = time.process_time()  # CPU time of this process: what the same work takes on an idle core
        run_generate(model, 1)()
        row["cached_cpu_s"] = time.process_time() - tic
        if not args.no_reference:
            tic, cpu = time.perf_counter(), time.process_time()
            sample(model, 1, generator=torch.Generator().manual_seed(0))
            row["reference_s"] = time.perf_counter() - tic
            row["reference_cpu_s"] = time.process_time() - cpu
            row["speedup"] = row["reference_s"] / row["cached_s"]
            row["cpu_speedup"] = row["reference_cpu_s"] / row["cached_cpu_s"]
        rows.append(row)
        print(
            f"  {name}: cached {row['cached_s']:.2f} s ({row['cached_cpu_s']:.2f} s CPU), reference "
            f"{row['reference_s'] or float('nan'):.1f} s ({row.get('reference_cpu_s', float('nan')):.1f} s CPU)",
            flush=True,
        )
    return rows


def batch_rows(args) -> list[dict]:
    model = build("strided", args.backend)
    times, _ = interleaved_medians(
        {"complete": run_generate(model, 16, 392)}, args.repeats, torch.device("cpu")
    )
    s = times["complete"]
    return [
        {
            "case": "16 completions of 784-byte images (392 given)",
            "seconds": s,
            "bytes_per_s": 16 * 392 / s,
            "target_s": 2.0,
        }
    ]


def pattern_rows(args) -> list[dict]:
    rows = []
    for n, patterns in PATTERNS.items():
        variant, overrides, num = (
            ("strided", {}, 16) if n == 784 else ("cifar10_paper", IMAGES[list(IMAGES)[1]][1], 1)
        )
        models = {p: build(variant, args.backend, attention=cfg, **overrides) for p, cfg in patterns.items()}
        times, _ = interleaved_medians(
            {p: run_generate(m, num) for p, m in models.items()}, args.repeats, torch.device("cpu")
        )
        for p, model in models.items():
            rows.append(
                {
                    "n": n,
                    "pattern": p,
                    "sequences": num,
                    "seconds": times[p],
                    "bytes_per_s": num * n / times[p],
                    "cache_mib": cache_bytes(model, num) / 2**20,
                }
            )
            print(f"  n={n} {p}: {rows[-1]['bytes_per_s']:,.0f} bytes/s", flush=True)
    return rows


def markdown(data: dict) -> dict[str, str]:
    """Tables ``main`` (speedup), ``batch`` and ``patterns`` of ``docs/results/sampling.json``."""

    def cell(r: dict, key: str, fmt: str, unit: str = "") -> str:
        return "-" if r.get(key) is None else format(r[key], fmt) + unit

    main = table(
        [
            "image",
            "bytes",
            "reference sampler (s)",
            "cached decoder (s)",
            "speedup",
            "CPU time: reference / cached (s)",
            "CPU-time speedup",
        ],
        [
            [
                r["image"],
                f"{r['bytes']:,}",
                cell(r, "reference_s", ".1f"),
                cell(r, "cached_s", ".2f"),
                cell(r, "speedup", ".0f", "x"),
                f"{cell(r, 'reference_cpu_s', '.1f')} / {cell(r, 'cached_cpu_s', '.2f')}",
                cell(r, "cpu_speedup", ".0f", "x"),
            ]
            for r in data["speedup"]
        ],
    )
    batch = table(
        ["case", "time (s)", "bytes/s", "target"],
        [
            [r["case"], f"{r['seconds']:.2f}", f"{r['bytes_per_s']:,.0f}", f"<= {r['target_s']:.0f} s"]
            for r in data["batch"]
        ],
    )
    patterns = table(
        ["n", "pattern", "sequences", "time (s)", "bytes/s", "key/value cache (MiB)"],
        [
            [
                f"{r['n']:,}",
                r["pattern"],
                str(r["sequences"]),
                f"{r['seconds']:.2f}",
                f"{r['bytes_per_s']:,.0f}",
                f"{r['cache_mib']:.2f}",
            ]
            for r in data["patterns"]
        ],
    )
    note = f"\n\n{data['machine']}, {data['load_end']:.1f} at the end; attention backend `{data['backend']}`."
    return {"main": main + note, "batch": batch + note, "patterns": patterns + note}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--backend", default="auto", help="attention backend of the forward passes (default: auto)"
    )
    p.add_argument("--repeats", type=int, default=3, help="rounds of the cached cases (medians)")
    p.add_argument("--no-reference", action="store_true", help="skip the (slow) reference sampler")
    p.add_argument("--no-save", action="store_true", help="do not write docs/results/sampling.json")
    args = p.parse_args(argv)
    data = {"backend": args.backend, "load_start": os.getloadavg()[0], "machine": machine()}
    print(f"sampling benchmark ({data['machine']})", flush=True)
    print("speedup (one image from scratch):", flush=True)
    data["speedup"] = speedup_rows(args)
    print("batch:", flush=True)
    data["batch"] = batch_rows(args)
    print("patterns:", flush=True)
    data["patterns"] = pattern_rows(args)
    data["load_end"] = os.getloadavg()[0]
    tables = markdown(data)
    for name in ("main", "batch", "patterns"):
        print(f"\n{tables[name]}")
    if not args.no_save:
        from doc_results import save

        print(f"\nwrote {save('sampling', data, renderer='benchmark_sampling:markdown')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
