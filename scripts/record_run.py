"""Run ``scripts/train.py`` with some overrides, time it, and record its metrics in ``docs/results/NAME.json``.

    python scripts/record_run.py default_run                       # the README's default-run line (`make run`)
    python scripts/record_run.py default_ema -- trainer.ema_decay=0.999
    python scripts/record_run.py NAME --run-dir runs/x -- model=fixed trainer.steps=400

The wall time is that of the whole command (start-up, data loading, training and the final
evaluations), as a user of ``make run`` sees it. The record keeps the overrides, the run folder's
``metrics.json`` summary (everything but the per-step history) and the wall time; the README and the
docs show it through ``<!-- gen:result NAME -->`` markers (``scripts/doc_results.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import doc_results  # noqa: E402


def fmt_duration(seconds: float) -> str:
    """``3 min 09 s`` style."""
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def markdown(data: dict) -> str:
    """One table row per recorded run: command, steps x batch, test and val bits/dim, wall time."""
    m = data["metrics"]
    overrides = data["overrides"]
    cmd = "python scripts/train.py" + (" " + " ".join(overrides) if overrides else "")
    label = f"`make run` = `{cmd}`" if not overrides else f"`{cmd}`"
    trainer = data.get("trainer", {})
    steps = f"{m.get('step', trainer.get('steps', 0)):,} x {trainer.get('batch_size', '?')}"
    test = f"**{m['test_bpd']:.4f}** ({m.get('test_sequences', '?'):,} sequences)" if "test_bpd" in m else "-"
    val = f"{m['val_bpd']:.4f}" if "val_bpd" in m else "-"
    params = f"{m['num_params']:,}" if "num_params" in m else "?"
    tps = f"{m['tokens_per_s']:,.0f}" if "tokens_per_s" in m else "-"
    rows = [
        "| command | parameters | steps x batch | test bits/dim | val bits/dim | train tokens/s | wall time |",
        "|---|---|---|---|---|---|---|",
        f"| {label} | {params} | {steps} | {test} | {val} | {tps} | **{fmt_duration(data['wall_s'])}** |",
    ]
    if "load_average_at_end" in data:  # other jobs slow the wall time and tokens/s, never the bits/dim
        rows += ["", f"Load average (1 min) at the end of the run: {data['load_average_at_end']:.1f}."]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, overrides = argv[:cut], argv[cut + 1 :]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", help="result name: docs/results/NAME.json")
    p.add_argument("--run-dir", help="the run folder (default: a temporary folder, deleted afterwards)")
    p.add_argument("--out", help="write the record here instead of docs/results/NAME.json")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(args.run_dir) if args.run_dir else Path(tmp) / "run"
        cmd = [sys.executable, str(REPO / "scripts" / "train.py"), *overrides, f"hydra.run.dir={run_dir}"]
        print("$", shlex.join(cmd), flush=True)
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, env=os.environ.copy())
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            print(f"record_run: the run failed (exit {proc.returncode}); nothing recorded", file=sys.stderr)
            return proc.returncode
        metrics = json.loads((run_dir / "metrics.json").read_text())
        from omegaconf import OmegaConf

        resolved = OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra" / "config.yaml"), resolve=True)
    metrics.pop("history", None)
    data = {
        "overrides": overrides,
        "wall_s": wall,
        "load_average_at_end": os.getloadavg()[0],
        "metrics": metrics,
        "trainer": resolved["trainer"],
        "model": resolved["model"],
    }
    command = "python scripts/record_run.py " + shlex.join(argv + (["--", *overrides] if overrides else []))
    path = doc_results.save(args.name, data, renderer="record_run:markdown", command=command, path=args.out)
    print(markdown(data))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
