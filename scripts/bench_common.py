"""Shared helpers of the benchmark scripts: timing, peak memory, machine description.

* :func:`interleaved_medians` - every case runs once per round, rounds repeat, medians are taken:
  load from other processes hits all cases alike, so ratios measured in one run are fair.
* :func:`peak_memory_mib` - peak memory of one callable in a fresh child process. On CPU: the
  child runs with ``MALLOC_MMAP_THRESHOLD_`` fixed so that freed tensors go back to the OS, resets
  its peak-RSS counter (``/proc/self/clear_refs``) after a warm-up, and reports ``VmHWM`` minus the
  RSS just before the measured call. On CUDA: ``torch.cuda.max_memory_allocated`` minus the
  allocation before the call.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0", "MALLOC_ARENA_MAX": "2"}


def register_all_backends() -> None:
    """Import the backend modules so that they register (no-op once the package imports them)."""
    import attention_patterns.backends as backends

    for mod in ("blocksparse", "flex", "xformers", "auto"):
        if mod not in backends.list_backends():
            __import__(f"attention_patterns.backends.{mod}")


def machine() -> str:
    """One line naming the machine the numbers come from."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (
        f"{cpu}, {os.cpu_count()} cores visible, torch {torch.__version__}, {torch.get_num_threads()} threads{gpu}; "
        f"load average {os.getloadavg()[0]:.1f} at start"
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def interleaved_medians(
    cases: dict[str, Callable[[], None]], repeats: int, device: torch.device, warmup: int = 1
):
    """Median seconds per case; each round runs every case once (interleaved)."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}, times


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_here(fn: Callable[[], None], device: torch.device) -> float:
    """Peak extra memory (MiB) of ``fn`` in this process (called after a warm-up by the child)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS counter (VmHWM)
    base = _status_kib("VmRSS")
    fn()
    return (_status_kib("VmHWM") - base) / 1024


def peak_memory_mib(script: str, args: dict, timeout: float = 1800) -> dict:
    """Run ``python script --child JSON`` in a fresh process; it prints one JSON line with the result."""
    env = {**os.environ, **MALLOC_ENV}
    cmd = [sys.executable, script, "--child", json.dumps(args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {proc.returncode}: {' | '.join(tail)}"}
    return json.loads(lines[-1])


def fmt_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.1f}"


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def write_json(path: str | None, results: list) -> None:
    """Write ``results`` with the machine line and the command line to ``path`` (nothing if None)."""
    if path:
        Path(path).write_text(json.dumps({"machine": machine(), "argv": sys.argv, "results": results}, indent=1))
