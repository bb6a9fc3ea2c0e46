"""The paper experiments of configs/experiment/ (Child et al. 2019, §7) and their *_smoke versions.

Every experiment composes with Hydra and its model builds on the meta device with the paper's size;
the recipe matches §6-7 and the step counts match the paper's epochs. Each *_smoke experiment runs
end to end through scripts/train.py on tiny files in the real on-disk formats, written by the writers
of the data tests (cifar10 in the default run, the others marked slow).
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CONFIGS_DIR, REPO_ROOT, compose
from omegaconf import OmegaConf
from test_data_audio import write_folder
from test_data_cifar10 import write_cifar
from test_data_enwik8 import write_enwik8
from test_data_imagenet64 import write_imagenet

from zoo.registry import build, resolve_config
from zoo.train import TrainerConfig

DATASETS = ("cifar10", "enwik8", "imagenet64", "audio")

# The paper's models (§7.1-7.4, Table 1): layers, width, heads, dropout, parameters.
PAPER = {
    "cifar10": {
        "n_layer": 128,
        "n_embd": 256,
        "n_head": 2,
        "dropout": 0.25,
        "params": 59e6,
        "pattern": "strided",
    },
    "enwik8": {
        "n_layer": 30,
        "n_embd": 512,
        "n_head": 8,
        "dropout": 0.40,
        "params": 95e6,
        "pattern": "fixed",
    },
    "imagenet64": {
        "n_layer": 48,
        "n_embd": 512,
        "n_head": 16,
        "dropout": 0.01,
        "params": 152e6,
        "pattern": "strided",
    },
    "audio": {
        "n_layer": 48,
        "n_embd": 512,
        "n_head": 16,
        "dropout": 0.01,
        "params": 152e6,
        "pattern": "strided",
    },
}
# Training examples per epoch and epochs (§7.1-7.3); audio states neither.
EPOCHS = {
    "cifar10": (48_000, 120),
    "enwik8": (90_000_000 // 12_288, 80),
    "imagenet64": (1_281_167 - 10_000, 70),
}
SEQ_LEN = {"cifar10": 3072, "enwik8": 12288, "imagenet64": 12288, "audio": 65536}


def _model_config(cfg):
    """The ModelConfig the trainer would build: the model node with the data's length (zoo.train.build_from_config)."""
    overrides = {"seq_len": cfg.data.seq_len} if "seq_len" in cfg.data else {}
    return resolve_config(cfg.model, **overrides)


def test_every_experiment_file_is_tested() -> None:
    names = {p.stem for p in (CONFIGS_DIR / "experiment").glob("*.yaml")}
    for data in DATASETS:
        assert {f"{data}_paper", f"{data}_smoke"} <= names


@pytest.mark.parametrize("data", DATASETS)
def test_paper_experiment_composes_with_the_papers_model(data: str) -> None:
    cfg = compose("train", [f"experiment={data}_paper"])
    assert cfg.data.name == data
    config = _model_config(cfg)
    paper = PAPER[data]
    assert (config.n_layer, config.n_embd, config.n_head) == (
        paper["n_layer"],
        paper["n_embd"],
        paper["n_head"],
    )
    assert config.dropout == pytest.approx(paper["dropout"])
    assert config.attention["name"] == paper["pattern"]
    assert config.seq_len == SEQ_LEN[data]
    if "seq_len" in cfg.data:
        assert cfg.data.seq_len == cfg.model.seq_len == config.seq_len
    if config.embedding == "data":  # images: the data embedding's shape is the loader's byte order
        assert cfg.data.order == "interleaved" and list(config.data_shape)[-1] == 3
        assert math.prod(config.data_shape) == config.seq_len
    with torch.device("meta"):
        model = build(config)
    assert model.num_parameters() == pytest.approx(paper["params"], rel=0.01)  # Table 1


@pytest.mark.parametrize("data", DATASETS)
def test_paper_recipe(data: str) -> None:
    """§6: Adam with 5,000 warmup steps, clipping 1.0, weight decay 0.01, cosine to 0; §7.1: lr 0.00035."""
    cfg = compose("train", [f"experiment={data}_paper"])
    # known keys and valid values (from_dict rejects anything else)
    trainer = TrainerConfig.from_dict(OmegaConf.to_container(cfg.trainer, resolve=True))
    assert trainer.warmup_steps == 5000
    assert trainer.grad_clip == 1.0
    assert trainer.weight_decay == 0.01
    assert trainer.min_lr_ratio == 0.0
    assert trainer.lr == pytest.approx(3.5e-4)
    assert trainer.test and trainer.test_examples is None  # the final number is over the whole test split
    if data in EPOCHS:  # the step count is the paper's number of epochs at this batch size
        per_epoch, epochs = EPOCHS[data]
        assert trainer.steps == math.ceil(epochs * per_epoch / trainer.batch_size)


@pytest.mark.parametrize("data", DATASETS)
def test_smoke_experiment_is_the_paper_experiment_shrunk(data: str) -> None:
    paper = compose("train", [f"experiment={data}_paper"])
    smoke = compose("train", [f"experiment={data}_smoke"])
    assert smoke.data.name == paper.data.name
    assert smoke.model.name == paper.model.name == f"{data}_paper"  # the audio model is not "imagenet64_paper"
    assert smoke.model.attention.name == paper.model.attention.name
    assert smoke.model.embedding == paper.model.embedding
    assert (smoke.model.n_layer, smoke.model.n_embd) == (2, 32)
    assert smoke.trainer.steps <= 5
    config = _model_config(smoke)
    model = build(config)  # a real (CPU) model, small enough to build in a moment
    assert model.num_parameters() < 200_000
    # not the paper model's recomputation (§5.4: a memory saving 2 blocks do not need, at ~1.3x the time)
    assert paper.model.checkpoint_every == 1 and smoke.model.checkpoint_every == 0
    # the model's declared shape is the data's (no "model ... taken from the data set" line on every run)
    if config.embedding != "data":  # 1-D streams (text, audio)
        assert list(smoke.model.data_shape) == [smoke.model.seq_len]
    assert math.prod(smoke.model.data_shape) == smoke.model.seq_len


# ----------------------------------------------------------------------------- end to end
def _write_data(data: str, root: Path) -> None:
    """Tiny files in the data set's real on-disk format (the writers of tests/test_data_*.py)."""
    if data == "cifar10":
        write_cifar(root)  # 30 training and 7 test images in cifar-10-batches-py/
    elif data == "enwik8":
        write_enwik8(root)  # 20,000 bytes
    elif data == "imagenet64":
        write_imagenet(root)  # 12 training and 6 validation images as .npz batches
    elif data == "audio":
        # 0.5 s at 16 kHz, resampled to 6,000 samples at 12 kHz: 5 chunks of 1,024 per file
        write_folder(root, n_files=6, seconds=0.5, rate=16000)
    else:  # pragma: no cover
        raise ValueError(data)


def _load_evaluate():
    spec = importlib.util.spec_from_file_location(
        "evaluate_script_exp", REPO_ROOT / "scripts" / "evaluate.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["evaluate_script_exp"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "data",
    ["cifar10", *(pytest.param(d, marks=pytest.mark.slow) for d in ("enwik8", "imagenet64", "audio"))],
)
def test_smoke_experiment_runs_end_to_end(data: str, tmp_path: Path) -> None:
    root, run_dir = tmp_path / "data", tmp_path / "run"
    _write_data(data, root)
    cmd = [
        sys.executable,
        str(REPO_ROOT / "scripts" / "train.py"),
        f"experiment={data}_smoke",
        f"data.root={root}",
        "trainer.threads=2",
        f"hydra.run.dir={run_dir}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    smoke = compose("train", [f"experiment={data}_smoke"])
    assert metrics["step"] == smoke.trainer.steps
    assert metrics["data"] == data and metrics["seq_len"] == smoke.model.seq_len
    assert np.isfinite(metrics["test_bpd"]) and 0 < metrics["test_bpd"] < 16
    assert "test bits/dim" in proc.stdout
    assert "taken from the data set" not in proc.stdout + proc.stderr  # the smoke model is declared as the data
    checkpoints = sorted((run_dir / "checkpoints").glob("*.pt"))
    assert checkpoints
    # The evaluation script gives the trainer's test number back from the checkpoint.
    evaluate = _load_evaluate()
    result = evaluate.evaluate_checkpoint(run_dir, "test", device="cpu")
    assert result["rows"][0]["examples"] == metrics["test_sequences"]
    assert result["rows"][0]["bits_per_dim"] == pytest.approx(metrics["test_bpd"], rel=1e-5)
    if data == "enwik8":  # the paper's long-context evaluation (Table 3) still scores each test byte once
        test_bytes = 1000  # 5% of the 20,000-byte file
        assert result["rows"][0]["dims"] == test_bytes
        longer = evaluate.evaluate_checkpoint(run_dir, "test", data_overrides={"eval_min_context": 192})
        assert longer["rows"][0]["dims"] == test_bytes
        assert longer["rows"][0]["examples"] > result["rows"][0]["examples"]  # overlapping windows
