#!/usr/bin/env python
"""Longest sequence one attention layer can train (forward + backward) within a memory budget.

The layer is a pre-norm attention block of the Sparse Transformer (Child et al. 2019, §5.2):
``x + W_o attention(W_q h, W_k h, W_v h)``, ``h = LayerNorm(x)``, with ``d = heads * head_dim`` (default 4 x 64 = 256),
batch 1, float32, the pattern's stride ``l`` = the power of two nearest ``sqrt(n)``; one training
step computes the loss ``sum(y * g)`` and backpropagates to the input and every parameter.

Each trial runs in a fresh child process whose private memory is capped at the budget
(``RLIMIT_DATA``: an allocation beyond it fails instead of swapping or hitting other processes)
and whose peak resident memory (``VmHWM``, the whole process: Python, torch, inputs, activations,
gradients) is read at the end; a trial passes if it finishes within the cap and the time limit.
``n`` doubles from ``--start`` until a trial fails, then a bisection (in multiples of 4096) finds
the longest passing length. Example::

    python scripts/max_length.py --backends blocksparse dense sdpa-causal --budget-gib 16
    python scripts/max_length.py --backends blocksparse --start 131072 --max-n 1048576 --budget-gib 20 --save max_length

``--save NAME`` writes ``docs/results/NAME.json`` (rendered in docs/benchmarks.md by :func:`markdown`).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402
import doc_results  # noqa: E402

STEP = 4096


def auto_stride(n: int) -> int:
    return 2 ** math.floor(math.log2(math.sqrt(n)) + 0.5)


def child(payload: str) -> None:
    """One training step of one layer at length n (invoked with --child)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    import attention_patterns as ap
    from attention_patterns.backends import create_backend

    a = json.loads(payload)
    torch.set_num_threads(a["threads"])
    bc.register_all_backends()
    n, H, D = a["n"], a["heads"], a["head_dim"]
    d = H * D
    cfg = {"name": a["pattern"], "num_heads": H}
    if a["pattern"] in ("strided", "fixed"):
        cfg.update(stride=auto_stride(n), mode=a["mode"])
    comp = ap.build_attention(cfg)
    torch.manual_seed(0)
    # q, k and v as three projections: the same layer as one fused (d -> 3d) projection, whose backward
    # would concatenate the three gradients into one more (n, 3d) tensor
    norm, proj = nn.LayerNorm(d), nn.Linear(d, d)
    wq, wk, wv = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
    if a["backend"] == "sdpa-causal":

        def attend(q, k, v):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    else:
        be = create_backend(a["backend"])

        def attend(q, k, v):
            return be.attend(q, k, v, comp)

    x = torch.randn(1, n, d, requires_grad=True)
    g = torch.randn(1, n, d)
    t0 = time.perf_counter()
    h = norm(x)
    q, k, v = (w(h).view(1, n, H, D).transpose(1, 2) for w in (wq, wk, wv))  # 3 x (1, H, n, D)
    y = x + proj(attend(q, k, v).transpose(1, 2).reshape(1, n, d))
    y.backward(g)
    seconds = time.perf_counter() - t0
    ok = bool(torch.isfinite(x.grad).all())
    peak = int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]) / 2**20  # GiB
    print(json.dumps({"ok": ok, "seconds": seconds, "peak_gib": peak}))


def trial(args, backend: str, n: int) -> dict:
    payload = {
        "n": n, "backend": backend, "pattern": args.pattern, "mode": args.mode, "heads": args.heads,
        "head_dim": args.head_dim, "threads": args.threads,
    }  # fmt: skip
    limit = int(args.budget_gib * 2**30)

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))

    env = {**__import__("os").environ, **bc.MALLOC_ENV}
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(payload)],
            capture_output=True, text=True, env=env, timeout=args.time_limit_s, preexec_fn=cap, cwd=bc.REPO,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"n": n, "ok": False, "why": f"time limit {args.time_limit_s:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        err = (proc.stderr or "").strip().splitlines()
        memory = (
            any("alloc" in ln.lower() or "memory" in ln.lower() for ln in err[-5:]) or proc.returncode == -9
        )
        why = "memory budget" if memory else f"exit {proc.returncode}: {err[-1] if err else ''}"
        return {"n": n, "ok": False, "why": why}
    r = json.loads(lines[-1])
    r["n"] = n
    if r["peak_gib"] > args.budget_gib:
        r["ok"], r["why"] = False, "peak above budget"
    elif not r["ok"]:
        r["why"] = "non-finite gradients"
    return r


def search(args, backend: str) -> tuple[int | None, list[dict]]:
    log: list[dict] = []

    def run(n: int) -> bool:
        r = trial(args, backend, n)
        log.append(r)
        status = "ok" if r["ok"] else f"FAIL ({r.get('why')})"
        extra = f", {r['seconds']:.1f} s, peak {r['peak_gib']:.2f} GiB" if "seconds" in r else ""
        print(f"#   {backend}: n={n}: {status}{extra}", flush=True)
        return r["ok"]

    good, bad, n = None, None, args.start
    while n <= args.max_n:
        if run(n):
            good = n
            n *= 2
        else:
            bad = n
            break
    if good is None or bad is None:
        return good, log
    while bad - good > STEP:
        mid = (good + bad) // 2 // STEP * STEP
        if mid in (good, bad):
            break
        if run(mid):
            good = mid
        else:
            bad = mid
    return good, log


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", nargs="+", default=["blocksparse"], help="backend names, or sdpa-causal")
    p.add_argument("--pattern", default="strided")
    p.add_argument("--mode", default="split")
    p.add_argument("--budget-gib", type=float, default=16.0)
    p.add_argument("--start", type=int, default=16384)
    p.add_argument("--max-n", type=int, default=1 << 20, help="stop doubling here (machine safety)")
    p.add_argument("--time-limit-s", type=float, default=900.0, help="per trial")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json")
    p.add_argument("--save", metavar="NAME", help="write docs/results/NAME.json (doc_results; rendered by markdown())")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    import torch

    torch.set_num_threads(args.threads)  # as in the trials, so that the machine line says so
    machine = bc.machine()
    print(f"# machine: {machine}")
    print(f"# command: python {' '.join(sys.argv)}")
    print(
        f"# one pre-norm attention layer, d = {args.heads} x {args.head_dim}, batch 1, float32, pattern {args.pattern} "
        f"({args.mode}, l = power of two nearest sqrt(n)); budget {args.budget_gib:g} GiB of process memory"
    )
    out = {}
    for backend in args.backends:
        best, log = search(args, backend)
        out[backend] = {"longest_n": best, "trials": log}
    data = {"machine": machine, "budget_gib": args.budget_gib, "max_n": args.max_n, "pattern": args.pattern,
            "mode": args.mode, "heads": args.heads, "head_dim": args.head_dim, "threads": args.threads,
            "backends": out}  # fmt: skip
    tables = markdown(data)
    print(tables["main"])
    print(tables["trials"])
    bc.write_json(args.json, out)
    if args.save:
        print(f"# wrote {doc_results.save(args.save, data, renderer='max_length:markdown')}")
    return 0


def markdown(data: dict) -> dict[str, str]:
    """Renderer of a saved run: ``main`` (longest n per backend) and ``trials`` (every trial)."""
    rows, trials = [], []
    for backend, res in data["backends"].items():
        best, log = res["longest_n"], res["trials"]
        last = next((r for r in reversed(log) if r["ok"] and r["n"] == best), None)
        first_fail = next((r for r in log if not r["ok"]), None)
        limit = first_fail.get("why") if first_fail else f"nothing: the search stops at --max-n {data['max_n']:,}"
        rows.append(
            [
                backend, "-" if best is None else f"**{best:,}**",
                "-" if last is None else f"{last['peak_gib']:.2f}", "-" if last is None else f"{last['seconds']:.1f}",
                "-" if last is None else f"{last['peak_gib'] * 2**30 / best / 1024:.1f}", limit,
            ]
        )  # fmt: skip
        for r in log:
            trials.append([backend, f"{r['n']:,}", "ok" if r["ok"] else f"fails: {r.get('why')}",
                           f"{r['seconds']:.1f}" if "seconds" in r else "-",
                           f"{r['peak_gib']:.2f}" if "peak_gib" in r else "-"])  # fmt: skip
    setting = (
        f"Machine: {data.get('machine', '?')}. One pre-norm attention layer, d = {data['heads']} x {data['head_dim']}, "
        f"batch 1, float32, `{data['pattern']}` ({data['mode']}, l = the power of two nearest sqrt(n)), "
        f"{data['threads']} threads; budget {data['budget_gib']:g} GiB of process memory (RLIMIT_DATA, whole-process peak RSS)."
    )
    return {
        "main": setting + "\n\n" + bc.table(
            ["backend", "longest n that trains", "peak GiB at that n", "step s at that n", "KiB per position",
             "what stopped it"], rows),  # fmt: skip
        "trials": bc.table(["backend", "n", "result", "step s", "peak GiB"], trials),
    }


if __name__ == "__main__":
    sys.exit(main())
