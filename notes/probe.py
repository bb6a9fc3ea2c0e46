"""Run learning-speed probes (one thread each) from a queue file and write their results to notes/probes.md.

    python notes/probe.py notes/probes_queue.txt          # run the queue (several runners may share it)
    python notes/probe.py notes/probes_queue.txt --table  # rewrite the table of notes/probes.md

Queue lines: ``NAME override override ...``. A runner claims a probe by creating its folder, so a probe
whose folder exists is never started twice; the queue file is re-read after every probe, so it can grow
while the runners work. The code is run from a frozen copy of the tree (PROBE_SRC), so edits made while
the probes run do not change them.
"""

from __future__ import annotations

import datetime as dt
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
HEADER = "| name | overrides | steps x batch | val bits/dim | train bits/dim | tokens/s | wall | load | val curve (step:bpd) |"


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def queue(path: Path) -> list[tuple[str, list[str]]]:
    out = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, *overrides = shlex.split(line)
            out.append((name, overrides))
    return out


def claim(path: Path) -> tuple[str, list[str]] | None:
    """The first probe of the queue nobody has started; its folder is created (the claim)."""
    OUT.mkdir(parents=True, exist_ok=True)
    for name, overrides in queue(path):
        try:
            (OUT / name).mkdir()
        except FileExistsError:
            continue
        return name, overrides
    return None


def run(name: str, overrides: list[str]) -> None:
    run_dir = OUT / name
    info = {"overrides": overrides, "load_before": loadavg(), "started": time.time(), "src": str(SRC)}
    (run_dir / "probe.json").write_text(json.dumps(info))
    cmd = [PY, str(SRC / "scripts" / "train.py"), *COMMON, *overrides, f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    with open(run_dir / "stdout.txt", "w") as fh:
        info["rc"] = subprocess.call(cmd, cwd=SRC, env=env, stdout=fh, stderr=subprocess.STDOUT)
    info.update(wall_s=time.time() - info["started"], load_after=loadavg())
    (run_dir / "probe.json").write_text(json.dumps(info))


def _wall_from_log(run_dir: Path) -> float | None:
    stamps = []
    for line in (run_dir / "train.log").read_text().splitlines():
        if line.startswith("[20"):
            stamps.append(dt.datetime.strptime(line[1:20], "%Y-%m-%d %H:%M:%S"))
    return (stamps[-1] - stamps[0]).total_seconds() if len(stamps) > 1 else None


def row(name: str, overrides: list[str]) -> str | None:
    run_dir = OUT / name
    if not run_dir.is_dir():
        return None
    probe = json.loads((run_dir / "probe.json").read_text()) if (run_dir / "probe.json").is_file() else {}
    if not (run_dir / "metrics.json").is_file():
        if "rc" in probe:
            return f"| {name} | `{' '.join(overrides)}` | FAILED rc={probe['rc']} | | | | | | |"
        return None  # still running
    m = json.loads((run_dir / "metrics.json").read_text())
    curve = " ".join(f"{h['step']}:{h['val/bpd']:.3f}" for h in m.get("history", []) if "val/bpd" in h)
    batch = next((o.split("=", 1)[1] for o in overrides if o.startswith("trainer.batch_size=")), None)
    if batch is None:
        cfg = (run_dir / ".hydra" / "config.yaml").read_text()
        batch = cfg.split("batch_size:", 1)[1].split()[0]
    wall = probe.get("wall_s") or _wall_from_log(run_dir)
    wall_s = f"{wall / 60:.1f} min" if wall else "?"
    return (
        f"| {name} | `{' '.join(overrides)}` | {m['step']} x {batch} | {m.get('val_bpd', float('nan')):.4f} | "
        f"{m['train_bpd']:.3f} | {m['tokens_per_s']:,.0f} | {wall_s} | {probe.get('load_before', '?')} | {curve} |"
    )


def write_table(path: Path) -> None:
    text = TABLE.read_text()
    head = text[: text.index(HEADER)] if HEADER in text else text
    rows = [r for r in (row(n, o) for n, o in queue(path)) if r]
    TABLE.write_text(head + HEADER + "\n|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")


def main() -> None:
    path = Path(sys.argv[1])
    if "--table" in sys.argv[2:]:
        write_table(path)
        return
    while (todo := claim(path)) is not None:
        name, overrides = todo
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(overrides)}", flush=True)
        run(name, overrides)
        write_table(path)


if __name__ == "__main__":
    main()
