#!/usr/bin/env python
"""One prepared GPU check: correctness, speed and memory of the CUDA backends in one run (``make gpu-check``).

Needs only this repository, PyTorch (with Triton for ``flex``) and, for the test phase, ``pytest``;
``xformers`` is used when it imports. Nothing else is imported: no Hydra, OmegaConf or wandb, so the
script runs on a bare GPU image (torch, torchvision, timm, triton). Missing packages are installed
from a folder of wheels carried along (``--wheels DIR``; see ``make gpu-wheels`` for how to fill
it with ``pip download``); without them the phase that needs them is skipped with a note.

Phases, each against the dense masked reference or dense causal SDPA (Child et al. 2019 §5.5: the
point of the sparse kernels is speed and memory at equal results):

1. **tests** - every ``gpu``-marked test (``pytest -m gpu``) in a child process;
2. **exactness** - ``flex``, ``xformers`` (when importable) and ``blocksparse`` against the dense
   reference computed in float64 from the same inputs, in float32 and bfloat16: outputs, gradients
   of q, k, v, causality (perturbing future keys/values leaves earlier outputs bit-identical; the
   gradient w.r.t. a future position is exactly zero) and rows with no allowed key (zero output,
   finite gradients), for strided and fixed in every head mode, local and bigbird;
3. **attention** - forward+backward time and peak memory of one layer's attention against SDPA's
   FlashAttention kernel (``is_causal=True``) at n = 3072, 12288, 65536 (batch 1, 4 heads, head dim
   64, bfloat16, stride = the power of two nearest sqrt(n)); project target: strided >= 5x at n = 65536;
4. **training** - one training step (forward, loss, backward, AdamW) at the CIFAR-10 and enwik8
   shapes with 2 layers in bfloat16 autocast: dense (SDPA) vs strided vs fixed (``auto``); tokens/s
   and peak memory;
5. **sampling** - bytes/s of cached generation (``zoo.generate.generate``) when that module exists.

Everything ends up in one printed table per phase and in ``docs/results/gpu_check.json``
(``doc_results.save``; shown in docs/benchmarks.md). ``--device cpu`` runs every phase at small
sizes (``flex`` forward only, uncompiled: FlexAttention has no CPU backward); the tests run it
that way (``tests/test_gpu_check.py``). Each phase checks a time budget (``--budget-s``, default
420 s on CUDA: the whole check fits in 8 minutes on one H200) and skips what would not fit, saying so.

    python scripts/gpu_check.py                          # CUDA, full sizes, writes docs/results/gpu_check.json
    python scripts/gpu_check.py --wheels wheels          # install pytest (and xformers) from ./wheels first
    python scripts/gpu_check.py --device cpu --out /tmp/gpu_check.json   # small sizes, as in CI
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import os
import re
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

SCRIPTS = Path(__file__).resolve().parent
REPO = SCRIPTS.parent
for _p in (str(REPO), str(SCRIPTS)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import bench_common as bc  # noqa: E402
import doc_results  # noqa: E402

import attention_patterns as ap  # noqa: E402
from attention_patterns.backends import (  # noqa: E402
    AttentionBackend,
    backend_availability,
    create_backend,
    list_backends,
    register_backend,
)
from attention_patterns.backends.base import check_qkv  # noqa: E402

#: import name -> pip requirement, installed from --wheels when missing (xformers without its deps:
#: its wheel pins a torch version, and the machine's torch must stay)
OPTIONAL = {"pytest": "pytest", "xformers": "xformers"}
#: patterns of the exactness phase (every head mode of the two-part patterns; fixed split has empty rows)
EXACT_PATTERNS = [
    {"name": "strided", "stride": 16, "mode": "split"},
    {"name": "strided", "stride": 16, "mode": "merged"},
    {"name": "strided", "stride": 16, "mode": "interleaved"},
    {"name": "fixed", "stride": 16, "c": 4, "mode": "split"},
    {"name": "fixed", "stride": 16, "c": 4, "mode": "merged"},
    {"name": "local", "window": 24},
    {"name": "bigbird", "block_size": 16},
]
TOLERANCE = {torch.float32: 2e-4, torch.bfloat16: 3e-2}  # max |a - ref| / max |ref|
SIZES = {
    "cuda": {"attention_n": [3072, 12288, 65536], "exact_n": 300, "layers": 2, "repeats": 10},
    # CPU (CI): a few seconds; strided interleaved (both parts, alternating), fixed split (empty rows), bigbird
    "cpu": {"attention_n": [256, 512], "exact_n": 100, "layers": 1, "repeats": 3, "exact_patterns": [2, 3, 6]},
}
#: training-step shapes: the paper's layer shapes (zoo.registry variants), small ones on CPU
STEP_SHAPES = {
    "cifar10": {
        "model": "cifar10_paper",
        "full": {"attention": {"strided": {"stride": 96}, "fixed": {"stride": 96, "c": 16}}, "overrides": {}},
        "small": {
            "attention": {"strided": {"stride": 48}, "fixed": {"stride": 48, "c": 8}},
            "overrides": {"seq_len": 768, "data_shape": [16, 16, 3]},
        },
    },
    "enwik8": {
        "model": "enwik8_paper",
        "full": {"attention": {"strided": {"stride": 128}, "fixed": {"stride": 128, "c": 32}}, "overrides": {}},
        "small": {
            "attention": {"strided": {"stride": 32}, "fixed": {"stride": 32, "c": 8}},
            "overrides": {"seq_len": 1024, "data_shape": [1024], "n_embd": 128, "n_head": 4},
        },
    },
}
ATTENTION_TARGET = {"pattern": "strided", "n": 65536, "ratio": 5.0}


class SdpaCausal(AttentionBackend):
    """Dense causal attention through SDPA ``is_causal=True`` (the dense model's baseline; dense pattern only)."""

    name = "gpu_check_sdpa_causal"

    def attend(self, q, k, v, component, layer=0, scale=None):
        check_qkv(q, k, v)
        Dqk, Dv = q.shape[-1], v.shape[-1]
        scale = Dqk**-0.5 if scale is None else scale
        if Dqk < Dv:  # zero columns change no dot product; lets the fused kernels apply
            q, k = F.pad(q, (0, Dv - Dqk)), F.pad(k, (0, Dv - Dqk))
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)[..., :Dv]


# ----------------------------------------------------------------------------------------- helpers
class Budget:
    """Seconds left of ``total``; phases ask before they start a case."""

    def __init__(self, total: float) -> None:
        self.total, self.start = total, time.monotonic()

    def left(self) -> float:
        return self.total - (time.monotonic() - self.start)


def importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def ensure_packages(wheels: str | None, notes: list[str]) -> dict[str, bool]:
    """Install the missing :data:`OPTIONAL` packages from ``wheels`` (no index); which are importable now."""
    have = {}
    for module, requirement in OPTIONAL.items():
        if not importable(module) and wheels:
            cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--find-links", wheels, requirement]
            if module == "xformers":
                cmd.append("--no-deps")
            proc = subprocess.run(cmd, capture_output=True, text=True)
            importlib.invalidate_caches()
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
                notes.append(f"could not install {requirement} from {wheels}: {tail[0]}")
        have[module] = importable(module)
    return have


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_mib(fn: Callable[[], None], device: torch.device) -> float | None:
    """Peak extra CUDA memory of one call (MiB); None on CPU (see benchmark_attention.py for CPU memory)."""
    if device.type != "cuda":
        return None
    return bc.measure_here(fn, device)


def qkv(n: int, dtype: torch.dtype, device: torch.device, heads: int = 4, D: int = 16, Dv: int | None = None, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(1, heads, n, D), (1, heads, n, D), (1, heads, n, Dv or D)]
    return [torch.randn(s, generator=g).to(device=device, dtype=dtype) for s in shapes]


def backend_for(name: str, device: torch.device) -> AttentionBackend:
    """The backend under test with its defaults; ``flex`` uncompiled on CPU (compiling its CPU kernel
    takes ~30 s a pattern, and CPU runs only its forward pass)."""
    if name == "flex" and device.type == "cpu":
        return create_backend("flex", block_size=16, compile=False)
    return create_backend(name)


def trains(name: str, device: torch.device) -> bool:
    return not (name == "flex" and device.type != "cuda")


# ----------------------------------------------------------------------------------------- phase 1
def phase_tests(args, have: dict[str, bool], budget: Budget, notes: list[str]) -> dict:
    """``pytest -m gpu`` over the test files that hold gpu-marked tests, in a child process."""
    files = sorted(
        str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py") if "mark.gpu" in p.read_text()
    )
    if not have.get("pytest"):
        notes.append("tests: pytest is not importable (pass --wheels DIR with a pytest wheel); gpu tests not run")
        return {"status": "not run: no pytest", "files": files}
    if not files:
        return {"status": "no gpu-marked tests", "files": files}
    timeout = max(30.0, min(args.tests_budget_s, budget.left() - 60))
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rA", "-p", "no:cacheprovider", *files]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
        out, status = proc.stdout + proc.stderr, "finished"
    except subprocess.TimeoutExpired as err:
        out = (err.stdout or b"").decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        status = f"stopped at the time limit ({timeout:.0f} s)"
    counts = {key: len(re.findall(rf"^{key.upper()} ", out, re.M)) for key in ("passed", "failed", "error", "skipped")}
    summary = re.findall(r"^=*\s*(\d+ (?:passed|failed|skipped|deselected|error).*?)\s*=*$", out, re.M)
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", out, re.M)
    return {
        "status": status, "files": files, "seconds": time.perf_counter() - t0, "counts": counts,
        "summary": summary[-1] if summary else "", "failed": failed[:20], "command": " ".join(cmd[2:]),
    }  # fmt: skip


# ----------------------------------------------------------------------------------------- phase 2
def reference(q, k, v, comp, layer: int):
    """Dense masked reference in float64 from the same (rounded) inputs, on the same device."""
    q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
    return (q64, k64, v64), create_backend("dense").attend(q64, k64, v64, comp, layer)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-30))


def check_exact(name: str, cfg: dict, dtype: torch.dtype, n: int, device: torch.device) -> dict:
    """Output, gradients, causality and empty rows of backend ``name`` on one pattern (all layers of its period)."""
    be = backend_for(name, device)
    comp = ap.build_attention({**cfg, "num_heads": 4})
    grad = trains(name, device)
    row = {"backend": name, "pattern": _label(cfg), "dtype": str(dtype).replace("torch.", ""), "n": n}
    out_err, grad_err, causal, empty_ok = 0.0, None, True, True
    for layer in range(comp.num_layers_period):
        q, k, v = (x.requires_grad_(grad) for x in qkv(n, dtype, device, Dv=24, seed=layer))
        with torch.set_grad_enabled(grad):
            out = be.attend(q, k, v, comp, layer)
        (q64, k64, v64), ref = reference(q, k, v, comp, layer)
        out_err = max(out_err, rel_err(out.detach(), ref.detach()))
        if not torch.isfinite(out).all():
            out_err = math.inf
        if grad:
            g = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(device)
            got = torch.autograd.grad(out, (q, k, v), g.to(dtype))
            want = torch.autograd.grad(ref, (q64, k64, v64), g)
            errs = [rel_err(a, b) if torch.isfinite(a).all() else math.inf for a, b in zip(got, want)]
            grad_err = max(grad_err or 0.0, *errs)
        causal &= _causal_forward(be, comp, layer, n, dtype, device)
        if grad:
            causal &= _causal_grad(be, comp, layer, n, dtype, device)
        mask = comp.mask(n, layer, device=device)  # (H', T, T)
        empty = ~mask.any(-1)  # (H', T)
        if bool(empty.any()):
            rows = empty.expand(4, n) if empty.shape[0] == 1 else empty
            empty_ok &= bool((out.detach()[0][rows] == 0).all())
    tol = TOLERANCE[dtype]
    row.update(
        out_err=out_err, grad_err=grad_err, causal=causal, empty_rows=empty_ok,
        ok=out_err <= tol and (grad_err is None or grad_err <= tol) and causal and empty_ok,
        note="" if grad else "forward only (no backward on this device)",
    )  # fmt: skip
    return row


def _causal_forward(be, comp, layer, n, dtype, device) -> bool:
    """Changing keys/values after position t leaves outputs 0..t bit-identical."""
    q, k, v = qkv(n, dtype, device, Dv=24, seed=7)
    t = n // 2
    with torch.no_grad():
        base = be.attend(q, k, v, comp, layer)
        k2, v2 = k.clone(), v.clone()
        k2[:, :, t + 1 :] += 1.0
        v2[:, :, t + 1 :] -= 1.0
        moved = be.attend(q, k2, v2, comp, layer)
    return bool(torch.equal(base[:, :, : t + 1], moved[:, :, : t + 1]))


def _causal_grad(be, comp, layer, n, dtype, device) -> bool:
    """The gradient of output t w.r.t. q, k, v at positions > t is exactly zero."""
    q, k, v = (x.requires_grad_() for x in qkv(n, dtype, device, Dv=24, seed=8))
    t = n // 3
    be.attend(q, k, v, comp, layer)[:, :, t].float().sum().backward()
    return all(bool((x.grad[:, :, t + 1 :] == 0).all()) for x in (q, k, v)) and bool(v.grad[:, :, : t + 1].abs().sum() > 0)


def _label(cfg: dict) -> str:
    extra = ", ".join(f"{k}={v}" for k, v in cfg.items() if k != "name")
    return f"{cfg['name']} ({extra})" if extra else cfg["name"]


def phase_exactness(args, device, have, budget: Budget, notes: list[str]) -> list[dict]:
    names = ["flex", "blocksparse"] + (["xformers"] if have.get("xformers") else [])
    patterns = EXACT_PATTERNS if device.type == "cuda" else [EXACT_PATTERNS[i] for i in SIZES["cpu"]["exact_patterns"]]
    if not have.get("xformers"):
        notes.append("exactness: xformers is not importable here; its rows are skipped")
    rows = []
    for name in names:
        ok, why = backend_availability(name, device)
        if not ok:
            notes.append(f"exactness: backend {name} unavailable on {device}: {why}")
            continue
        for dtype in (torch.float32, torch.bfloat16):
            for cfg in patterns:
                if name == "xformers":
                    from attention_patterns.backends.xformers import XFormersBackend

                    comp = ap.build_attention({**cfg, "num_heads": 4})
                    if not all(XFormersBackend.supports(comp, layer) for layer in range(comp.num_layers_period)):
                        continue  # no exact attention bias for this pattern (the backend says so itself)
                if budget.left() < args.reserve_s:
                    notes.append(f"exactness: time budget reached before {name} {dtype} {_label(cfg)}")
                    return rows
                try:
                    rows.append(check_exact(name, cfg, dtype, SIZES[device.type]["exact_n"], device))
                except Exception as err:  # a failing backend is a result, not the end of the check
                    rows.append(_failed_row(name, cfg, dtype, err))
                print(f"# exactness: {_row_line(rows[-1])}", flush=True)
    return rows


def _failed_row(name, cfg, dtype, err) -> dict:
    return {
        "backend": name, "pattern": _label(cfg), "dtype": str(dtype).replace("torch.", ""), "ok": False,
        "note": f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}",
        "trace": traceback.format_exc(limit=3),
    }  # fmt: skip


def _row_line(r: dict) -> str:
    return " ".join(f"{k}={r[k]}" for k in ("backend", "pattern", "dtype", "ok", "out_err", "grad_err", "note") if k in r)


# ----------------------------------------------------------------------------------------- phase 3
def _sdpa_flash(q, k, v):
    """Dense causal SDPA on its FlashAttention kernel (any kernel when flash cannot serve the inputs)."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    except (ImportError, RuntimeError):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def attention_config(pattern: str, n: int) -> dict:
    stride = 2 ** math.floor(math.log2(math.sqrt(n)) + 0.5)  # as scripts/benchmark_attention.py
    cfg = {"name": pattern, "num_heads": 4, "stride": stride, "mode": "split"}
    if pattern == "fixed":
        cfg["c"] = 16
    return cfg


def phase_attention(args, device, have, budget: Budget, notes: list[str]) -> list[dict]:
    """Forward (no grad) and forward+backward medians, interleaved round by round, against SDPA."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    sizes = SIZES[device.type]
    names = ["flex", "blocksparse"] + (["xformers"] if have.get("xformers") else [])
    rows = []
    for pattern in ("strided", "fixed"):
        for n in sizes["attention_n"]:
            if budget.left() < args.reserve_s:
                notes.append(f"attention: time budget reached before {pattern} n={n}")
                return rows
            cfg = attention_config(pattern, n)
            comp = ap.build_attention(cfg)
            inputs = [x.requires_grad_() for x in qkv(n, dtype, device, D=64)]
            g = torch.randn_like(inputs[2])
            attends: dict[str, Callable] = {"sdpa-flash": _sdpa_flash}
            for name in names:
                if not backend_availability(name, device)[0]:
                    continue
                if name == "blocksparse" and device.type == "cuda" and n > 12288:
                    continue  # its CUDA path is a matmul fallback (O(n w) memory per call), not a GPU kernel
                if name == "xformers":
                    from attention_patterns.backends.xformers import XFormersBackend

                    if not XFormersBackend.supports(comp):
                        continue  # fixed's summary columns have no exact xFormers bias
                be = backend_for(name, device) if device.type == "cpu" else create_backend(name)
                attends[name] = lambda q, k, v, be=be, comp=comp: be.attend(q, k, v, comp)
            plain = [x.detach() for x in inputs]  # no grad anywhere: flex serves these on CPU too
            fwd = {c: _forward_step(a, plain) for c, a in attends.items()}
            fb = {c: _train_step(a, inputs, g) for c, a in attends.items() if trains(c, device)}
            try:
                t_fwd, _ = bc.interleaved_medians(fwd, sizes["repeats"], device)
                t_fb, _ = bc.interleaved_medians(fb, sizes["repeats"], device)
            except Exception as err:
                notes.append(f"attention: {pattern} n={n} failed: {type(err).__name__}: {str(err)[:200]}")
                continue
            for case in attends:
                rows.append(
                    {
                        "pattern": pattern, "n": n, "stride": cfg["stride"], "backend": case, "dtype": str(dtype)[6:],
                        "fwd_ms": t_fwd[case] * 1e3, "fwd_ratio": t_fwd["sdpa-flash"] / t_fwd[case],
                        "fwdbwd_ms": t_fb[case] * 1e3 if case in t_fb else None,
                        "ratio": t_fb["sdpa-flash"] / t_fb[case] if case in t_fb else None,
                        "peak_mib": peak_mib(fb[case], device) if case in fb else None,
                    }
                )  # fmt: skip
            print(f"# attention: {pattern} n={n} done", flush=True)
            del fwd, fb, inputs, attends
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def _forward_step(attend: Callable, inputs: list[torch.Tensor]) -> Callable[[], None]:
    def step():
        with torch.no_grad():
            attend(*inputs)

    return step


def _train_step(attend: Callable, inputs: list[torch.Tensor], grad: torch.Tensor) -> Callable[[], None]:
    def step():
        for x in inputs:
            x.grad = None
        attend(*inputs).backward(grad)

    return step


# ----------------------------------------------------------------------------------------- phase 4
def build_step_model(shape: str, variant: str, args, device: torch.device, small: bool):
    from zoo.registry import build

    spec = STEP_SHAPES[shape]
    size = spec["small" if small else "full"]
    over = dict(size["overrides"], n_layer=SIZES[device.type]["layers"], dropout=0.0, checkpoint_every=0)
    if variant == "dense":
        over.update(attention={"name": "dense"}, attention_backend=SdpaCausal.name)
    else:
        mode = "merged" if (shape == "enwik8" and variant == "fixed") else "split"
        over.update(attention={"name": variant, "mode": mode, **size["attention"][variant]}, attention_backend="auto")
    if shape == "enwik8":
        over["embedding"] = "absolute"  # the dense pattern has no stride for attention embeddings
    torch.manual_seed(0)
    return build(spec["model"], **over).to(device).train()


def phase_training(args, device, budget: Budget, notes: list[str]) -> list[dict]:
    small = device.type != "cuda"
    rows = []
    for shape in STEP_SHAPES:
        if budget.left() < args.reserve_s:
            notes.append(f"training: time budget reached before the {shape} shape")
            break
        models = {v: build_step_model(shape, v, args, device, small) for v in ("dense", "strided", "fixed")}
        n = next(iter(models.values())).config.seq_len
        idx = torch.randint(0, 256, (1, n), generator=torch.Generator().manual_seed(0)).to(device)
        steps = {}
        for variant, model in models.items():
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

            def step(model=model, opt=opt, idx=idx):
                opt.zero_grad(set_to_none=True)
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    loss = model.loss(idx)
                loss.backward()
                opt.step()

            steps[variant] = step
        try:
            med, _ = bc.interleaved_medians(steps, max(3, SIZES[device.type]["repeats"] // 2), device)
        except Exception as err:
            notes.append(f"training: {shape} failed: {type(err).__name__}: {str(err)[:200]}")
            continue
        for variant, model in models.items():
            cfg = model.config
            rows.append(
                {
                    "shape": shape, "variant": variant, "n": n, "layers": cfg.n_layer, "d": cfg.n_embd,
                    "attention": dict(cfg.attention), "backend": model.resolved_backend(n, device)
                    if variant != "dense" else "sdpa (is_causal)",
                    "step_ms": med[variant] * 1e3, "tokens_per_s": n / med[variant],
                    "speedup": med["dense"] / med[variant], "peak_mib": peak_mib(steps[variant], device),
                }
            )  # fmt: skip
        print(f"# training: {shape} done", flush=True)
        del models, steps
    return rows


# ----------------------------------------------------------------------------------------- phase 5
def phase_sampling(args, device, budget: Budget, notes: list[str]) -> list[dict]:
    if not importable("zoo.generate"):
        notes.append("sampling: zoo.generate is not in this checkout; cached sampling is not measured")
        return []
    from zoo.generate import generate
    from zoo.registry import build

    rows = []
    num, new = (16, 784) if device.type == "cuda" else (2, 64)
    for name in ("strided", "fixed", "dense"):
        if budget.left() < args.reserve_s:
            notes.append(f"sampling: time budget reached before {name}")
            break
        torch.manual_seed(0)
        model = build(name).to(device).eval()
        gen = torch.Generator(device="cpu").manual_seed(0)
        try:
            generate(model, 1, max_new=8, generator=gen)  # warm-up (kernels, caches)
            sync(device)
            t0 = time.perf_counter()
            out = generate(model, num, max_new=new, generator=gen)
            sync(device)
            seconds = time.perf_counter() - t0
        except Exception as err:
            notes.append(f"sampling: {name} failed: {type(err).__name__}: {str(err)[:200]}")
            continue
        rows.append({"model": name, "num": num, "bytes": int(out.shape[0] * new), "seconds": seconds, "bytes_per_s": num * new / seconds})
    return rows


# ----------------------------------------------------------------------------------------- report
def _fmt(x, spec=".1f", none="-") -> str:
    return none if x is None else format(x, spec)


def markdown(data: dict) -> dict[str, str]:
    """Renderer for ``docs/results/gpu_check.json``: ``main`` (summary) and one table per phase."""
    t = data.get("tests") or {}
    exact = data.get("exactness") or []
    att = data.get("attention") or []
    train = data.get("training") or []
    samp = data.get("sampling") or []
    bad = [r for r in exact if not r.get("ok")]
    best = max(
        (r for r in att if r["pattern"] == ATTENTION_TARGET["pattern"] and r["n"] == ATTENTION_TARGET["n"]
         and r["backend"] in ("flex", "xformers") and r.get("ratio")),
        key=lambda r: r["ratio"], default=None,
    )  # fmt: skip
    summary = [
        "| check | result |",
        "|---|---|",
        f"| device | {data.get('device_name', data.get('device'))} (torch {data.get('torch')}) |",
        f"| gpu-marked tests | {t.get('summary') or t.get('status', '-')} |",
        f"| exactness vs the dense reference | {len(exact) - len(bad)} of {len(exact)} cases pass"
        + (f" (failing: {', '.join(r['backend'] + ' ' + r['pattern'] + ' ' + r['dtype'] for r in bad[:6])})" if bad else "")
        + " |",
        f"| strided fwd+bwd vs FlashAttention SDPA, n = {ATTENTION_TARGET['n']:,} (target >= {ATTENTION_TARGET['ratio']:g}x) | "
        + (f"{best['backend']} {best['ratio']:.2f}x ({'met' if best['ratio'] >= ATTENTION_TARGET['ratio'] else 'not met'})"
           if best else "not measured at this size") + " |",
    ]
    summary += [f"| note | {n} |" for n in data.get("notes", [])]
    tables = {"main": "\n".join(summary)}
    tables["exactness"] = bc.table(
        ["backend", "pattern", "dtype", "n", "output err", "grad err", "causal", "empty rows", "ok", "note"],
        [
            [r["backend"], r["pattern"], r["dtype"], str(r.get("n", "-")), _fmt(r.get("out_err"), ".1e"),
             _fmt(r.get("grad_err"), ".1e"), str(r.get("causal", "-")), str(r.get("empty_rows", "-")),
             "yes" if r.get("ok") else "**no**", r.get("note", "")]
            for r in exact
        ],
    )  # fmt: skip
    tables["attention"] = bc.table(
        ["pattern", "n", "l", "backend", "dtype", "fwd ms", "fwd ratio", "fwd+bwd ms", "fwd+bwd ratio", "peak MiB"],
        [
            [r["pattern"], f"{r['n']:,}", str(r["stride"]), r["backend"], r["dtype"], _fmt(r["fwd_ms"]),
             f"{r['fwd_ratio']:.2f}x", _fmt(r["fwdbwd_ms"]), _fmt(r["ratio"], ".2f") + ("x" if r["ratio"] else ""),
             _fmt(r["peak_mib"], ".0f")]
            for r in att
        ],
    )  # fmt: skip
    tables["training"] = bc.table(
        ["shape", "variant", "n", "layers", "backend", "step ms", "tokens/s", "speed-up vs dense", "peak MiB"],
        [
            [r["shape"], r["variant"], f"{r['n']:,}", str(r["layers"]), r["backend"], _fmt(r["step_ms"]),
             f"{r['tokens_per_s']:,.0f}", f"{r['speedup']:.2f}x", _fmt(r["peak_mib"], ".0f")]
            for r in train
        ],
    )  # fmt: skip
    tables["sampling"] = (
        bc.table(
            ["model", "samples", "bytes", "seconds", "bytes/s"],
            [[r["model"], str(r["num"]), f"{r['bytes']:,}", f"{r['seconds']:.2f}", f"{r['bytes_per_s']:,.0f}"] for r in samp],
        )
        if samp
        else "Cached sampling was not measured (see the notes above)."
    )
    return tables


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (small sizes, as in CI)")
    p.add_argument("--wheels", help="folder of wheels to install missing packages from (pytest, xformers)")
    p.add_argument("--budget-s", type=float, default=None, help="time budget of the whole check (default 420 on CUDA)")
    p.add_argument("--tests-budget-s", type=float, default=150.0, help="at most this long for the gpu tests")
    p.add_argument("--reserve-s", type=float, default=20.0, help="a phase starts no case with less time left")
    p.add_argument("--phases", nargs="+", default=["tests", "exactness", "attention", "training", "sampling"])
    p.add_argument("--save", default=None, help="result name for docs/results/NAME.json (default gpu_check on CUDA)")
    p.add_argument("--out", help="write the record to this file instead of docs/results/")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")  # CPU: eager, on purpose
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available here; use --device cpu for the small CPU run", file=sys.stderr)
        return 2
    if device.type not in SIZES:
        print(f"error: --device must be cuda or cpu, got {args.device!r}", file=sys.stderr)
        return 2
    budget = Budget(args.budget_s if args.budget_s is not None else (420.0 if device.type == "cuda" else 600.0))
    for cls in (SdpaCausal,):
        if cls.name not in list_backends():
            register_backend(cls)
    notes: list[str] = []
    have = ensure_packages(args.wheels, notes)
    print(f"# machine: {bc.machine()}")
    print(f"# device {device}; importable: {have}", flush=True)
    data = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
        "torch": torch.__version__,
        "importable": have,
        "budget_s": budget.total,
        "notes": notes,
    }
    phases = {
        "tests": lambda: phase_tests(args, have, budget, notes),
        "exactness": lambda: phase_exactness(args, device, have, budget, notes),
        "attention": lambda: phase_attention(args, device, have, budget, notes),
        "training": lambda: phase_training(args, device, budget, notes),
        "sampling": lambda: phase_sampling(args, device, budget, notes),
    }
    for name in args.phases:
        if name not in phases:
            print(f"error: unknown phase {name!r}; phases are {list(phases)}", file=sys.stderr)
            return 2
    for name in args.phases:
        t0 = time.perf_counter()
        try:
            data[name] = phases[name]()
        except Exception as err:  # report and go on: one broken phase must not hide the others
            notes.append(f"{name}: {type(err).__name__}: {str(err)[:200]}")
            data[name] = [] if name != "tests" else {"status": f"error: {err}"}
        print(f"# phase {name}: {time.perf_counter() - t0:.1f} s", flush=True)
    data["seconds"] = budget.total - budget.left()
    tables = markdown(data)
    for key in ("main", "exactness", "attention", "training", "sampling"):
        print(f"\n## {key}\n\n{tables[key]}")
    name = args.save or ("gpu_check" if device.type == "cuda" else None)
    if name or args.out:
        path = doc_results.save(name or "gpu_check", data, renderer="gpu_check:markdown", path=args.out)
        print(f"# wrote {path}")
    exact_ok = all(r.get("ok") for r in data.get("exactness", []))
    tests_ok = not (data.get("tests") or {}).get("failed")
    return 0 if exact_ok and tests_ok else 1


if __name__ == "__main__":
    sys.exit(main())
