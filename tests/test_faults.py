"""Fault injection: kill -9, full disks and bad checkpoint files never lose a good checkpoint (zoo.checkpointing).

Real ``scripts/train.py`` processes (through ``tests/fault_inject.py``) are killed with SIGKILL at
random points -- inside a step, an evaluation, a checkpoint write (after a random number of bytes),
between a write's rename and its folder fsync, in the middle of pruning -- or at a random moment
from outside, then resumed with the same command line: the final weights, the loss curve and
``best.pt`` equal those of an uninterrupted run exactly (CPU, one thread, dropout on). A simulated
full disk leaves every earlier file byte for byte. In process: every combination of unreadable
step files and ``best.pt``, and checkpoints of another model, data set or config version.

The random points come from ``ZOO_FAULT_SEED`` (default 0): ``ZOO_FAULT_SEED=3 pytest tests/test_faults.py
-m slow`` runs another set. The default suite runs a small fast subset; the full set is marked slow.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from fault_inject import write_foreign_checkpoint, write_payload_checkpoint

from zoo.checkpoint import BEST_FILE, CheckpointError, CheckpointWriteError, load_checkpoint, save_atomic
from zoo.data import build_data
from zoo.registry import build
from zoo.train import Trainer, TrainerConfig

REPO = Path(__file__).resolve().parents[1]
SEED = int(os.environ.get("ZOO_FAULT_SEED", "0"))
STEPS = 12
# A run of a few seconds: 2 epochs of 6 batches, dropout on, a checkpoint every 2 steps, val every 4 on the
# first 4 of 8 val sequences (best.pt is chosen on those), the whole val split and 4 test sequences at the end.
OVERRIDES = [
    "data=synthetic",
    "data.size=24",
    "data.val_size=8",
    "data.test_size=4",
    "data.seq_len=16",
    "data.data_shape=[4,4]",
    "model.n_layer=1",
    "model.n_embd=16",
    "model.n_head=2",
    "model.dropout=0.1",
    "model.attention.stride=4",
    f"trainer.steps={STEPS}",
    "trainer.batch_size=4",
    "trainer.lr=3e-3",
    "trainer.warmup_steps=2",
    "trainer.eval_every=4",
    "trainer.eval_examples=4",
    "trainer.eval_batch_size=4",
    "trainer.test_examples=4",
    "trainer.checkpoint_every=2",
    "trainer.keep_last=2",
    "trainer.resume=auto",
    "trainer.threads=1",
    "trainer.log_every=1",
    "trainer.progress=false",
]
KILLED = -signal.SIGKILL


# ----------------------------------------------------------------------------- real processes
def train(
    run_dir: Path, fault: dict[str, Any] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``scripts/train.py OVERRIDES hydra.run.dir=run_dir`` with ``fault`` injected (tests/fault_inject.py)."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("ZOO_FAULT", "ZOO_FULL_ERROR", "HYDRA_FULL_ERROR")
    }
    if fault is not None:
        env["ZOO_FAULT"] = json.dumps(fault)
    cmd = [sys.executable, str(REPO / "tests" / "fault_inject.py"), *OVERRIDES, f"hydra.run.dir={run_dir}"]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def outcome(run_dir: Path) -> dict[str, Any]:
    """What an uninterrupted run and a killed-and-resumed one must share."""
    ckpts = run_dir / "checkpoints"
    final = load_checkpoint(ckpts / f"step_{STEPS:08d}.pt")
    best = load_checkpoint(ckpts / BEST_FILE)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    curves = {
        key: [(r["step"], r[key]) for r in metrics["history"] if key in r]
        for key in ("train/loss", "val/bpd", "lr", "final/val_bpd", "final/test_bpd")
    }
    return {
        "weights": final["model"],
        "files": sorted(p.name for p in ckpts.iterdir()),
        "best": (best["step"], best["val_bpd"]),
        "curves": curves,
        "numbers": {k: metrics[k] for k in ("step", "val_bpd", "test_bpd", "best_val_bpd", "best_step")},
    }


def assert_same_run(run_dir: Path, reference: dict[str, Any], unreadable: tuple[str, ...] = ()) -> None:
    """The run in ``run_dir`` ended exactly as ``reference``; ``unreadable`` files are left beside its checkpoints."""
    got = outcome(run_dir)
    # no temporary file, nothing unpruned, nothing missing
    assert got["files"] == sorted([*reference["files"], *unreadable])
    assert got["curves"] == reference["curves"]  # exactly equal floats
    assert got["numbers"] == reference["numbers"]
    assert got["best"] == reference["best"]
    assert got["weights"].keys() == reference["weights"].keys()
    for name, tensor in reference["weights"].items():
        assert torch.equal(got["weights"][name], tensor), name


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An uninterrupted run of the same command line."""
    run_dir = tmp_path_factory.mktemp("reference")
    tic = time.perf_counter()
    proc = train(run_dir)
    wall = time.perf_counter() - tic
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = outcome(run_dir)
    assert result["files"] == [BEST_FILE, "step_00000010.pt", f"step_{STEPS:08d}.pt"]
    assert len(result["curves"]["train/loss"]) == STEPS and len(result["curves"]["val/bpd"]) == 2
    return {**result, "dir": run_dir, "wall_s": wall}


def random_fault(rng: random.Random) -> dict[str, Any]:
    """One kill -9 point of a run: a step, an evaluation, inside or right after a checkpoint write, or a pruning."""
    at = rng.choice(["step", "write", "write", "replace", "prune", "eval"])
    fault: dict[str, Any] = {"kind": "kill", "at": at}
    if at == "step":
        fault["n"] = rng.randint(1, STEPS - 1)
    elif at == "write":  # 6 step files and 1-3 best.pt per run; a checkpoint here is about 40 kB
        fault.update(n=rng.randint(1, 9), bytes=rng.randint(1, 60_000))
    elif at == "replace":
        fault["n"] = rng.randint(1, 9)
    elif at == "prune":
        fault["n"] = rng.randint(1, 5)
    else:  # periodic val at steps 4 and 8, then the final val, best.pt's val examples and test
        fault["n"] = rng.randint(1, 5)
    return fault


def kill_and_resume(run_dir: Path, faults: list[dict[str, Any]]) -> list[int]:
    """Run with each fault in turn (each run resumes the previous one), then once more without; returns exit codes."""
    codes = []
    for fault in faults:
        proc = train(run_dir, fault)
        assert proc.returncode in (KILLED, 0), f"{fault}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
        codes.append(proc.returncode)
    proc = train(run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    codes.append(proc.returncode)
    return codes


def test_kill_during_a_checkpoint_write_then_resume(reference: dict[str, Any], tmp_path: Path) -> None:
    """Killed half-way through writing a checkpoint (a random one, after a random number of bytes): resuming
    gives the uninterrupted run's weights and curves; the half-written temporary file is cleaned up."""
    rng = random.Random(SEED)
    fault = {"kind": "kill", "at": "write", "n": rng.randint(2, 7), "bytes": rng.randint(1, 30_000)}
    proc = train(tmp_path, fault)
    assert proc.returncode == KILLED, proc.stderr[-3000:]
    ckpts = tmp_path / "checkpoints"
    assert any(p.name.endswith(".tmp") for p in ckpts.iterdir())  # the interrupted write's temporary file
    for path in ckpts.glob("*.pt"):
        load_checkpoint(path)  # every file under a real name is whole
    proc = train(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_run(tmp_path, reference)


def test_unreadable_step_files_resume_from_best_and_keep_it(
    reference: dict[str, Any], tmp_path: Path
) -> None:
    """The reproducer: a run killed after step 9, every step_*.pt truncated, the same command again. It resumes
    from best.pt (a complete state), never replaces it with a worse model, and ends as the uninterrupted run."""
    proc = train(tmp_path, {"kind": "kill", "at": "step", "n": 9})
    assert proc.returncode == KILLED
    ckpts = tmp_path / "checkpoints"
    best_before = load_checkpoint(ckpts / BEST_FILE)
    assert best_before["step"] == 8  # best.pt of the val at step 8; step files 6 and 8 beside it
    for path in ckpts.glob("step_*.pt"):
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) // 3])
    proc = train(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (tmp_path / "train.log").read_text()
    assert (
        "resuming from" in log and "best.pt (step 8)" in log and "every step checkpoint is unreadable" in log
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["resumed_from"] == str(ckpts / BEST_FILE)
    best_after = load_checkpoint(ckpts / BEST_FILE)
    assert best_after["val_bpd"] <= best_before["val_bpd"]  # replaced only by a better model, if at all
    # the truncated files are left for inspection (and took no keep_last slot)
    assert_same_run(tmp_path, reference, unreadable=("step_00000006.pt", "step_00000008.pt"))


@pytest.mark.slow
@pytest.mark.parametrize("k", range(3))
def test_random_kills_then_resume(reference: dict[str, Any], tmp_path: Path, k: int) -> None:
    """Three kill -9 at random points in a row (each run resuming the last), then a run to the end."""
    rng = random.Random(1000 * SEED + k)
    faults = [random_fault(rng) for _ in range(3)]
    codes = kill_and_resume(tmp_path, faults)
    print(f"seed {SEED}/{k}: faults {faults} -> exit codes {codes}")
    assert_same_run(tmp_path, reference)


@pytest.mark.slow
@pytest.mark.parametrize("k", range(2))
def test_kill_from_outside_at_a_random_moment(reference: dict[str, Any], tmp_path: Path, k: int) -> None:
    """``kill -9`` from another process after a random delay (anywhere: start-up, a write, an evaluation)."""
    rng = random.Random(2000 * SEED + k)
    env = {k: v for k, v in os.environ.items() if k != "ZOO_FAULT"}
    cmd = [sys.executable, str(REPO / "tests" / "fault_inject.py"), *OVERRIDES, f"hydra.run.dir={tmp_path}"]
    for _ in range(2):
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            proc.wait(timeout=rng.uniform(0.3, 1.1) * reference["wall_s"])
        except subprocess.TimeoutExpired:
            proc.kill()  # SIGKILL
            proc.wait()
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
        proc.stderr.close()
        assert proc.returncode in (KILLED, 0) and "Traceback" not in err, err[-3000:]
    final = train(tmp_path)
    assert final.returncode == 0, final.stderr[-3000:]
    assert_same_run(tmp_path, reference)


def _manifest(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()
    }


@pytest.mark.slow
@pytest.mark.parametrize("which", ["step", "best"])
def test_full_disk_during_a_write_leaves_every_earlier_checkpoint(
    reference: dict[str, Any], tmp_path: Path, which: str
) -> None:
    """ENOSPC after a random number of bytes of a checkpoint write: one error line, exit 2, every earlier file as
    it was (nothing pruned, no temporary file); resuming after the disk has room ends as the uninterrupted run."""
    rng = random.Random(3000 * SEED + (which == "best"))
    # write order of this run: step_2, step_4, best(4), step_6, step_8, best(8) if val improved, step_10, ...
    n = rng.choice([2, 4, 5]) if which == "step" else 3
    manifest = tmp_path / "manifest.json"
    fault = {
        "kind": "enospc",
        "at": "write",
        "n": n,
        "bytes": rng.randint(1, 30_000),
        "manifest": str(manifest),
    }
    run_dir = tmp_path / "run"
    proc = train(run_dir, fault)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: could not write the checkpoint"), proc.stderr
    assert "No space left on device" in lines[0] and "every earlier checkpoint" in lines[0]
    assert _manifest(run_dir / "checkpoints") == json.loads(manifest.read_text())
    assert proc.returncode == 2
    final = train(run_dir)
    assert final.returncode == 0, final.stderr[-3000:]
    assert_same_run(run_dir, reference)


# ----------------------------------------------------------------------------- in process
def tiny(n_embd: int = 16, seed: int = 0):
    torch.manual_seed(seed)
    return build("strided", n_layer=1, n_embd=n_embd, n_head=2, seq_len=16, data_shape=[4, 4], dropout=0.1)


def data(seq_len: int = 16):
    side = int(seq_len**0.5)
    return build_data("synthetic", size=20, val_size=8, test_size=4, seq_len=seq_len, data_shape=[side, side])


def config(**overrides: Any) -> TrainerConfig:
    options: dict[str, Any] = dict(
        steps=12,
        batch_size=4,
        lr=3e-3,
        warmup_steps=2,
        eval_every=4,
        eval_examples=4,
        log_every=1,
        checkpoint_every=2,
        keep_last=3,
        progress=False,
        test=False,
        final_val=False,
    )
    options.update(overrides)
    return TrainerConfig(**options)


@pytest.fixture(scope="module")
def source_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run folder: step files 8, 10, 12 and best.pt (val at steps 4 and 8)."""
    run_dir = tmp_path_factory.mktemp("source")
    Trainer(tiny(), data(), config(), run_dir=run_dir).fit()
    return run_dir


def _truncate(path: Path, marker: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _empty(path: Path, marker: Path) -> None:
    path.write_bytes(b"")


def _garbage(path: Path, marker: Path) -> None:
    path.write_bytes(b"PK\x03\x04 not really a zip archive")


def _payload(path: Path, marker: Path) -> None:
    write_payload_checkpoint(path, marker, {k: v for k, v in load_checkpoint(path).items() if k != "model"})


def _foreign(path: Path, marker: Path) -> None:
    write_foreign_checkpoint(path)


def _future_version(path: Path, marker: Path) -> None:
    state = load_checkpoint(path)
    state["format_version"] = 99
    save_atomic(state, path)


CORRUPTIONS = [_truncate, _empty, _garbage, _payload, _foreign, _future_version]


@pytest.mark.parametrize("best_state", ["readable", "unreadable", "absent"])
@pytest.mark.parametrize("steps_state", ["readable", "newest unreadable", "all unreadable", "none"])
def test_every_combination_of_unreadable_step_files_and_best(
    source_run: Path, tmp_path: Path, steps_state: str, best_state: str, caplog: pytest.LogCaptureFixture
) -> None:
    """resume=auto takes the readable complete state with the highest step (best.pt included), or refuses to
    start naming every file; it changes no file, and a file carrying code runs nothing."""
    rng = random.Random(f"{SEED}-{steps_state}-{best_state}")
    shutil.copytree(source_run, tmp_path / "run")
    ckpts = tmp_path / "run" / "checkpoints"
    marker = tmp_path / "payload-ran"
    best_step = load_checkpoint(ckpts / BEST_FILE)["step"]
    assert best_step in (4, 8)
    step_files = sorted(ckpts.glob("step_*.pt"))
    assert [p.name for p in step_files] == ["step_00000008.pt", "step_00000010.pt", "step_00000012.pt"]
    bad: list[Path] = []
    if steps_state == "none":
        for path in step_files:
            path.unlink()
    elif steps_state != "readable":
        bad += step_files[-1:] if steps_state == "newest unreadable" else step_files
    if best_state == "absent":
        (ckpts / BEST_FILE).unlink()
    elif best_state == "unreadable":
        bad.append(ckpts / BEST_FILE)
    for path in bad:
        rng.choice(CORRUPTIONS)(path, marker)
    before = _manifest(ckpts)

    trainer = Trainer(tiny(seed=7), data(), config(resume="auto"), run_dir=tmp_path / "run")
    readable_steps = {"readable": 12, "newest unreadable": 10}.get(steps_state)
    best_ok = best_state == "readable"
    with caplog.at_level(logging.WARNING):
        if readable_steps is None and not best_ok:
            if not bad:  # an empty folder: a fresh start
                assert trainer.maybe_resume() is None and trainer.step == 0
            else:
                with pytest.raises(CheckpointError) as info:
                    trainer.maybe_resume()
                message = str(info.value)
                assert "none of the checkpoints" in message and "Move them out of the run folder" in message
                assert all(path.name in message for path in bad)
                assert trainer.step == 0
        else:
            path = trainer.maybe_resume()
            if readable_steps is not None:
                assert path == ckpts / f"step_{readable_steps:08d}.pt" and trainer.step == readable_steps
            else:
                assert path == ckpts / BEST_FILE and trainer.step == best_step
                assert "every step checkpoint is unreadable" in caplog.text or steps_state == "none"
    for path in bad:
        assert f"skipping checkpoint {path}" in caplog.text or readable_steps is None
    assert _manifest(ckpts) == before  # nothing written, renamed or deleted
    assert not marker.exists()  # a payload never ran


def test_resumed_from_best_a_worse_val_does_not_replace_it(source_run: Path, tmp_path: Path) -> None:
    """The reproducer in process: every step file unreadable, resume from best.pt; best.pt changes only
    when a later val on the same examples beats it."""
    shutil.copytree(source_run, tmp_path / "run")
    ckpts = tmp_path / "run" / "checkpoints"
    for path in ckpts.glob("step_*.pt"):
        path.write_bytes(b"")
    best = load_checkpoint(ckpts / BEST_FILE)
    raw = (ckpts / BEST_FILE).read_bytes()
    trainer = Trainer(
        tiny(seed=3), data(), config(resume="auto", steps=16, final_val=True), run_dir=tmp_path / "run"
    )
    vals = []
    real = trainer._maybe_save_best
    trainer._maybe_save_best = lambda v: (vals.append(v), real(v))  # type: ignore[method-assign]
    trainer.fit()
    assert trainer.resumed_from == ckpts / BEST_FILE
    after = load_checkpoint(ckpts / BEST_FILE)
    if all(v >= best["val_bpd"] for v in vals):
        assert (ckpts / BEST_FILE).read_bytes() == raw  # never improved on: untouched
    else:
        assert after["val_bpd"] == min(vals) < best["val_bpd"]


def test_unreadable_files_take_no_keep_last_slot(source_run: Path, tmp_path: Path) -> None:
    shutil.copytree(source_run, tmp_path / "run")
    ckpts = tmp_path / "run" / "checkpoints"
    (ckpts / "step_00000050.pt").write_bytes(b"garbage")
    (ckpts / "step_00000040.pt").write_bytes(b"")
    Trainer(tiny(), data(), config(resume="auto", steps=18, keep_last=2), run_dir=tmp_path / "run").fit()
    # the good files are the two newest readable ones; the unreadable ones are left for inspection
    assert sorted(p.name for p in ckpts.iterdir()) == [
        BEST_FILE,
        "step_00000016.pt",
        "step_00000018.pt",
        "step_00000040.pt",
        "step_00000050.pt",
    ]


def test_a_new_run_refuses_a_folder_holding_checkpoints(source_run: Path, tmp_path: Path) -> None:
    shutil.copytree(source_run, tmp_path / "run")
    before = _manifest(tmp_path / "run" / "checkpoints")
    with pytest.raises(CheckpointError, match=r"already holds checkpoints .*trainer\.resume=auto"):
        Trainer(tiny(), data(), config(), run_dir=tmp_path / "run").fit()
    assert _manifest(tmp_path / "run" / "checkpoints") == before
    Trainer(
        tiny(), data(), config(checkpoint=False, steps=2), run_dir=tmp_path / "run"
    ).fit()  # writes none: fine


def test_full_disk_while_writing_best_keeps_the_earlier_best(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import zoo.checkpoint as checkpoint

    real_save = checkpoint.torch.save
    trainer = Trainer(tiny(), data(), config(eval_every=2, lr=1e-2), run_dir=tmp_path)
    trainer.maybe_resume()
    batches = trainer.train_batches()
    for _ in range(2):
        trainer.train_step(next(batches))
    trainer._maybe_save_best(5.0)
    saved = _manifest(tmp_path / "checkpoints")

    def disk_full(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        f.write(b"\0" * 1000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint.torch, "save", disk_full)
    with pytest.raises(
        CheckpointWriteError, match=r"could not write the checkpoint .*best\.pt.*No space left"
    ):
        trainer._maybe_save_best(4.0)
    assert _manifest(tmp_path / "checkpoints") == saved  # the earlier best.pt, no temporary file
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    assert load_checkpoint(tmp_path / "checkpoints" / BEST_FILE)["val_bpd"] == 5.0


def test_best_is_compared_on_the_same_examples_after_a_change(
    source_run: Path, tmp_path: Path, caplog
) -> None:
    """Resumed with another trainer.eval_examples, the stored best.pt is scored on the new examples first."""
    shutil.copytree(source_run, tmp_path / "run")
    ckpts = tmp_path / "run" / "checkpoints"
    best = load_checkpoint(ckpts / BEST_FILE)
    assert best["best_selection"]["examples"] == 4
    trainer = Trainer(
        tiny(), data(), config(resume="auto", eval_examples=8, steps=14), run_dir=tmp_path / "run"
    )
    with caplog.at_level(logging.WARNING):
        trainer.maybe_resume()
    assert "chosen on other validation examples" in caplog.text
    probe = Trainer(tiny(), data(), config())
    probe.model.load_state_dict(best["model"])
    assert trainer.best_val == pytest.approx(probe.evaluate("val", 8), abs=1e-9)  # not the 4-example number
    assert trainer.step == 12


# ----------------------------------------------------------------------------- incompatible checkpoints
@pytest.fixture(scope="module")
def step6(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("step6")
    Trainer(tiny(), data(), config(steps=6), run_dir=run_dir).fit()
    return run_dir / "checkpoints" / "step_00000006.pt"


def _edited(step6: Path, tmp_path: Path, edit) -> Path:
    state = load_checkpoint(step6)
    edit(state)
    return save_atomic(state, tmp_path / "edited.pt")


def _resume(path: Path, **kwargs: Any) -> Trainer:
    trainer = Trainer(
        kwargs.pop("model", None) or tiny(), kwargs.pop("data", None) or data(), config(resume=str(path))
    )
    trainer.maybe_resume()
    return trainer


def test_checkpoint_of_another_model(step6: Path) -> None:
    with pytest.raises(CheckpointError, match="model config n_embd: checkpoint 16, this run 32"):
        _resume(step6, model=tiny(n_embd=32))


def test_checkpoint_of_another_data_set(step6: Path, tmp_path: Path) -> None:
    other = _edited(step6, tmp_path, lambda s: s["data"].update(name="fashion_mnist"))
    with pytest.raises(CheckpointError, match="data name: checkpoint 'fashion_mnist', this run 'synthetic'"):
        _resume(other)
    longer = build("strided", n_layer=1, n_embd=16, n_head=2, seq_len=64, data_shape=[8, 8], dropout=0.1)
    with pytest.raises(CheckpointError, match=r"data seq_len: checkpoint 16, this run 64"):
        _resume(step6, model=longer, data=data(64))


def test_checkpoint_of_another_config_version(step6: Path, tmp_path: Path, caplog) -> None:
    older = _edited(
        step6, tmp_path, lambda s: s["model_config"].pop("half_qk")
    )  # written before half_qk existed
    with caplog.at_level(logging.WARNING):
        assert _resume(older).step == 6  # its default (False) is this run's value
    assert "predates the model config keys ['half_qk']" in caplog.text
    newer = _edited(step6, tmp_path, lambda s: s["model_config"].update(future_option=1))
    with pytest.raises(
        CheckpointError, match=r"model config keys this version of zoo does not know: \['future_option'\]"
    ):
        _resume(newer)


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (_truncate, r"could not be read .*corrupt"),
        (_empty, r"is empty \(0 bytes\)"),
        (_foreign, r"is not a checkpoint of this library \(it looks like a bare state dict of weights\)"),
        (_payload, r"refusing to open .*builtins\.exec.*nothing in it ran"),
    ],
)
def test_truncated_empty_foreign_and_unsafe_files(step6: Path, tmp_path: Path, corrupt, message: str) -> None:
    path = tmp_path / "bad.pt"
    shutil.copy(step6, path)
    marker = tmp_path / "payload-ran"
    corrupt(path, marker)
    with pytest.raises(CheckpointError, match=message):
        _resume(path)
    assert not marker.exists()
