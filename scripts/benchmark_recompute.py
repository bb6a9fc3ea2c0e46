"""Memory saved by recomputation (Child et al. 2019 §5.4): ``model.checkpoint_every`` on vs off.

For each setting, one training step (forward + backward) of a registry model is measured two ways:

* **saved activations**: the bytes autograd keeps for the backward pass, counted exactly with
  ``torch.autograd.graph.saved_tensors_hooks`` (distinct storages only). With recomputation, a block
  keeps only its input; everything inside is recomputed in the backward pass.
* **peak RSS growth**: in a fresh subprocess (glibc returning freed memory to the OS), the peak resident
  memory during the step minus the resident memory before it, after a warm-up step
  (``bench_common.measure_here``: what the machine actually had to provide; noisier).

Example (the table in docs/training.md was made with it)::

    python scripts/benchmark_recompute.py --model cifar10_paper --layers 8 --seq-len 3072 --batch 1
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
from bench_common import MALLOC_ENV, measure_here  # noqa: E402


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
    p.add_argument("--backend", default="blocksparse")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child is not None:
        print(json.dumps(_child(args, args.child)))
        return 0
    rows = []
    for every in (0, 1):
        cmd = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]), "--child", str(every)]
        env = {**os.environ, **MALLOC_ENV}  # freed memory goes back to the OS, so peak RSS is meaningful
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout.strip().splitlines()[-1]
        rows.append(json.loads(out))
    print(f"model={args.model} layers={args.layers} seq_len={args.seq_len} batch={args.batch} backend={args.backend}")
    print("| checkpoint_every | saved activations (MiB) | peak RSS growth in one step (MiB) |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r['checkpoint_every']} | {r['saved_mib']:.1f} | {r['peak_rss_growth_mib']:.1f} |")
    base, rec = rows
    print(
        f"recomputation keeps {rec['saved_mib'] / base['saved_mib']:.2f}x the saved activations "
        f"and {rec['peak_rss_growth_mib'] / max(base['peak_rss_growth_mib'], 1e-9):.2f}x the peak RSS growth"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
