"""Distributed data parallel on CPU (gloo): 2 processes give the loss curve of 1 process on the same
global batch (zoo.train.Trainer + zoo.distributed), also with uneven shards and gradient accumulation,
and the same weight average (trainer.ema_decay) on every rank."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from zoo.checkpoint import load_checkpoint
from zoo.data import build_data
from zoo.distributed import DistEnv, shard
from zoo.registry import build
from zoo.train import Trainer, TrainerConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = {
    "even": dict(batch_size=8),  # 4 + 4 sequences per step
    "uneven_accumulated": dict(batch_size=7, micro_batch_size=2),  # 4 (2 + 2) + 3 (2 + 1)
    "even_ema": dict(batch_size=8, ema_decay=0.9),  # each rank averages its (identical) weights
}


def tiny():
    torch.manual_seed(0)
    return build("strided", n_layer=1, n_embd=16, n_head=2, seq_len=16, data_shape=[4, 4])


def config(**overrides) -> TrainerConfig:
    options = dict(
        steps=10,
        lr=3e-3,
        warmup_steps=2,
        log_every=1,
        eval_examples=8,
        progress=False,
        test=False,
        threads=1,
        checkpoint_every=5,
    )
    options.update(overrides)
    return TrainerConfig(**options)


def data():
    return build_data("synthetic", size=40, val_size=9, test_size=4, seq_len=16, data_shape=[4, 4])


def losses(metrics):
    return [r["train/loss"] for r in metrics["history"] if "train/loss" in r]


def ema_sums(trainer: Trainer) -> list[float]:
    """One number per averaged tensor (empty without an average): what two ranks must agree on."""
    if trainer.ema is None:
        return []
    return [float(v.double().sum()) for v in trainer.ema.module.state_dict().values()]


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    from zoo.distributed import cleanup, init_distributed

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
    )
    env = init_distributed()
    assert env == DistEnv(rank, world_size, rank)
    try:
        for name, options in CASES.items():
            run_dir = os.path.join(out_dir, name)
            trainer = Trainer(tiny(), data(), config(**options), run_dir=run_dir)
            metrics = trainer.fit()
            with open(os.path.join(out_dir, f"{name}_rank{rank}.json"), "w") as fh:
                json.dump({"losses": losses(metrics), "val_bpd": metrics["val_bpd"], "ema": ema_sums(trainer)}, fh)
    finally:
        cleanup()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_shard_splits_every_global_batch():
    batch = list(range(7))
    parts = [shard(batch, r, 2) for r in range(2)]
    assert parts == [[0, 1, 2], [3, 4, 5, 6]]
    assert [shard(batch, r, 3) for r in range(3)] == [[0, 1], [2, 3], [4, 5, 6]]
    with pytest.raises(ValueError, match=r"rank must be in \[0, 2\), got 2"):
        shard(batch, 2, 2)


def test_gradient_accumulation_matches_one_big_batch():
    one = Trainer(tiny(), data(), config(batch_size=8, final_val=False))
    micro = Trainer(tiny(), data(), config(batch_size=8, micro_batch_size=3, final_val=False))
    torch.testing.assert_close(losses(micro.fit()), losses(one.fit()), rtol=1e-5, atol=1e-6)


def test_two_gloo_processes_match_one_process(tmp_path):
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    for name, options in CASES.items():
        one = Trainer(tiny(), data(), config(**options))
        single = one.fit()
        ranks = [json.loads((tmp_path / f"{name}_rank{r}.json").read_text()) for r in range(2)]
        assert ranks[0] == ranks[1]  # every rank reports the global (all-reduced) numbers
        assert len(ranks[0]["losses"]) == 10
        torch.testing.assert_close(ranks[0]["losses"], losses(single), rtol=1e-5, atol=1e-5)
        assert ranks[0]["val_bpd"] == pytest.approx(single["val_bpd"], rel=1e-5)  # sharded evaluation
        assert len(ranks[0]["ema"]) == (len(one.model.state_dict()) if "ema_decay" in options else 0)
        torch.testing.assert_close(ranks[0]["ema"], ema_sums(one), rtol=1e-4, atol=1e-5)
        # rank 0 alone wrote the run folder; the checkpoint holds both ranks' RNG states
        run_dir = tmp_path / name
        assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
            "best.pt",
            "step_00000005.pt",
            "step_00000010.pt",
        ]
        state = load_checkpoint(run_dir / "checkpoints" / "step_00000010.pt")
        assert state["world_size"] == 2 and len(state["rng"]) == 2
        if one.ema is not None:  # the averaged weights rank 0 saved are the one-process average
            for key, value in one.ema.module.state_dict().items():
                saved = state["model_ema"][key]
                if key.endswith("attn.qkv.bias"):
                    # the key bias adds the same q.b_k to every logit of a row, which softmax ignores: its
                    # gradient is rounding noise, which Adam scales up to full-size steps that differ with
                    # the all-reduce's summation order, so only the query and value biases are compared
                    d = value.shape[0] // 3  # the tiny model: q, k and v of equal width
                    keep = torch.cat([torch.arange(d), torch.arange(2 * d, 3 * d)])
                    saved, value = saved[keep], value[keep]
                torch.testing.assert_close(saved, value, rtol=1e-4, atol=1e-6, msg=key)
        assert json.loads((run_dir / "metrics.json").read_text())["world_size"] == 2


def test_batch_smaller_than_world_size_is_rejected():
    with pytest.raises(ValueError, match="trainer.batch_size=1 is smaller than the 2 processes"):
        Trainer(tiny(), data(), config(batch_size=1), env=DistEnv(0, 2, 0))


@pytest.mark.slow
def test_torchrun_train_script(tmp_path):
    """`torchrun --standalone --nproc_per_node=2 scripts/train.py` runs the smoke experiment end to end."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "scripts/train.py",
        "experiment=fashion_mnist_smoke",
        "data=synthetic",
        "data.size=16",
        "data.val_size=4",
        "data.test_size=4",
        "data.seq_len=64",
        "data.data_shape=[8,8]",
        "trainer.threads=1",
        f"hydra.run.dir={tmp_path}",
    ]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["step"] == 4
    lines = out.stdout.splitlines()
    assert sum(line.startswith("test bits/dim") for line in lines) == 1  # only rank 0 prints the summary
    assert sum("[zoo.train][INFO] - model strided" in line for line in lines) == 1  # and logs
