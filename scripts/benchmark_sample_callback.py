"""What the training pictures cost: the default recipe with ``logger=wandb``, pictures on vs off.

Two short runs of the default recipe (same seed, offline wandb; no final val/test), one with the default
picture counts of ``configs/logger/wandb.yaml`` and one with ``logger.completions=0 logger.sample_images=0``.
The time spent inside the callback's hooks is measured directly and projected onto the full default run:
its periodic evaluations (every ``trainer.eval_every`` steps before the last) each cost one completion
grid, its end one unconditional grid; the percentage is over the default run's training steps alone, at
the speed measured here (its evaluations only add time, so the real share is smaller)::

    python scripts/benchmark_sample_callback.py --steps 200 --eval-every 50

Writes ``docs/results/sampling_overhead.json`` unless ``--no-save``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "scripts", ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_common import machine, table  # noqa: E402

from zoo import sample_callbacks  # noqa: E402
from zoo.train import run  # noqa: E402


def timed_run(overrides: list[str]) -> tuple[float, float]:
    """``(wall seconds of the run, seconds of its training steps)``."""
    from conftest import compose

    cfg = compose("train", overrides)
    with tempfile.TemporaryDirectory() as folder:
        tic = time.perf_counter()
        metrics = run(cfg, folder)
        return time.perf_counter() - tic, float(metrics["train_time_s"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--no-save", action="store_true")
    args = p.parse_args(argv)
    os.environ.setdefault("WANDB_SILENT", "true")
    from conftest import compose

    default = compose("train", ["logger=wandb"])

    hooks: dict[str, list[float]] = {"on_evaluation": [], "on_fit_end": []}
    for name in hooks:  # time every call of the callback's hooks
        original = getattr(sample_callbacks.SampleImages, name)

        def wrapper(self, *a, _original=original, _name=name, **k):
            tic = time.perf_counter()
            _original(self, *a, **k)
            hooks[_name].append(time.perf_counter() - tic)

        setattr(sample_callbacks.SampleImages, name, wrapper)

    common = [
        "logger=wandb",
        f"trainer.steps={args.steps}",
        f"trainer.eval_every={args.eval_every}",
        "trainer.progress=false",
        "trainer.final_val=false",  # the final evaluations do not involve the pictures
        "trainer.test=false",
        "trainer.checkpoint=false",
    ]
    data = {
        "machine": machine(),
        "load_start": os.getloadavg()[0],
        "steps": args.steps,
        "eval_every": args.eval_every,
    }
    data["with_s"], _ = timed_run(common)
    data["without_s"], train_s = timed_run([*common, "logger.completions=0", "logger.sample_images=0"])
    data["load_end"] = os.getloadavg()[0]
    data["eval_s"] = sum(hooks["on_evaluation"]) / max(1, len(hooks["on_evaluation"]))
    data["final_s"] = sum(hooks["on_fit_end"]) / max(1, len(hooks["on_fit_end"]))
    data["evaluations"] = len(hooks["on_evaluation"])
    data["completions"] = int(default.logger.completions)
    data["sample_images"] = int(default.logger.sample_images)
    evals = len(range(default.trainer.eval_every, default.trainer.steps, default.trainer.eval_every))
    data["default_evaluations"] = evals
    # the default run's training steps alone, at this run's speed (its evaluations would only add time)
    data["default_steps"] = int(default.trainer.steps)
    data["default_train_s"] = train_s / args.steps * int(default.trainer.steps)
    data["projected_s"] = evals * data["eval_s"] + data["final_s"]
    data["projected_pct"] = 100 * data["projected_s"] / data["default_train_s"]
    print(markdown(data)["main"])
    if not args.no_save:
        from doc_results import save

        print(f"wrote {save('sampling_overhead', data, renderer='benchmark_sample_callback:markdown')}")
    return 0


def markdown(data: dict) -> dict[str, str]:
    rows = [
        [
            f"{data['completions']} completions per evaluation",
            f"{data['eval_s']:.2f} s",
            f"{data['default_evaluations']} x",
        ],
        [f"{data['sample_images']} unconditional samples at the end", f"{data['final_s']:.2f} s", "1 x"],
        [
            "projected on the default run",
            f"{data['projected_s']:.1f} s",
            f"+{data['projected_pct']:.1f}% over its {data['default_steps']} training steps "
            f"({data['default_train_s']:.0f} s at this run's speed)",
        ],
    ]
    main = table(["pictures (logger=wandb)", "time", "in the default run"], rows)
    note = (
        f"\n\nMeasured in a {data['steps']}-step run of the default recipe with `logger=wandb` "
        f"(evaluation every {data['eval_every']} steps): {data['with_s']:.0f} s with the pictures, "
        f"{data['without_s']:.0f} s without; {data['machine']}, {data['load_end']:.1f} at the end."
    )
    return {"main": main + note}


if __name__ == "__main__":
    sys.exit(main())
