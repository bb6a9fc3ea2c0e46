"""``scripts/gpu_check.py`` runs on CPU at small sizes (as in CI) without Hydra, OmegaConf, wandb or
xFormers, checks every backend it finds against the dense reference, and writes its JSON record."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import gpu_check  # noqa: E402

# Runs the script as __main__ with these top-level modules made unimportable (a bare GPU image).
BLOCKED = ("hydra", "omegaconf", "wandb", "xformers")
RUNNER = """
import importlib.abc, runpy, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"{{name}} is blocked in this test (a bare GPU image has no {{name}})")
        return None
sys.meta_path.insert(0, Block())
sys.argv = ["scripts/gpu_check.py", *{argv!r}]
try:
    runpy.run_path("scripts/gpu_check.py", run_name="__main__")
except SystemExit as e:
    assert not [m for m in sys.modules if m.split(".")[0] in {blocked!r}], "a blocked module was imported"
    raise
"""


def test_cpu_mode_runs_without_hydra_omegaconf_wandb_xformers(tmp_path):
    out = tmp_path / "gpu_check.json"
    argv = ["--device", "cpu", "--phases", "exactness", "attention", "training", "sampling", "--out", str(out)]
    code = RUNNER.format(blocked=BLOCKED, argv=argv)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["name"] == "gpu_check" and record["renderer"] == "gpu_check:markdown"
    data = record["data"]
    assert data["importable"]["xformers"] is False
    exact = data["exactness"]
    assert {r["backend"] for r in exact} == {"flex", "blocksparse"}
    assert {r["dtype"] for r in exact} == {"float32", "bfloat16"}
    assert all(r["ok"] and r["causal"] and r["empty_rows"] for r in exact)
    assert all(r["grad_err"] is None for r in exact if r["backend"] == "flex")  # no flex backward on CPU
    assert any("fixed" in r["pattern"] and "split" in r["pattern"] for r in exact)  # the pattern with empty rows
    att = data["attention"]
    assert {r["backend"] for r in att} == {"sdpa-flash", "flex", "blocksparse"}
    assert all(r["fwd_ms"] > 0 for r in att)
    assert all((r["fwdbwd_ms"] is None) == (r["backend"] == "flex") for r in att)
    train = data["training"]
    assert [(r["shape"], r["variant"]) for r in train] == [
        (s, v) for s in ("cifar10", "enwik8") for v in ("dense", "strided", "fixed")
    ]
    assert all(r["backend"] == "auto -> blocksparse" for r in train if r["variant"] != "dense")
    assert all(r["tokens_per_s"] > 0 for r in train)
    if not gpu_check.importable("zoo.generate"):
        assert data["sampling"] == [] and any("zoo.generate" in n for n in data["notes"])
    tables = gpu_check.markdown(data)
    assert set(tables) >= {"main", "exactness", "attention", "training", "sampling"}
    assert "exactness vs the dense reference | 12 of 12 cases pass" in tables["main"]
    assert "## exactness" in proc.stdout and "| strided | 256 |" in proc.stdout


def test_failing_backend_is_reported_not_fatal(monkeypatch):
    """A backend that raises or disagrees with the reference becomes a failing row; the exit code says so."""
    monkeypatch.setattr(gpu_check, "check_exact", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    rows = gpu_check.phase_exactness(
        SimpleNamespace(reserve_s=0), gpu_check.torch.device("cpu"), {"xformers": False}, gpu_check.Budget(60), []
    )
    assert rows and not any(r["ok"] for r in rows) and rows[0]["note"] == "RuntimeError: boom"


def test_tests_phase_reads_pytest_results(monkeypatch):
    """The tests phase runs ``pytest -m gpu`` on the files with gpu-marked tests and reads its summary."""
    seen = {}

    def fake_run(cmd, **kwargs):
        seen["cmd"] = cmd
        out = "PASSED tests/test_backends.py::test_gpu_a\nFAILED tests/test_backends.py::test_gpu_b - boom\n"
        return SimpleNamespace(stdout=out + "1 failed, 1 passed, 238 deselected in 3.2s\n", stderr="", returncode=1)

    monkeypatch.setattr(gpu_check.subprocess, "run", fake_run)
    notes: list[str] = []
    args = SimpleNamespace(tests_budget_s=100.0)
    res = gpu_check.phase_tests(args, {"pytest": True}, gpu_check.Budget(300), notes)
    assert seen["cmd"][1:4] == ["-m", "pytest", "-m"] and "tests/test_backends.py" in seen["cmd"]
    assert res["summary"] == "1 failed, 1 passed, 238 deselected in 3.2s"
    assert res["failed"] == ["tests/test_backends.py::test_gpu_b"] and res["counts"]["passed"] == 1
    res = gpu_check.phase_tests(args, {"pytest": False}, gpu_check.Budget(300), notes)
    assert res["status"] == "not run: no pytest" and "pytest is not importable" in notes[-1]


def test_cuda_request_without_cuda_fails_clearly(capsys):
    if gpu_check.torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert gpu_check.main(["--device", "cuda"]) == 2
    assert "CUDA is not available here; use --device cpu" in capsys.readouterr().err
