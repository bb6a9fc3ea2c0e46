"""The apps' error handling (zoo.cli, zoo.errors) and the bad-input table (scripts/bad_inputs.py).

A user's mistake prints one ``error: ...`` message, no traceback, exit status 2 (Hydra's own
composition errors: its message, exit 1); a bug keeps its traceback; ``ZOO_FULL_ERROR=1`` shows the
traceback of user errors too. Suspicious but legal input prints its warning line exactly once.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zoo.checkpoint import CheckpointError
from zoo.cli import EXIT_USER_ERROR, guard
from zoo.data import build_data
from zoo.errors import forget_warnings, is_user_error, user_input
from zoo.registry import build

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import bad_inputs  # noqa: E402
import doc_results  # noqa: E402


@pytest.fixture(autouse=True)
def fresh_warnings():
    forget_warnings()
    yield
    forget_warnings()


# ----------------------------------------------------------------------------- zoo.cli.guard
def _raises(err: BaseException):
    @guard
    def main() -> None:
        raise err

    return main


def test_a_user_error_is_one_line_and_exit_2(capsys: pytest.CaptureFixture, monkeypatch) -> None:
    monkeypatch.delenv("ZOO_FULL_ERROR", raising=False)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as info:
        _raises(CheckpointError("checkpoint x.pt could not be read"))()
    assert info.value.code == EXIT_USER_ERROR == 2
    assert capsys.readouterr().err == "error: checkpoint x.pt could not be read\n"

    def config_check() -> None:
        with user_input():  # a ValueError of a config check: a user error, still a ValueError
            raise ValueError("trainer.steps must be an integer >= 1, got 0")

    with pytest.raises(SystemExit):
        guard(config_check)()
    assert capsys.readouterr().err == "error: trainer.steps must be an integer >= 1, got 0\n"
    with pytest.raises(ValueError) as caught:
        config_check()
    assert is_user_error(caught.value)


@pytest.mark.parametrize("bug", [ValueError("a bug's ValueError"), KeyError("x"), RuntimeError("boom")])
def test_a_bug_keeps_its_traceback(bug: BaseException, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(type(bug)):
        _raises(bug)()
    assert capsys.readouterr().err == ""
    assert not is_user_error(bug)


def test_full_error_and_other_ranks(capsys: pytest.CaptureFixture, monkeypatch) -> None:
    monkeypatch.setenv("ZOO_FULL_ERROR", "1")
    with pytest.raises(CheckpointError):  # the traceback, as for a bug
        _raises(CheckpointError("x"))()
    monkeypatch.delenv("ZOO_FULL_ERROR")
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(CheckpointError):
        _raises(CheckpointError("x"))()
    monkeypatch.delenv("HYDRA_FULL_ERROR")
    monkeypatch.setenv("RANK", "1")  # torchrun: rank 0 alone prints, every rank exits 2
    with pytest.raises(SystemExit) as info:
        _raises(CheckpointError("x"))()
    assert info.value.code == 2 and capsys.readouterr().err == ""


# ----------------------------------------------------------------------------- warnings fire once
def test_a_dense_stride_warns_once_per_model(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        build("strided", n_layer=4, seq_len=16, data_shape=[4, 4], attention={"stride": 16})
        build("strided", n_layer=4, seq_len=16, data_shape=[4, 4], attention={"stride": 16})
        build(
            "fixed", n_layer=2, seq_len=16, data_shape=[4, 4], attention={"stride": 4, "c": 2}
        )  # sparse: no word
    lines = [r.getMessage() for r in caplog.records if "stride" in r.getMessage()]
    assert len(lines) == 1 and "model.attention.stride=16 >= the sequence length 16" in lines[0]
    assert "'strided' pattern computes full (dense) attention" in lines[0] and "sqrt(16) ~ 4" in lines[0]


def test_a_binary_enwik8_file_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    gen = torch.Generator().manual_seed(0)
    (tmp_path / "png").mkdir()
    png = b"\x89PNG\r\n\x1a\n" + bytes(torch.randint(0, 256, (20_000,), generator=gen).tolist())
    (tmp_path / "png" / "enwik8").write_bytes(png)
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "enwik8").write_bytes(("<page><title>Zoo é</title></page>\n" * 800).encode())
    with caplog.at_level(logging.WARNING):
        build_data("enwik8", root=str(tmp_path / "text"), seq_len=64)
        assert caplog.records == []  # text (UTF-8, newlines): no word
        for _ in range(2):
            build_data("enwik8", root=str(tmp_path / "png"), seq_len=64)
    (record,) = caplog.records
    assert "does not look like text" in record.getMessage() and "not UTF-8 from byte 0" in record.getMessage()


def test_data_root_naming_a_file_says_so(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(b"")
    for name in ("fashion_mnist", "cifar10", "enwik8"):
        with pytest.raises(FileNotFoundError, match=rf"data.root={path} is a file, not a folder"):
            build_data(name, root=str(path))


# ----------------------------------------------------------------------------- the bad-input table
def test_every_bad_input_in_one_process(tmp_path: Path) -> None:
    """Every case of scripts/bad_inputs.py through the apps' real entry points (one process, all cases), and the
    generated docs table shows the same messages (else: rerun `python scripts/bad_inputs.py`)."""
    out = tmp_path / "outcomes.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "bad_inputs.py"),
            "--in-process",
            "--no-save",
            "--json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    cases = json.loads(out.read_text())["cases"]
    assert [c["name"] for c in cases] == [c.name for c in bad_inputs.CASES]
    assert all(c["ok"] for c in cases)
    documented = doc_results.load("bad_inputs")["data"]["cases"]
    assert [(c["name"], c["args"], c["exit"], c["message"]) for c in documented] == [
        (c["name"], c["args"], c["exit"], c["message"]) for c in cases
    ]


@pytest.mark.slow
def test_every_bad_input_as_its_own_process() -> None:
    outcomes = bad_inputs.run_all(in_process=False)
    failed = [(o.name, o.problems, o.message) for o in outcomes if not o.ok]
    assert not failed


@pytest.mark.slow
def test_a_bug_in_the_app_keeps_its_traceback(tmp_path: Path) -> None:
    code = (
        "import runpy, sys; import zoo.train as t\n"
        "def broken(self): raise KeyError('a bug')\n"
        "t.Trainer.fit = broken\n"
        f"sys.argv = ['scripts/train.py', *{bad_inputs.BASE_DATA + bad_inputs.BASE!r}, 'hydra.run.dir={tmp_path}']\n"
        "runpy.run_path('scripts/train.py', run_name='__main__')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("ZOO_FULL_ERROR", "HYDRA_FULL_ERROR")}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "KeyError: 'a bug'" in proc.stderr
    cmd = [
        sys.executable,
        "scripts/train.py",
        *bad_inputs.BASE_DATA,
        *bad_inputs.BASE,
        "trainer.steps=0",
        f"hydra.run.dir={tmp_path}",
    ]
    full = subprocess.run(
        cmd, cwd=REPO, env={**env, "ZOO_FULL_ERROR": "1"}, capture_output=True, text=True, timeout=600
    )
    assert (
        full.returncode == 1
        and "Traceback" in full.stderr
        and "trainer.steps must be an integer" in full.stderr
    )
