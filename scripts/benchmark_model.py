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
(``--dropout``, ``--checkpoint``). ``--precisions fp32 bf16`` runs every variant in float32 and in
bfloat16 autocast (§5.6 trains in half precision; this CPU has AVX-512 BF16), interleaved in the same
rounds, and reports the first step's loss of each.

``--profile`` adds where the time of one step goes (forward + loss, backward, optimizer, and by
operator: matmuls, attention kernels, everything else) with the GFLOP/s the step's matmuls reach,
next to a plain 2048 x 2048 matmul measured in the same run: the machine's practical peak.
``--save NAME`` writes ``docs/results/NAME.json`` (rendered in docs/benchmarks.md by :func:`markdown`).
Example::

    python scripts/benchmark_model.py --shapes cifar10 enwik8 --layers 2 --repeats 5
    python scripts/benchmark_model.py --shapes cifar10 --variants strided bound --profile --save model_profile
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402
import doc_results  # noqa: E402

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


def autocast(precision: str):
    """bfloat16 autocast on CPU for ``bf16``; nothing for ``fp32``."""
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_step(model, n: int, batch: int, precision: str = "fp32"):
    opt = make_optimizer(model)
    idx = torch.randint(0, 256, (batch, n), generator=torch.Generator().manual_seed(0))
    losses: list[float] = []

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast(precision):
            loss = model.loss(idx)
        loss.backward()
        opt.step()
        if not losses:
            losses.append(float(loss))

    step.losses = losses
    step.parts = lambda: _timed_parts(model, opt, idx, precision)
    return step


def _timed_parts(model, opt, idx, precision: str) -> dict[str, float]:
    """Seconds of the three parts of one step: forward + loss, backward, optimizer."""
    opt.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    with autocast(precision):
        loss = model.loss(idx)
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    opt.step()
    t3 = time.perf_counter()
    return {"forward + loss": t1 - t0, "backward": t2 - t1, "optimizer": t3 - t2}


#: the Linear layers' matmuls (forward and backward); attention's tiles use batched matmuls and the fused kernels
LINEAR_MATMULS = ("aten::mm", "aten::addmm")
ATTENTION_OPS = (
    "aten::bmm", "aten::baddbmm", "aten::_softmax", "aten::_softmax_backward_data",
    "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
)  # fmt: skip


def peak_matmul_gflops(repeats: int = 7, n: int = 2048) -> float:
    """GFLOP/s of a plain float32 ``n x n`` matmul with the current thread count (median of repeats)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(ts) / 1e9


def profile_step(step, repeats: int) -> dict:
    """Operator profile of ``repeats`` steps: per category self-time (ms per step) and matmul GFLOP."""
    from torch.profiler import ProfilerActivity, profile

    step()
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        for _ in range(repeats):
            step()
    cats = {"matmuls (Linear layers, fwd + bwd)": [0.0, 0.0], "attention kernels": [0.0, 0.0], "everything else": [0.0, 0.0]}
    for ev in prof.key_averages():
        name = ev.key
        if name in LINEAR_MATMULS:
            key = "matmuls (Linear layers, fwd + bwd)"
        elif name in ATTENTION_OPS:
            key = "attention kernels"
        elif name.startswith("aten::") or name.startswith("autograd::"):
            key = "everything else"
        else:
            continue  # python-level ranges (e.g. our autograd.Function) are counted through their ops
        cats[key][0] += ev.self_cpu_time_total / 1e3 / repeats  # ms per step
        cats[key][1] += (ev.flops or 0) / 1e9 / repeats
    return {k: {"ms": v[0], "gflop": v[1]} for k, v in cats.items()}


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
    p.add_argument("--precisions", "--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"],
                   help="fp32 and/or bf16 autocast; several run interleaved in the same rounds")  # fmt: skip
    p.add_argument("--profile", action="store_true", help="where the step's time goes, and matmul GFLOP/s vs peak")
    p.add_argument("--json")
    p.add_argument("--save", metavar="NAME", help="write docs/results/NAME.json (doc_results; rendered by markdown())")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    bc.register_all_backends()
    for cls in (SdpaCausalBackend, FreeAttentionBackend):
        if cls.name not in list_backends():
            register_backend(cls)
    device = torch.device("cpu")
    machine = bc.machine()
    print(f"# machine: {machine}")
    print(f"# command: python {' '.join(sys.argv)}")
    results, shapes, profiles = [], {}, []
    peak = peak_matmul_gflops() if args.profile else None
    for shape in args.shapes:
        cases = [(v, prec) for v in args.variants for prec in args.precisions]
        models = {c: build_variant(shape, c[0], args) for c in cases}
        cfg = next(iter(models.values())).config
        steps = {c: make_step(m, cfg.seq_len, args.batch, c[1]) for c, m in models.items()}
        med, raw = bc.interleaved_medians({f"{v} {p}": f for (v, p), f in steps.items()}, args.repeats, device)
        shapes[shape] = {
            "n": cfg.seq_len, "d": cfg.n_embd, "heads": cfg.n_head, "layers": cfg.n_layer, "half_ffn": cfg.half_ffn,
            "half_qk": cfg.half_qk, "dropout": cfg.dropout, "batch": args.batch,
        }  # fmt: skip
        print(f"# {shape}: {json.dumps(shapes[shape])}")
        for (v, prec), m in models.items():
            key = f"{v} {prec}"
            base = med.get(f"dense {prec}")
            results.append(
                {
                    "shape": shape, "variant": v, "precision": prec, "attention": m.config.attention,
                    "backend": m.config.attention_backend, "params": m.num_parameters(), "step_s": med[key],
                    "all_s": raw[key], "speedup": base / med[key] if base else None,
                    "tokens_per_s": args.batch * cfg.seq_len / med[key], "first_loss": steps[(v, prec)].losses[0],
                }
            )  # fmt: skip
        if args.profile:
            for (v, prec), f in steps.items():
                parts = [f.parts() for _ in range(max(3, args.repeats // 2))]
                split = {k: statistics.median(p[k] for p in parts) * 1e3 for k in parts[0]}
                profiles.append({"shape": shape, "variant": v, "precision": prec, "parts_ms": split,
                                 "ops": profile_step(f, max(2, args.repeats // 3))})  # fmt: skip
        del models, steps
    data = {"machine": machine, "threads": args.threads, "repeats": args.repeats, "shapes": shapes,
            "results": results, "profiles": profiles, "peak_matmul_gflops": peak}  # fmt: skip
    tables = markdown(data)
    for key in ("main", "bound", "profile", "floor"):
        if key in tables:
            print(tables[key])
    bc.write_json(args.json, results)
    if args.save:
        print(f"# wrote {doc_results.save(args.save, data, renderer='benchmark_model:markdown')}")
    return 0


def markdown(data: dict) -> dict[str, str]:
    """Renderer of a saved run: ``main`` (step times), ``bound`` (strided vs the attention-free bound)
    and, with ``--profile``, ``profile`` (where the step's time goes, matmul GFLOP/s vs peak)."""
    res = data["results"]
    shapes = data.get("shapes", {})
    setting = (
        f"Machine: {data.get('machine', '?')}. Medians of {data.get('repeats', '?')} interleaved repeats, "
        f"{data.get('threads', '?')} threads; shapes: "
        + "; ".join(
            f"{k} n = {v['n']}, d = {v['d']}, {v['heads']} heads, {v['layers']} layers, batch {v['batch']}"
            + (", half FFN and QK" if v.get("half_qk") else "") + f", dropout {v['dropout']}"
            for k, v in shapes.items()
        )
        + "."
    )  # fmt: skip
    rows = [
        [r["shape"], r["variant"], r.get("precision", "fp32"), json.dumps(r["attention"]).replace('"', ""),
         r["backend"], f"{r['params'] / 1e6:.2f}M", bc.fmt_ms(r["step_s"]), f"{r['tokens_per_s']:,.0f}",
         bc.fmt_ratio(r["speedup"]), f"{r['first_loss']:.4f}"]
        for r in res
    ]  # fmt: skip
    tables = {
        "main": setting + "\n\n" + bc.table(
            ["shape", "variant", "precision", "attention", "backend", "params", "step ms", "tokens/s",
             "speed-up vs dense", "first loss"], rows)  # fmt: skip
    }
    bound_rows = []
    for r in res:
        if r["variant"] not in ("strided", "fixed"):
            continue
        b = next((x for x in res if x["variant"] == "bound" and x["shape"] == r["shape"]
                  and x.get("precision") == r.get("precision")), None)  # fmt: skip
        if b is None or not r["speedup"]:
            continue
        within = r["step_s"] / b["step_s"] - 1
        bound_rows.append([r["shape"], r["variant"], r.get("precision", "fp32"), bc.fmt_ratio(r["speedup"]),
                           bc.fmt_ratio(b["speedup"]), f"{within:+.1%}", "met" if within <= 0.05 else "not met"])  # fmt: skip
    if bound_rows:
        tables["bound"] = bc.table(
            ["shape", "variant", "precision", "speed-up vs dense", "bound (attention free)", "step time vs bound",
             "within 5% of the bound"], bound_rows)  # fmt: skip
    if data.get("profiles"):
        peak = data.get("peak_matmul_gflops")
        prow = []
        for pr in data["profiles"]:
            step = sum(pr["parts_ms"].values())
            for part, ms in pr["parts_ms"].items():
                prow.append([pr["shape"], pr["variant"], pr["precision"], part, f"{ms:.1f}", f"{ms / step:.0%}", "", "", ""])
            for cat, v in pr["ops"].items():
                gf = v["gflop"]
                rate = gf / (v["ms"] / 1e3) if gf and v["ms"] else None
                prow.append([pr["shape"], pr["variant"], pr["precision"], f"ops: {cat}", f"{v['ms']:.1f}", "",
                             f"{gf:.2f}" if gf else "-", f"{rate:.0f}" if rate else "-",
                             f"{rate / peak:.0%}" if rate and peak else "-"])  # fmt: skip
        floor_rows = []
        for pr in data["profiles"]:
            att = pr["ops"].get("attention kernels", {})
            bound = next((b for b in data["profiles"] if b["variant"] == "bound" and b["shape"] == pr["shape"]
                          and b["precision"] == pr["precision"]), None)  # fmt: skip
            if pr["variant"] == "bound" or not bound or not att.get("gflop") or not peak:
                continue
            floor_ms = att["gflop"] / peak * 1e3
            bound_ms = sum(bound["parts_ms"].values())
            floor_rows.append([pr["shape"], pr["variant"], pr["precision"], f"{att['gflop']:.2f}", f"{att['ms']:.1f}",
                               f"{floor_ms:.1f}", f"{bound_ms:.1f}", f"{floor_ms / bound_ms:.1%}"])  # fmt: skip
        if floor_rows:
            tables["floor"] = bc.table(
                ["shape", "variant", "precision", "attention GFLOP per step", "attention kernels ms",
                 "the same GFLOP at the plain matmul's rate, ms", "bound step ms", "that floor vs the bound"],
                floor_rows)  # fmt: skip
        tables["profile"] = (
            (f"A plain 2048 x 2048 float32 matmul reached **{peak:.0f} GFLOP/s** in the same run.\n\n" if peak else "")
            + bc.table(["shape", "variant", "precision", "part", "ms per step", "share", "GFLOP", "GFLOP/s",
                        "of the plain matmul"], prow)  # fmt: skip
        )
    return tables


if __name__ == "__main__":
    sys.exit(main())
