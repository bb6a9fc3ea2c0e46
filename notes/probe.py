"""Run learning-speed probes one after another (one thread each) and append their results to notes/probes.md.

    python notes/probe.py notes/probes_fmnist.txt      # lines: NAME  override override ...

A probe whose folder already holds metrics.json is not run again. The code is run from a frozen copy of
the tree (SRC), so edits made while the probes run do not change them.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = Path(os.environ.get("PROBE_SRC", ROOT))
OUT = Path(os.environ.get("PROBE_OUT", "/tmp/repro_probes"))
PY = "/work/main/.venv/bin/python"
COMMON = [
    "trainer.threads=1",
    "trainer.checkpoint=false",
    "trainer.progress=false",
    "trainer.test=false",
    "trainer.final_val=true",
]
TABLE = ROOT / "notes" / "probes.md"


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run(name: str, overrides: list[str]) -> None:
    run_dir = OUT / name
    metrics = run_dir / "metrics.json"
    if not metrics.is_file():
        run_dir.mkdir(parents=True, exist_ok=True)
        before = loadavg()
        tic = time.time()
        cmd = [PY, str(SRC / "scripts" / "train.py"), *COMMON, *overrides, f"hydra.run.dir={run_dir}"]
        env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
        with open(run_dir / "stdout.txt", "w") as fh:
            rc = subprocess.call(cmd, cwd=SRC, env=env, stdout=fh, stderr=subprocess.STDOUT)
        wall = time.time() - tic
        (run_dir / "probe.json").write_text(
            json.dumps(
                {
                    "overrides": overrides,
                    "rc": rc,
                    "wall_s": wall,
                    "load_before": before,
                    "load_after": loadavg(),
                }
            )
        )
        if rc != 0 or not metrics.is_file():
            with open(TABLE, "a") as fh:
                fh.write(
                    f"| {name} | `{' '.join(overrides)}` | FAILED rc={rc} (see {run_dir}/stdout.txt) |\n"
                )
            return
    m = json.loads(metrics.read_text())
    p = json.loads((run_dir / "probe.json").read_text())
    curve = [(h["step"], h["val/bpd"]) for h in m.get("history", []) if "val/bpd" in h]
    curve_s = " ".join(f"{s}:{v:.3f}" for s, v in curve)
    batch = next((o.split("=", 1)[1] for o in overrides if o.startswith("trainer.batch_size=")), "8")
    row = (
        f"| {name} | `{' '.join(overrides)}` | {m['step']} x {batch} | {m.get('val_bpd', float('nan')):.4f} | "
        f"{m['train_bpd']:.3f} | {m['tokens_per_s']:,.0f} | {p['wall_s'] / 60:.1f} min | {p['load_before']} | {curve_s} |\n"
    )
    text = TABLE.read_text() if TABLE.is_file() else ""
    if f"| {name} |" not in text:
        with open(TABLE, "a") as fh:
            fh.write(row)


def pending(queue: Path) -> tuple[str, list[str]] | None:
    """The first probe of the queue file without results (the file is re-read: it can grow while probes run)."""
    for line in queue.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, *overrides = shlex.split(line)
            if not (OUT / name / "metrics.json").is_file() and not (OUT / name / "probe.json").is_file():
                return name, overrides
    return None


def main() -> None:
    queue = Path(sys.argv[1])
    while (todo := pending(queue)) is not None:
        name, overrides = todo
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(overrides)}", flush=True)
        run(name, overrides)


if __name__ == "__main__":
    main()
