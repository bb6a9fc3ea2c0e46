"""What the command-line apps do with bad and suspicious input: the message, the exit status (a docs table).

    python scripts/bad_inputs.py                 # every case as its own process; writes docs/results/bad_inputs.json
    python scripts/bad_inputs.py --in-process    # every case in this one process (fast; what the tests run)
    python scripts/bad_inputs.py --no-save       # print the table only

Each case is a command line of ``scripts/train.py`` or ``scripts/evaluate.py`` with one mistake (or one
suspicious but legal value), run in a scratch folder that holds the files it needs: a checkpoint of
a tiny run, a truncated, an empty, another library's and a code-carrying ``.pt``, a PNG given as
enwik8, and so on. A case passes when a mistake prints one message without a traceback and exits
non-zero (2 for the library's own messages, 1 for Hydra's), when a suspicious input prints its
warning line exactly once and the run succeeds, and when no file carrying code ran.
``tests/test_cli.py`` runs every case; the docs show the table (``docs/troubleshooting.md``).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import os
import re
import runpy
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

# Every train.py case runs on top of a smoke-sized run (a few seconds on a CPU); on these data unless it says data=
BASE = ["model.n_layer=1", "model.n_embd=16", "trainer=smoke", "trainer.threads=1"]
BASE_DATA = ["data=synthetic", "data.size=16", "data.val_size=4", "data.test_size=4"]


@dataclass
class Case:
    """One command line and what it must do: ``error`` (exit != 0, one message) or ``warning`` (exit 0, one line)."""

    name: str
    app: str  # train | evaluate
    args: list[str]  # WORK = the scratch folder, RUN = the tiny run's folder
    expect: str  # error | warning
    contains: str  # a piece of the message
    exit: int = 2  # for errors: 2 = the library's message, 1 = Hydra's (composition errors)
    note: str = ""  # what the mistake is, for the table


CASES = [
    Case("steps", "train", ["trainer.steps=0"], "error", "trainer.steps must be an integer >= 1, got 0"),
    Case("precision", "train", ["trainer.precision=fp8"], "error", "trainer.precision must be one of"),
    Case(
        "batch", "train", ["trainer.batch_size=64"], "error", "fewer than one batch of trainer.batch_size=64"
    ),
    Case("width", "train", ["model.n_embd=33"], "error", "n_embd=33 must be divisible by n_head=2"),
    Case("pattern", "train", ["model.attention.name=starred"], "error", "unknown attention 'starred'"),
    Case("variant", "train", ["model=strided_xl"], "error", "Could not find 'model/strided_xl'", exit=1),
    Case(
        "key",
        "train",
        ["trainer.learning_rate=1e-3"],
        "error",
        "Could not override 'trainer.learning_rate'",
        exit=1,
    ),
    Case(
        "no data",
        "train",
        ["data=fashion_mnist", "data.root=WORK/nowhere", "data.system_root=null", "data.download=false"],
        "error",
        "Fashion-MNIST not found",
    ),
    Case(
        "root is a file",
        "train",
        ["data=fashion_mnist", "data.root=WORK/fmnist/train-images-idx3-ubyte.gz"],
        "error",
        "is a file, not a folder",
    ),
    Case("truncated", "train", ["trainer.resume=WORK/truncated.pt"], "error", "could not be read"),
    Case("empty", "train", ["trainer.resume=WORK/empty.pt"], "error", "is empty (0 bytes)"),
    Case(
        "foreign",
        "train",
        ["trainer.resume=WORK/resnet18.pt"],
        "error",
        "is not a checkpoint of this library",
    ),
    Case("code", "train", ["trainer.resume=WORK/payload.pt"], "error", "nothing in it ran"),
    Case(
        "other model",
        "train",
        ["trainer.resume=RUN/checkpoints/step_00000004.pt", "model.n_embd=32"],
        "error",
        "does not match this run's model",
    ),
    Case(
        "nothing readable",
        "train",
        ["hydra.run.dir=WORK/all_truncated", "trainer.resume=auto"],
        "error",
        "none of the checkpoints",
        note="every checkpoint of the run folder truncated",
    ),
    Case(
        "occupied folder",
        "train",
        ["hydra.run.dir=WORK/finished"],
        "error",
        "already holds checkpoints",
        note="a new run in the folder of a finished one",
    ),
    Case(
        "dense stride",
        "train",
        ["model.attention.stride=784"],
        "warning",
        "model.attention.stride=784 >= the sequence length 784",
    ),
    Case(
        "binary text",
        "train",
        ["data=enwik8", "data.root=WORK/png", "data.seq_len=64", "model.attention.stride=8"],
        "warning",
        "does not look like text",
        note="a PNG saved as WORK/png/enwik8",
    ),
    Case(
        "eval foreign",
        "evaluate",
        ["checkpoint=WORK/resnet18.pt"],
        "error",
        "is not a checkpoint of this library",
    ),
    Case("eval code", "evaluate", ["checkpoint=WORK/payload.pt"], "error", "nothing in it ran"),
    Case("eval missing", "evaluate", ["checkpoint=WORK/missing.pt"], "error", "does not exist"),
    Case("eval split", "evaluate", ["checkpoint=RUN", "split=dev"], "error", "unknown split 'dev'"),
    Case(
        "eval other data",
        "evaluate",
        [
            "checkpoint=RUN",
            "data.name=fashion_mnist",
            "data.root=WORK/fmnist",
            "data.system_root=null",
            "data.download=false",
            "data.val_size=4",
        ],
        "warning",
        "trained on the data set 'synthetic', on 'fashion_mnist'",
    ),
]


@dataclass
class Outcome:
    """What a case printed and returned, and whether that is what it must do."""

    name: str
    app: str
    args: list[str]
    expect: str
    exit: int
    message: str  # the error (stderr) or the warning line, paths shown as WORK/ and RUN/
    ok: bool
    problems: list[str] = field(default_factory=list)
    note: str = ""


# ----------------------------------------------------------------------------- the scratch folder
def _idx(array: Any) -> bytes:
    header = bytes([0, 0, 0x08, array.dim()]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.numpy().tobytes()


def prepare(work: Path, in_process: bool) -> None:
    """The files the cases need, in ``work``: a tiny run (``work/run``) and the bad files made from it."""
    import torch
    from PIL import Image

    sys.path.insert(0, str(REPO / "tests"))
    from fault_inject import write_foreign_checkpoint, write_payload_checkpoint

    run = work / "run"
    code, out, err = run_app("train", [*BASE_DATA, *BASE, f"hydra.run.dir={run}"], in_process)
    if code != 0:
        raise RuntimeError(f"the tiny run failed (exit {code}):\n{out[-2000:]}\n{err[-2000:]}")
    step = run / "checkpoints" / "step_00000004.pt"
    raw = step.read_bytes()
    (work / "truncated.pt").write_bytes(raw[: len(raw) // 2])
    (work / "empty.pt").write_bytes(b"")
    write_foreign_checkpoint(work / "resnet18.pt")
    write_payload_checkpoint(work / "payload.pt", work / "PAYLOAD_RAN")
    for name, keep in (("finished", True), ("all_truncated", False)):
        shutil.copytree(run, work / name)
        if not keep:
            for path in (work / name / "checkpoints").glob("*.pt"):
                path.write_bytes(path.read_bytes()[:100])
    (work / "png").mkdir()
    gen = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 256, (160, 160, 3), generator=gen, dtype=torch.uint8).numpy()
    Image.fromarray(noise).save(work / "png" / "enwik8", format="PNG")
    fmnist = work / "fmnist"
    fmnist.mkdir()
    for stem, n in (("train", 24), ("t10k", 8)):
        images = torch.randint(0, 256, (n, 28, 28), generator=gen, dtype=torch.uint8)
        labels = torch.arange(n, dtype=torch.uint8) % 10
        (fmnist / f"{stem}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(images)))
        (fmnist / f"{stem}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(labels)))


# ----------------------------------------------------------------------------- running
def run_app(app: str, args: list[str], in_process: bool) -> tuple[int, str, str]:
    """``scripts/APP.py ARGS``: exit status, stdout, stderr (a new process, or this one)."""
    env = {k: v for k, v in os.environ.items() if k not in ("ZOO_FULL_ERROR", "HYDRA_FULL_ERROR")}
    if not in_process:
        cmd = [sys.executable, str(REPO / "scripts" / f"{app}.py"), *args]
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        return proc.returncode, proc.stdout, proc.stderr
    import logging

    from zoo.errors import forget_warnings

    forget_warnings()  # each case is a fresh command: its warnings may fire again
    script = REPO / "scripts" / f"{app}.py"
    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    argv = sys.argv
    try:
        sys.argv = [str(script), *args]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(str(script), run_name="__main__")  # as `python scripts/APP.py ARGS` runs it
                code = 0
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
            except Exception:  # a bug: the traceback is part of what the case printed
                import traceback

                traceback.print_exc()
                code = 1
    finally:
        sys.argv = argv
        for handler in root.handlers:  # Hydra's console and file handlers of this case
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
    return code, out.getvalue(), err.getvalue()


def _shown(text: str, work: Path) -> str:
    run = str(work / "run")
    return text.replace(run, "RUN").replace(str(work), "WORK").replace(str(REPO), "REPO")


def run_case(case: Case, work: Path, in_process: bool) -> Outcome:
    args = [a.replace("RUN", str(work / "run")).replace("WORK", str(work)) for a in case.args]
    if case.app == "train":
        if not any(a.startswith("hydra.run.dir=") for a in args):
            args.append(f"hydra.run.dir={work / 'runs' / case.name.replace(' ', '_')}")
        data = [] if any(a.startswith("data=") for a in args) else BASE_DATA
        args = [*data, *BASE, *args]
    code, out, err = run_app(case.app, args, in_process)
    problems = []
    if "Traceback" in out + err:
        problems.append("printed a traceback")
    if (work / "PAYLOAD_RAN").exists():
        problems.append("a checkpoint's code ran")
    if case.expect == "error":
        message = err.strip()
        if code != case.exit:
            problems.append(f"exit {code}, expected {case.exit}")
        if case.exit == 2 and (not message.startswith("error: ") or message.count("error: ") != 1):
            problems.append("stderr is not one 'error: ...' message")
        if case.contains not in message:
            problems.append(f"the message lacks {case.contains!r}")
    else:
        lines = [line for line in (out + err).splitlines() if case.contains in line]
        message = lines[0].split(" - ", 1)[-1] if lines else ""
        message = re.sub(r"^WARNING \S+: ", "", message)
        if code != 0:
            problems.append(f"exit {code}, expected 0 (a warning only)\n{err[-2000:]}")
        if len(lines) != 1:
            problems.append(f"the warning was printed {len(lines)} times, expected once")
    return Outcome(
        case.name,
        case.app,
        case.args,
        case.expect,
        code,
        _shown(message, work),
        not problems,
        problems,
        case.note,
    )


def run_all(in_process: bool, names: list[str] | None = None) -> list[Outcome]:
    """Prepare a scratch folder and run every case (or those named); the folder is deleted afterwards."""
    with tempfile.TemporaryDirectory(prefix="zoo-bad-inputs-") as tmp:
        work = Path(tmp)
        prepare(work, in_process)
        return [run_case(c, work, in_process) for c in CASES if names is None or c.name in names]


# ----------------------------------------------------------------------------- the table
def _cell(text: str, limit: int = 320) -> str:
    text = text if len(text) <= limit else text[: limit - 1].rstrip() + " …"
    return text.replace("|", "\\|").replace("\n", "<br>")


def markdown(data: dict[str, Any]) -> dict[str, str]:
    """Two tables: mistakes (input, message, exit status) and suspicious input (input, warning)."""
    rows = data["cases"]
    errors = ["| command | what it prints | exit |", "|---|---|---|"]
    warnings = ["| command | warning (the run goes on) |", "|---|---|"]
    for r in rows:
        command = f"`{r['app']}.py {' '.join(r['args'])}`" + (f" ({r['note']})" if r.get("note") else "")
        if r["expect"] == "error":
            errors.append(f"| {command} | {_cell(r['message'])} | {r['exit']} |")
        else:
            warnings.append(f"| {command} | {_cell(r['message'])} |")
    return {"main": "\n".join(errors), "warnings": "\n".join(warnings)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--in-process", action="store_true", help="run the cases in this process (fast)")
    p.add_argument("--no-save", action="store_true", help="do not write docs/results/bad_inputs.json")
    p.add_argument("--json", metavar="PATH", help="also write the outcomes to PATH")
    p.add_argument("names", nargs="*", help="run only these cases")
    args = p.parse_args(argv)
    outcomes = run_all(args.in_process, args.names or None)
    data = {"base": BASE, "base_data": BASE_DATA, "cases": [asdict(o) for o in outcomes]}
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=1) + "\n")
    tables = markdown(data)
    print(tables["main"] + "\n\n" + tables["warnings"])
    failed = [o for o in outcomes if not o.ok]
    for o in failed:
        print(f"FAILED {o.name}: {'; '.join(o.problems)}", file=sys.stderr)
    if not args.no_save and not args.names and not failed:
        import doc_results

        path = doc_results.save("bad_inputs", data, renderer="bad_inputs:markdown")
        print(f"wrote {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
