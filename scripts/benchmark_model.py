#!/usr/bin/env python
"""Whole training-step time of the Sparse Transformer: dense vs strided vs fixed (Child et al. 2019, §7).

One step = forward, cross-entropy loss, backward and an AdamW update of a ``zoo`` model with the
paper's layer shapes and fewer layers, on random bytes; the variants run interleaved, round by
round, and the table shows medians and the speed-up over the dense model in the same run.

Shapes (``zoo.registry`` variants, with ``n_layer`` reduced):

* ``cifar10`` - ``cifar10_paper``: n = 3072, d = 256, 2 heads, half-size FFN and QK (§7.1);
* ``enwik8`` - ``enwik8_paper``: n = 12288, d = 512, 8 heads (§7.2).

Variants: ``dense`` (causal attention through PyTorch SDPA with ``is_causal=True`` and all threads:
the strongest dense baseline; with half QK, queries and keys are zero-padded to the value head dim
so that the fused kernel applies), ``strided`` and ``fixed`` (``blocksparse`` backend), and
optionally ``bound``: the strided model with attention replaced by a no-op, i.e. the largest
speed-up any attention implementation could give this model (Amdahl). AdamW is the fused CPU
implementation (one kernel for every parameter). Dropout and block recomputation as configured
(``--dropout``, ``--checkpoint``). Example::

    python scripts/benchmark_model.py --shapes cifar10 enwik8 --layers 2 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402

from attention_patterns.backends import AttentionBackend, list_backends, register_backend  # noqa: E402
from attention_patterns.backends.base import check_qkv  # noqa: E402


class SdpaCausalBackend(AttentionBackend):
    """Dense causal attention with SDPA ``is_causal=True`` (benchmark baseline; dense pattern only)."""

    name = "sdpa_causal"

    def attend(self, q, k, v, component, layer=0, scale=None):
        check_qkv(q, k, v)
        if component.name != "dense":
            raise ValueError(f"sdpa_causal serves the dense pattern only, got {component.name!r}")
        Dqk, Dv = q.shape[-1], v.shape[-1]
        scale = Dqk**-0.5 if scale is None else scale
        if Dqk < Dv:  # zero columns change no dot product; lets SDPA use its fused kernel
            q, k = F.pad(q, (0, Dv - Dqk)), F.pad(k, (0, Dv - Dqk))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
        return out[..., :Dv]


class FreeAttentionBackend(AttentionBackend):
    """Bound, not attention: returns ``v`` (no mixing), so the step costs everything but attention."""

    name = "free_attention_bound"

    def attend(self, q, k, v, component, layer=0, scale=None):
        check_qkv(q, k, v)
        return v * 1.0


SHAPES = {
    "cifar10": {
        "model": "cifar10_paper",
        "variants": {
            "dense": {"attention": {"name": "dense"}},
            "strided": {"attention": {"name": "strided", "stride": 96, "mode": "split"}},
            "fixed": {"attention": {"name": "fixed", "stride": 96, "c": 16, "mode": "split"}},
        },
    },
    "enwik8": {
        "model": "enwik8_paper",
        # the paper's attention embedding needs a stride, which the dense pattern lacks: every
        # variant uses the absolute position table instead, so all have the same parameters
        "variants": {
            "dense": {"attention": {"name": "dense"}, "embedding": "absolute"},
            "strided": {
                "attention": {"name": "strided", "stride": 128, "mode": "split"},
                "embedding": "absolute",
            },
            "fixed": {
                "attention": {"name": "fixed", "stride": 128, "c": 32, "mode": "merged"},
                "embedding": "absolute",
            },
        },
    },
}


def build_variant(shape: str, variant: str, args):
    from zoo.registry import build

    spec = SHAPES[shape]
    bound = variant == "bound"
    overrides = dict(spec["variants"]["strided" if bound else variant])
    overrides.update(n_layer=args.layers, checkpoint_every=1 if args.checkpoint else 0)
    if args.dropout is not None:
        overrides["dropout"] = args.dropout
    overrides["attention_backend"] = {"dense": "sdpa_causal", "bound": FreeAttentionBackend.name}.get(
        variant, args.backend
    )
    torch.manual_seed(0)
    model = build(spec["model"], **overrides)
    model.train()
    return model


def make_optimizer(model) -> torch.optim.Optimizer:
    """AdamW, fused (one kernel for all parameters) where this torch supports it on CPU."""
    try:
        return torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)


def make_step(model, n: int, batch: int):
    opt = make_optimizer(model)
    idx = torch.randint(0, 256, (batch, n), generator=torch.Generator().manual_seed(0))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = model.loss(idx)
        loss.backward()
        opt.step()

    return step


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=["cifar10", "enwik8"], choices=sorted(SHAPES))
    p.add_argument(
        "--variants",
        nargs="+",
        default=["dense", "strided", "fixed"],
        choices=["dense", "strided", "fixed", "bound"],
        help="'bound': attention replaced by a no-op, the best speed-up any attention backend could give",
    )
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backend", default="blocksparse", help="backend of the sparse variants")
    p.add_argument("--dropout", type=float, default=None, help="override the paper's dropout")
    p.add_argument("--checkpoint", action="store_true", help="recompute every block in backward (§5.4)")
    p.add_argument("--json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    bc.register_all_backends()
    for cls in (SdpaCausalBackend, FreeAttentionBackend):
        if cls.name not in list_backends():
            register_backend(cls)
    device = torch.device("cpu")
    print(f"# machine: {bc.machine()}")
    print(f"# command: python {' '.join(sys.argv)}")
    rows, results = [], []
    for shape in args.shapes:
        models = {v: build_variant(shape, v, args) for v in args.variants}
        cfg = next(iter(models.values())).config
        steps = {v: make_step(m, cfg.seq_len, args.batch) for v, m in models.items()}
        med, raw = bc.interleaved_medians(steps, args.repeats, device)
        base = med.get("dense")
        print(
            f"# {shape}: n={cfg.seq_len}, d={cfg.n_embd}, heads={cfg.n_head}, layers={cfg.n_layer}, "
            f"half_ffn={cfg.half_ffn}, half_qk={cfg.half_qk}, dropout={cfg.dropout}, batch={args.batch}"
        )
        for v, m in models.items():
            att = m.config.attention
            ratio = base / med[v] if base else None
            rows.append(
                [shape, v, json.dumps(att).replace('"', ""), m.config.attention_backend, f"{m.num_parameters() / 1e6:.2f}M",
                 bc.fmt_ms(med[v]), bc.fmt_ratio(ratio)]
            )  # fmt: skip
            results.append(
                {
                    "shape": shape,
                    "variant": v,
                    "attention": att,
                    "step_s": med[v],
                    "all_s": raw[v],
                    "speedup": ratio,
                }
            )
        del models, steps
    print(
        bc.table(["shape", "variant", "attention", "backend", "params", "step ms", "speed-up vs dense"], rows)
    )
    bc.write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
