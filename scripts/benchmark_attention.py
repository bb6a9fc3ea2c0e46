#!/usr/bin/env python
"""Benchmark attention backends on sparse patterns against dense causal SDPA (Child et al. 2019, §5.5).

For each pattern and sequence length ``n``, every backend and the baseline
``F.scaled_dot_product_attention(is_causal=True)`` run forward (no grad) and forward+backward,
interleaved round by round; the table shows medians, the ratio ``SDPA time / backend time`` (> 1:
faster than dense), the pattern's density (fraction of the causal triangle attended: the ideal
ratio is ``1 / density``) and the peak memory of one forward+backward, measured in a fresh child
process (see ``scripts/bench_common.py``).

Defaults follow the project's protocol: batch 1, 4 heads, head dim 64, float32, 2 threads, stride
``l`` = the power of two nearest ``sqrt(n)`` (64 at n = 3072, 128 at n = 12288), ``c = 16`` for
fixed. ``--save NAME`` writes ``docs/results/NAME.json`` (rendered in docs/benchmarks.md by
:func:`markdown`: the table, and the project's targets met or not). Example::

    python scripts/benchmark_attention.py --n 3072 12288 --repeats 7 --save attention_cpu --plot docs/img/attention_cpu.png
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402
import doc_results  # noqa: E402

import attention_patterns as ap  # noqa: E402
from attention_patterns.backends import backend_availability, create_backend  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
BASELINE = "sdpa-causal"
#: the project's CPU kernel targets: forward+backward ratio to dense causal SDPA in one run (float32,
#: batch 1, 4 heads, head dim 64, split heads), and peak memory at most 1.2x SDPA's
TARGETS = {("strided", 3072): 10.0, ("strided", 12288): 35.0, ("fixed", 3072): 6.0, ("fixed", 12288): 12.0}
MEMORY_TARGET = 1.2


def auto_stride(n: int) -> int:
    """Power of two nearest ``sqrt(n)`` in log scale (ties up): 32 @1024, 64 @3072, 128 @8192/12288."""
    return 2 ** math.floor(math.log2(math.sqrt(n)) + 0.5)


def pattern_config(name: str, n: int, args) -> dict:
    stride = auto_stride(n) if args.stride == "auto" else int(args.stride)
    cfg: dict = {"name": name, "num_heads": args.heads}
    if name in ("strided", "fixed"):
        cfg.update(stride=stride, mode=args.mode)
        if name == "fixed":
            cfg["c"] = args.c
    elif name == "local":
        cfg["window"] = stride
    elif name in ("bigbird", "longformer", "block_local", "variable"):
        cfg["block_size"] = 64
    return cfg


def make_step(backend: str, comp, n: int, args, device: torch.device, train: bool):
    """A closure running one forward (train=False, no grad) or forward+backward."""
    dtype = DTYPES[args.dtype]
    g = torch.Generator().manual_seed(0)
    shape = (args.batch, args.heads, n, args.head_dim)
    q, k, v = (
        torch.randn(shape, generator=g).to(device=device, dtype=dtype).requires_grad_(train) for _ in range(3)
    )
    grad = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
    if backend == BASELINE:

        def attend(q, k, v):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    else:
        be = create_backend(backend, **({"block_size": args.flex_block} if backend == "flex" else {}))

        def attend(q, k, v):
            return be.attend(q, k, v, comp)

    if not train:

        def step():
            with torch.no_grad():
                attend(q, k, v)

        return step

    def step():
        q.grad = k.grad = v.grad = None
        attend(q, k, v).backward(grad)

    step.leaves = (q, k, v)
    return step


def child(payload: str) -> None:
    """Peak memory of one forward+backward, in this fresh process (invoked with --child)."""
    a = json.loads(payload)
    args = argparse.Namespace(**a["args"])
    torch.set_num_threads(args.threads)
    bc.register_all_backends()
    device = torch.device(args.device)
    comp = ap.build_attention(a["cfg"]) if a["cfg"] else None
    step = make_step(a["backend"], comp, a["n"], args, device, train=True)
    step()  # warm-up: plans, masks and kernels are built here
    for x in step.leaves:  # measured: output, gradients and every temporary of one step
        x.grad = None
    print(json.dumps({"peak_mib": bc.measure_here(step, device)}))


def backends_for(args, device: torch.device) -> list[str]:
    names = []
    for name in args.backends:
        ok, why = backend_availability(name, device)
        if not ok:
            print(f"# skipping backend {name!r} on {device}: {why}")
            continue
        if name == "flex" and device.type == "cpu":
            print("# flex on CPU: forward (inference) timings only")
        names.append(name)
    return names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--patterns", nargs="+", default=["strided", "fixed"])
    p.add_argument("--backends", nargs="+", default=["blocksparse"], help="besides the SDPA baseline")
    p.add_argument("--n", nargs="+", type=int, default=[1024, 3072, 8192, 12288])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--stride", default="auto", help="'auto' (power of two nearest sqrt(n)) or an integer")
    p.add_argument("--c", type=int, default=16, help="summary columns of fixed")
    p.add_argument("--mode", default="split", choices=["split", "merged", "interleaved"])
    p.add_argument("--flex-block", type=int, default=128)
    p.add_argument(
        "--masked-reference", action="store_true", help="also time the dense masked reference backend"
    )
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory children")
    p.add_argument(
        "--breakdown", action="store_true",
        help="profile blocksparse: time in the fused tile kernels vs the rest (layout copies, merges, glue)",
    )  # fmt: skip
    p.add_argument("--plot", help="write a PNG of time and memory against n (log axes)")
    p.add_argument("--json", help="write all measurements to this file")
    p.add_argument("--save", metavar="NAME", help="write docs/results/NAME.json (doc_results; rendered by markdown())")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child)
        return 0

    torch.set_num_threads(args.threads)
    bc.register_all_backends()
    device = torch.device(args.device)
    names = backends_for(args, device)
    if args.masked_reference:
        names.append("dense")
    machine = bc.machine()
    print(f"# machine: {machine}")
    print(f"# command: python {' '.join(sys.argv)}")
    print(
        f"# batch {args.batch}, heads {args.heads}, head dim {args.head_dim}, {args.dtype}, mode {args.mode}, "
        f"repeats {args.repeats} (interleaved medians); ratio = SDPA(is_causal) time / backend time"
    )
    results = []
    for pattern in args.patterns:
        for n in args.n:
            cfg = pattern_config(pattern, n, args)
            comp = ap.build_attention(cfg)
            density = (
                sum(comp.density(n, layer) for layer in range(comp.num_layers_period))
                / comp.num_layers_period
            )
            cases = [BASELINE] + names
            fwd = {c: make_step(c, comp, n, args, device, train=False) for c in cases}
            fb = {
                c: make_step(c, comp, n, args, device, train=True)
                for c in cases
                if not (c == "flex" and device.type == "cpu")
            }
            t_fwd, _ = bc.interleaved_medians(fwd, args.repeats, device)
            t_fb, raw = bc.interleaved_medians(fb, args.repeats, device)
            for c in cases:
                mem = None
                if not args.no_memory and c in fb:
                    r = bc.peak_memory_mib(
                        __file__,
                        {"args": vars(args), "cfg": cfg if c != BASELINE else None, "backend": c, "n": n},
                    )
                    mem = r.get("peak_mib")
                    if mem is None:
                        print(f"# memory child failed for {pattern} n={n} {c}: {r.get('error')}")
                results.append(
                    {
                        "pattern": pattern, "n": n, "stride": cfg.get("stride", cfg.get("window")), "backend": c,
                        "density": density, "fwd_s": t_fwd[c], "fwdbwd_s": t_fb.get(c), "fwdbwd_all_s": raw.get(c),
                        "peak_mib": mem,
                    }
                )  # fmt: skip
            base = next(
                r for r in results if r["pattern"] == pattern and r["n"] == n and r["backend"] == BASELINE
            )
            for r in results:
                if r["pattern"] == pattern and r["n"] == n:
                    r["fwd_ratio"] = base["fwd_s"] / r["fwd_s"]
                    r["fwdbwd_ratio"] = base["fwdbwd_s"] / r["fwdbwd_s"] if r["fwdbwd_s"] else None
                    r["mem_ratio"] = (
                        r["peak_mib"] / base["peak_mib"] if r["peak_mib"] and base["peak_mib"] else None
                    )
            if args.breakdown and "blocksparse" in fb:
                r = next(r for r in results if (r["pattern"], r["n"], r["backend"]) == (pattern, n, "blocksparse"))
                r["kernels_s"] = kernel_breakdown(fb["blocksparse"], max(3, args.repeats // 2))
            print(f"# done: {pattern} n={n}", flush=True)

    data = {"machine": machine, "results": results,
            "config": {k: getattr(args, k) for k in ("batch", "heads", "head_dim", "dtype", "threads", "mode", "repeats")}}  # fmt: skip
    tables = markdown(data)
    for key in ("main", "targets", "breakdown"):
        if key in tables:
            print(tables[key])
    bc.write_json(args.json, results)
    if args.save:
        print(f"# wrote {doc_results.save(args.save, data, renderer='benchmark_attention:markdown')}")
    if args.plot:
        plot(results, args.plot)
    return 0


#: the operators that compute attention tiles (the fused CPU flash kernels and the kept-softmax path)
KERNEL_OPS = (
    "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
    "aten::bmm", "aten::baddbmm", "aten::_softmax", "aten::_softmax_backward_data", "aten::logsumexp",
)  # fmt: skip


def kernel_breakdown(step, repeats: int) -> float:
    """Seconds per call that ``step`` spends in the tile kernels (profiler self time of
    :data:`KERNEL_OPS`, over ``repeats`` calls in one profile). The rest of the backend's time (layout
    copies, gradient folds, merges, Python) is its measured time minus this."""
    from torch.profiler import ProfilerActivity, profile

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            step()
    return sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in KERNEL_OPS) / 1e6 / repeats


def markdown(data: dict) -> dict[str, str]:
    """Renderer of a saved run: ``main`` (every case) and ``targets`` (the project's targets in this run)."""
    results, cfg = data["results"], data.get("config", {})
    headers = ["pattern", "n", "l", "density", "ideal", "backend", "fwd ms", "fwd ratio", "fwd+bwd ms",
               "fwd+bwd ratio", "peak MiB", "mem vs SDPA"]  # fmt: skip
    rows = [
        [
            r["pattern"], str(r["n"]), str(r["stride"]), f"{r['density']:.4f}", f"{1 / r['density']:.1f}x", r["backend"],
            bc.fmt_ms(r["fwd_s"]), bc.fmt_ratio(r["fwd_ratio"]), bc.fmt_ms(r["fwdbwd_s"]), bc.fmt_ratio(r["fwdbwd_ratio"]),
            "-" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}", bc.fmt_ratio(r["mem_ratio"]),
        ]
        for r in results
    ]  # fmt: skip
    target_rows = []
    for (pattern, n), goal in TARGETS.items():
        r = next((r for r in results if (r["pattern"], r["n"], r["backend"]) == (pattern, n, "blocksparse")), None)
        if r is None or r.get("fwdbwd_ratio") is None:
            continue
        got = r["fwdbwd_ratio"]
        target_rows.append([f"{pattern}, n = {n:,}, fwd+bwd vs SDPA", f">= {goal:g}x", f"**{got:.2f}x**",
                            f"{1 / r['density']:.1f}x", "met" if got >= goal else f"not met ({got / goal:.0%} of it)"])  # fmt: skip
        mem = r.get("mem_ratio")
        if mem is not None:
            target_rows.append([f"{pattern}, n = {n:,}, peak memory vs SDPA", f"<= {MEMORY_TARGET:g}x", f"**{mem:.2f}x**", "",
                                "met" if mem <= MEMORY_TARGET else "not met"])  # fmt: skip
    setting = (
        f"batch {cfg.get('batch', '?')}, {cfg.get('heads', '?')} heads, head dim {cfg.get('head_dim', '?')}, "
        f"{cfg.get('dtype', '?')}, {cfg.get('threads', '?')} threads, `{cfg.get('mode', '?')}` heads, "
        f"medians of {cfg.get('repeats', '?')} interleaved repeats; ratio = SDPA(is_causal) time / backend time."
    )
    if data.get("machine"):
        setting = f"Machine: {data['machine']}. " + setting
    split = [r for r in results if r.get("kernels_s") and r.get("fwdbwd_s")]
    breakdown = None
    if split:
        rows_b = []
        for r in split:
            base = next(b for b in results if (b["pattern"], b["n"], b["backend"]) == (r["pattern"], r["n"], BASELINE))
            if r["kernels_s"] >= r["fwdbwd_s"]:  # the profiled kernels ran slower than the timed calls: no split
                rows_b.append([r["pattern"], f"{r['n']:,}", bc.fmt_ms(r["fwdbwd_s"]), bc.fmt_ms(r["kernels_s"]) + " *",
                               "-", "-", bc.fmt_ratio(r["fwdbwd_ratio"]), "-"])  # fmt: skip
                continue
            rest = r["fwdbwd_s"] - r["kernels_s"]
            rows_b.append([r["pattern"], f"{r['n']:,}", bc.fmt_ms(r["fwdbwd_s"]), bc.fmt_ms(r["kernels_s"]), bc.fmt_ms(rest),
                           f"{r['kernels_s'] / r['fwdbwd_s']:.0%}", bc.fmt_ratio(r["fwdbwd_ratio"]),
                           bc.fmt_ratio(base["fwdbwd_s"] / r["kernels_s"])])  # fmt: skip
        breakdown = bc.table(
            ["pattern", "n", "blocksparse fwd+bwd ms", "in tile kernels ms", "everything else ms", "kernel share",
             "ratio vs SDPA", "ratio if everything else were free"], rows_b)  # fmt: skip
        if any(r["kernels_s"] >= r["fwdbwd_s"] for r in split):
            breakdown += (
                "\n\n\\* The kernels' time comes from a separate, profiled set of calls; where it exceeds the timed "
                "calls' total (profiler overhead, or the kernels ran slower in that set), the split is not shown."
            )
    out = {"breakdown": breakdown} if breakdown else {}
    return out | {
        "main": setting + "\n\n" + bc.table(headers, rows),
        "targets": bc.table(["target", "wanted", "this run", "ideal (1 / density)", ""], target_rows)
        if target_rows
        else "No target case (strided/fixed at n = 3072 or 12288 on blocksparse) in this run.",
    }


def plot(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    keys = sorted({(r["pattern"], r["backend"]) for r in results if r["fwdbwd_s"]})
    for pattern, backend in keys:
        rs = sorted(
            (r for r in results if r["pattern"] == pattern and r["backend"] == backend), key=lambda r: r["n"]
        )
        label = {BASELINE: "dense SDPA (is_causal)", "dense": f"{pattern} / dense masked reference"}.get(
            backend, f"{pattern} / {backend}"
        )
        if backend == BASELINE and pattern != keys[0][0]:
            continue  # the baseline does not depend on the pattern
        ns = [r["n"] for r in rs]
        axes[0].plot(ns, [r["fwdbwd_s"] * 1e3 for r in rs], marker="o", label=label)
        mem = [(r["n"], r["peak_mib"]) for r in rs if r["peak_mib"]]
        if mem:
            axes[1].plot(*zip(*mem), marker="o", label=label)
    for ax, title in zip(axes, ("forward+backward time (ms)", "peak memory of fwd+bwd (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length n")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"# wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
