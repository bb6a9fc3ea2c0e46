"""Memory saved by recomputation (Child et al. 2019 §5.4): ``model.checkpoint_every`` on vs off.

For each setting, one training step (forward + backward) of a registry model is measured two ways:

* **saved activations**: the bytes autograd keeps for the backward pass, counted exactly with
  ``torch.autograd.graph.saved_tensors_hooks`` (distinct storages only). With recomputation, a block
  keeps only its input; everything inside is recomputed in the backward pass.
* **peak RSS growth**: in a fresh subprocess (glibc returning freed memory to the OS), the peak resident
  memory during the step minus the resident memory before it, after a warm-up step
  (``bench_common.measure_here``: what the machine actually had to provide; noisier).

Example (the table in docs/training.md is generated from its ``--save`` output)::

    python scripts/benchmark_recompute.py --model cifar10_paper --layers 8 --seq-len 3072 --batch 1 --save recompute
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from zoo import registry  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
import doc_results  # noqa: E402
from bench_common import MALLOC_ENV, machine, measure_here  # noqa: E402


def build(model: str, layers: int, checkpoint_every: int, backend: str) -> torch.nn.Module:
    m = registry.build(model, n_layer=layers, checkpoint_every=checkpoint_every, attention_backend=backend, dropout=0.0)
    return m.train()


def saved_activation_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes of distinct tensor storages autograd saves for backward during ``model.loss(x)``."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.device.type != "meta":
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model.loss(x)
    loss.backward()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(n for ptr, n in seen.items() if ptr not in params)


def _child(args: argparse.Namespace, checkpoint_every: int) -> dict:
    torch.manual_seed(0)
    model = build(args.model, args.layers, checkpoint_every, args.backend)
    x = torch.randint(0, 256, (args.batch, args.seq_len))
    model.loss(x).backward()  # warm-up: allocator, caches, gradient buffers
    model.zero_grad(set_to_none=False)
    growth = measure_here(lambda: model.loss(x).backward(), torch.device("cpu"))  # peak RSS above the start
    model.zero_grad(set_to_none=False)
    saved = saved_activation_bytes(model, x)
    return {"checkpoint_every": checkpoint_every, "saved_mib": saved / 2**20, "peak_rss_growth_mib": growth}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cifar10_paper")
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=3072)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--backend", default="auto")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--save", metavar="NAME", help="write docs/results/NAME.json (doc_results; rendered by markdown())")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child is not None:
        print(json.dumps(_child(args, args.child)))
        return 0
    rows = []
    where = machine()
    child_argv = [a for a in (argv if argv is not None else sys.argv[1:])]
    if "--save" in child_argv:  # the children only measure
        i = child_argv.index("--save")
        del child_argv[i : i + 2]
    for every in (0, 1):
        cmd = [sys.executable, __file__, *child_argv, "--child", str(every)]
        env = {**os.environ, **MALLOC_ENV}  # freed memory goes back to the OS, so peak RSS is meaningful
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout.strip().splitlines()[-1]
        rows.append(json.loads(out))
    data = {"machine": where, "model": args.model, "layers": args.layers, "seq_len": args.seq_len,
            "batch": args.batch, "backend": args.backend, "rows": rows}  # fmt: skip
    print(markdown(data))
    if args.save:
        print(f"# wrote {doc_results.save(args.save, data, renderer='benchmark_recompute:markdown')}")
    return 0


def markdown(data: dict) -> str:
    """Renderer of a saved run: saved activations and peak RSS growth with and without recomputation."""
    lines = [
        f"`{data['model']}` with {data['layers']} layers, seq_len {data['seq_len']}, batch {data['batch']}, "
        f"backend `{data['backend']}`. Machine: {data.get('machine', '?')}.",
        "",
        "| checkpoint_every | saved activations (MiB) | peak RSS growth in one step (MiB) |",
        "|---|---|---|",
    ]
    lines += [f"| {r['checkpoint_every']} | {r['saved_mib']:.1f} | {r['peak_rss_growth_mib']:.1f} |" for r in data["rows"]]
    base, rec = data["rows"]
    lines += [
        "",
        f"Recomputation keeps **{rec['saved_mib'] / base['saved_mib']:.2f}x** the saved activations and "
        f"**{rec['peak_rss_growth_mib'] / max(base['peak_rss_growth_mib'], 1e-9):.2f}x** the peak RSS growth.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
