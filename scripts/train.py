"""Train a Sparse Transformer (Child et al. 2019) from the Hydra config ``configs/train.yaml``.

    python scripts/train.py                                   # the embedded default: Fashion-MNIST, strided
    python scripts/train.py model=strided_half                # another registered variant
    python scripts/train.py model.attention.name=fixed        # one ablation override
    python scripts/train.py experiment=fashion_mnist_fixed    # a delta from configs/experiment/
    python scripts/train.py trainer=smoke logger=wandb        # a few steps, logged offline to wandb
    python scripts/train.py trainer.precision=bf16            # mixed precision (fp16: dynamic loss scaling)
    python scripts/train.py hydra.run.dir=runs/a trainer.checkpoint_every=500 trainer.resume=auto
                                                              # resumable: rerun the same line after a crash
    torchrun --standalone --nproc_per_node=4 scripts/train.py # DDP: same global batch, 4 processes

Writes ``metrics.json``, ``checkpoints/`` and ``train.log`` to Hydra's run folder (``outputs/DATE/TIME``)
and ends by printing the test bits per dim. Under ``torchrun`` every rank runs this script; only rank 0
writes files, logs above warnings and prints. ``trainer.resume=auto`` looks for checkpoints in the run
folder, so give resumable runs a fixed ``hydra.run.dir`` (Hydra's default folder is new every run).

A mistake in the command (a bad value, missing data, an unusable checkpoint) prints one ``error: ...``
line and exits with status 2 (:mod:`zoo.cli`); ``ZOO_FULL_ERROR=1`` shows the traceback as well.
"""

from __future__ import annotations

import logging
import os

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from zoo.cli import guard
from zoo.train import run, summary_line


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
@guard  # a user's mistake: one `error:` line, exit status 2; a bug: its traceback
def main(cfg: DictConfig) -> float | None:
    run_dir = HydraConfig.get().runtime.output_dir
    if int(os.environ.get("RANK", "0")) > 0:  # torchrun: rank 0 alone logs and prints
        logging.getLogger().setLevel(logging.WARNING)
        run(cfg, run_dir)
        return None
    metrics = run(cfg, run_dir)
    print(f"run folder: {run_dir}")
    print(summary_line(metrics))
    return metrics.get("test_bpd")  # the value a Hydra sweeper would minimise


if __name__ == "__main__":
    main()
