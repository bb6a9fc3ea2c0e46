"""scripts/evaluate.py: bits per dim of a checkpoint, equal to the trainer's own evaluation (paper §7 metric).

A tiny strided model is trained for a few steps on the synthetic data set (zoo.train.run, as
scripts/train.py does), then its checkpoint is evaluated by the script and compared with the
numbers the trainer itself wrote.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import REPO_ROOT, compose
from omegaconf import OmegaConf

from zoo.metrics import bits_per_dim, nll_nats
from zoo.model import ModelConfig, SparseTransformer
from zoo.train import run

SCRIPT = REPO_ROOT / "scripts" / "evaluate.py"
OVERRIDES = [
    "data=synthetic",
    "data.size=48",
    "data.val_size=12",
    "data.test_size=20",
    "data.seq_len=64",
    "data.data_shape=[8,8]",
    "model=strided",
    "model.attention.stride=8",
    "model.n_layer=2",
    "model.n_embd=32",
    "model.n_head=2",
    "trainer=smoke",
    "trainer.final_val=true",
    "trainer.test_examples=null",
    "trainer.eval_batch_size=8",
    "trainer.threads=1",
]


def _load_script() -> Any:
    spec = importlib.util.spec_from_file_location("evaluate_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["evaluate_script"] = module
    spec.loader.exec_module(module)
    return module


ev = _load_script()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A finished tiny run: its folder, config, checkpoint and the trainer's metrics."""
    run_dir = tmp_path_factory.mktemp("run")
    cfg = compose("train", OVERRIDES)
    threads = torch.get_num_threads()
    try:
        metrics = run(cfg, run_dir)
    finally:
        torch.set_num_threads(threads)
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")  # what Hydra writes for a real run
    return {"dir": run_dir, "cfg": cfg, "checkpoint": Path(metrics["checkpoint"]), "metrics": metrics}


def _reference_bpd(checkpoint: Path, split: str, n: int | None = None) -> float:
    """Bits per dim computed here from scratch: the stored config and weights, the split's first n items."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model = SparseTransformer(ModelConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    model.eval()
    cfg = compose("train", OVERRIDES)
    from zoo.train import build_from_config

    _, data = build_from_config(cfg)
    dataset = getattr(data, split)
    items = torch.stack([dataset[i] for i in range(len(dataset) if n is None else n)])  # (N, T)
    with torch.no_grad():
        nats = nll_nats(model(items), items, reduction="sum")
    return float(bits_per_dim(float(nats) / items.numel()))


def test_equals_the_trainers_own_val_and_test_numbers(trained: dict[str, Any]) -> None:
    result = ev.evaluate_checkpoint(trained["checkpoint"], ["val", "test"], batch_size=8, device="cpu")
    rows = {r["split"]: r for r in result["rows"]}
    metrics = trained["metrics"]
    assert rows["test"]["bits_per_dim"] == pytest.approx(metrics["test_bpd"], rel=1e-6, abs=1e-7)
    assert rows["val"]["bits_per_dim"] == pytest.approx(metrics["val_bpd"], rel=1e-6, abs=1e-7)
    assert rows["test"]["examples"] == metrics["test_sequences"] == 20
    assert rows["val"]["examples"] == 12
    assert rows["test"]["dims"] == 20 * 64
    assert result["step"] == metrics["step"] == 4
    assert math.isfinite(rows["test"]["time_s"]) and rows["test"]["time_s"] >= 0


def test_examples_and_batch_size_against_a_from_scratch_reference(trained: dict[str, Any]) -> None:
    ref5 = _reference_bpd(trained["checkpoint"], "test", 5)
    ref_all = _reference_bpd(trained["checkpoint"], "test")
    # the first 5 sequences really differ from the whole split
    assert ref5 != pytest.approx(ref_all, abs=1e-6)
    for batch_size in (1, 3, 64):
        result = ev.evaluate_checkpoint(trained["checkpoint"], "test", examples=5, batch_size=batch_size)
        (row,) = result["rows"]
        assert row["examples"] == 5
        assert row["bits_per_dim"] == pytest.approx(ref5, rel=1e-5)
    result = ev.evaluate_checkpoint(trained["checkpoint"], "test", examples=10_000)
    assert result["rows"][0]["examples"] == 20  # capped at the split's size
    assert result["rows"][0]["bits_per_dim"] == pytest.approx(ref_all, rel=1e-5)


def test_run_folder_picks_the_newest_checkpoint(trained: dict[str, Any], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(trained["dir"], run_dir)
    ckpts = run_dir / "checkpoints"
    newest = ckpts / trained["checkpoint"].name  # step_00000004.pt
    state = torch.load(newest, weights_only=False)
    state["model"] = {k: torch.zeros_like(v) for k, v in state["model"].items()}  # an older, different model
    torch.save(state, ckpts / "step_00000002.pt")
    (ckpts / ".step_00000009.pt.abc.tmp").write_bytes(b"half-written")  # an interrupted write: never chosen
    assert ev.find_checkpoint(run_dir) == newest
    assert ev.find_checkpoint(ckpts) == newest
    result = ev.evaluate_checkpoint(run_dir, "test")
    assert result["rows"][0]["bits_per_dim"] == pytest.approx(trained["metrics"]["test_bpd"], rel=1e-6)
    for step_file in ckpts.glob("step_*.pt"):
        step_file.unlink()
    shutil.copy(trained["checkpoint"], ckpts / "best.pt")
    assert ev.find_checkpoint(run_dir) == ckpts / "best.pt"  # no step checkpoint left: the best one


def test_config_from_the_run_folder_when_the_checkpoint_has_none(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(trained["dir"], run_dir)
    path = run_dir / "checkpoints" / trained["checkpoint"].name
    state = torch.load(path, weights_only=False)
    del state["config"], state["model_config"]  # rebuilt from .hydra/config.yaml and the data set
    torch.save(state, path)
    result = ev.evaluate_checkpoint(path, "test")
    assert result["rows"][0]["bits_per_dim"] == pytest.approx(trained["metrics"]["test_bpd"], rel=1e-6)
    shutil.rmtree(run_dir / ".hydra")
    with pytest.raises(ev.EvaluationError, match="holds no run config"):
        ev.evaluate_checkpoint(path, "test")


def test_data_overrides_reach_the_data_set(trained: dict[str, Any]) -> None:
    result = ev.evaluate_checkpoint(trained["checkpoint"], "test", data_overrides={"limit_test": 7})
    assert result["rows"][0]["examples"] == 7 and result["rows"][0]["of"] == 7
    with pytest.raises(ev.EvaluationError, match="seq_len=64"):
        ev.evaluate_checkpoint(
            trained["checkpoint"], "test", data_overrides={"seq_len": 32, "data_shape": [4, 8]}
        )


def test_model_overrides(trained: dict[str, Any]) -> None:
    result = ev.evaluate_checkpoint(trained["checkpoint"], "test", model_overrides={"checkpoint_every": 1})
    assert result["rows"][0]["bits_per_dim"] == pytest.approx(trained["metrics"]["test_bpd"], rel=1e-6)
    with pytest.raises(ev.EvaluationError, match="model.n_layer cannot be changed"):
        ev.evaluate_checkpoint(trained["checkpoint"], "test", model_overrides={"n_layer": 3})


def test_cli_prints_a_table_and_writes_json(trained: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), f"checkpoint={trained['dir']}", "split=val,test", f"output={out}"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[1].split() == ["split", "examples", "bits/dim", "time", "(s)"]
    rows = {line.split()[0]: line.split() for line in lines[3:]}
    assert set(rows) == {"val", "test"}
    assert float(rows["test"][4]) == pytest.approx(trained["metrics"]["test_bpd"], abs=6e-5)
    assert rows["test"][1:4] == ["20", "of", "20"]
    saved = json.loads(out.read_text())
    assert [r["split"] for r in saved["rows"]] == ["val", "test"]
    assert saved["rows"][1]["bits_per_dim"] == pytest.approx(trained["metrics"]["test_bpd"], rel=1e-6)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "checkpoint=PATH is required"),
        (["checkpoint=CKPT", "split=dev"], "unknown split 'dev'"),
        (["checkpoint=CKPT", "examples=0"], "examples must be an integer >= 1, got 0"),
        (["checkpoint=CKPT", "batch_size=-2"], "batch_size must be an integer >= 1"),
        (["checkpoint=CKPT", "splits=test"], "unknown argument(s) ['splits']"),
        (["checkpoint=CKPT", "test"], "arguments must be key=value"),
        (["checkpoint=CKPT", "data=cifar10"], "data takes dotted overrides"),
    ],
)
def test_bad_arguments(
    trained: dict[str, Any], capsys: pytest.CaptureFixture, args: list[str], message: str
) -> None:
    args = [a.replace("CKPT", str(trained["checkpoint"])) for a in args]
    assert ev.main(args) == 2
    assert message in capsys.readouterr().err


def test_missing_and_corrupt_checkpoints(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "nope.pt"
    assert ev.main([f"checkpoint={missing}"]) == 2
    assert f"checkpoint {missing} does not exist" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x02 this is not a checkpoint")
    assert ev.main([f"checkpoint={corrupt}"]) == 2
    err = capsys.readouterr().err
    assert f"checkpoint {corrupt} could not be read" in err and "corrupt" in err
    empty = tmp_path / "empty_run"
    (empty / "checkpoints").mkdir(parents=True)
    assert ev.main([f"checkpoint={empty}"]) == 2
    assert "no checkpoint (step_N.pt or best.pt) in" in capsys.readouterr().err


def test_weights_that_do_not_fit_the_stored_model(trained: dict[str, Any], tmp_path: Path) -> None:
    state = torch.load(trained["checkpoint"], weights_only=False)
    state["model_config"]["n_embd"] = 48  # the weights are 32 wide
    path = tmp_path / "mismatch.pt"
    torch.save(state, path)
    with pytest.raises(RuntimeError, match=f"checkpoint {path} does not match this run's model") as info:
        ev.evaluate_checkpoint(path, "test")
    assert "weight shapes differ" in str(info.value)


def test_a_run_with_a_weight_average_is_evaluated_on_the_average(tmp_path: Path) -> None:
    """trainer.ema_decay: the trainer reports the average's bits/dim, and so does the script (zoo.ema)."""
    threads = torch.get_num_threads()
    try:
        metrics = run(compose("train", [*OVERRIDES, "trainer.ema_decay=0.5"]), tmp_path)
    finally:
        torch.set_num_threads(threads)
    result = ev.evaluate_checkpoint(Path(metrics["checkpoint"]), ["val"], batch_size=8, device="cpu")
    assert result["rows"][0]["bits_per_dim"] == pytest.approx(metrics["val_bpd"], rel=1e-6, abs=1e-7)
