"""The training loop used by ``scripts/train.py``: the recipe of Child et al. 2019, §6.

Adam(W) with a linear warmup then cosine decay of the learning rate, gradient clipping at 1.0 and
weight decay 0.01, built by timm (:mod:`zoo.optim`; any timm optimiser and schedule by name), optionally
an average of the weights (:mod:`zoo.ema`); the loss is the mean negative log-likelihood per byte,
reported in bits per dim (:mod:`zoo.metrics`) on training batches and periodically on the held-out
``val`` split, and on ``test`` at the end; a tqdm bar shows loss, bits/dim and tokens/s.

Beyond the loop:

* mixed precision (§5.5, :mod:`zoo.amp`): ``precision`` ``fp32`` | ``bf16`` | ``fp16`` (dynamic loss
  scaling); a step whose loss or gradients are not finite is skipped and counted (``skipped_steps``),
  and more than ``max_bad_steps`` such steps in a row stop the run with a ``RuntimeError``;
* distributed data parallel (:mod:`zoo.distributed`): the global batch is ``batch_size`` whatever the
  number of processes; each rank takes its shard of every global batch, optionally in micro-batches
  of ``micro_batch_size`` (gradient accumulation); only rank 0 writes files and logs;
* checkpoints (files: :mod:`zoo.checkpoint`; policy: :mod:`zoo.checkpointing`): every
  ``checkpoint_every`` steps and at the end, atomically, the last ``keep_last`` kept plus ``best.pt``
  (lowest val bits/dim, always measured on the same validation examples); ``resume=auto`` continues
  from the newest readable checkpoint of the run folder, ``resume=PATH`` from that file, with exactly
  the loss curve of an uninterrupted run (same batches, RNG states, optimiser, scheduler and scaler
  states). No run writes over a checkpoint it could not improve on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .amp import autocast, check_precision, make_scaler
from .callbacks import Callback
from .checkpoint import FORMAT_VERSION
from .checkpointing import CheckpointPolicy, Selection
from .data.base import DataBundle
from .distributed import DistEnv, all_gather_object, all_reduce_sum, current_env, shard
from .ema import EMA_KEY, check_ema_decay, create_ema, ema_state, load_ema_state
from .errors import user_input
from .loggers import NullLogger
from .metrics import BitsPerDimMeter, bits_per_dim, nll_nats
from .optim import check_optimizer, check_scheduler, from_trainer_config

log = logging.getLogger(__name__)


@dataclass
class TrainerConfig:
    """Options of :class:`Trainer` (the ``trainer`` group of the Hydra config)."""

    steps: int = 1000  # optimiser steps (skipped non-finite steps do not count)
    batch_size: int = 32  # sequences per step: the global batch, whatever the number of processes
    # sequences per forward/backward on one rank (gradient accumulation); None = the rank's whole share
    micro_batch_size: int | None = None
    lr: float = 1e-3  # peak learning rate, reached after warmup
    warmup_steps: int = 100  # linear warmup, cut to `steps` if longer (paper §6: 5000 for its long runs)
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio at `steps`
    weight_decay: float = 0.01  # paper §6; the Linear weights only (zoo.optim.decay_groups)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    optimizer: str = "adamw"  # any timm.optim.list_optimizers() name: adamw (§6) | lamb | lion | adafactor | ...
    optimizer_options: dict[str, Any] = field(default_factory=dict)  # more arguments of it, e.g. {momentum: 0.9}
    # timm schedule after the linear warmup: cosine (§6) | tanh | poly | step | multistep | wsd | rsqrt | constant | none
    scheduler: str = "cosine"
    scheduler_options: dict[str, Any] = field(default_factory=dict)  # e.g. {decay_epochs: 300} for step (in steps)
    ema_decay: float = 0.0  # > 0: evaluate (and pick best.pt by) an average of the weights (zoo.ema); 0 = off
    grad_clip: float = 1.0  # max global gradient norm (paper §6); 0 = off
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; fp16 with dynamic loss scaling, §5.5)
    max_bad_steps: int = 25  # more consecutive non-finite steps than this stop the run
    eval_every: int = 0  # steps between val evaluations; 0 = only at the end
    eval_examples: int | None = None  # val sequences per periodic evaluation; None = the whole split
    eval_batch_size: int | None = None  # None = batch_size
    final_val: bool = True  # evaluate the whole val split at the end
    test: bool = True  # evaluate the test split at the end
    test_examples: int | None = None  # None = the whole test split
    log_every: int = 10  # steps between train-metric log entries / progress updates
    seed: int = 0  # batch order (and, via the script, model init and dropout)
    device: str = "auto"  # auto = cuda (cuda:LOCAL_RANK under torchrun) if available else cpu
    threads: int | None = None  # torch.set_num_threads; None = PyTorch's default
    num_workers: int = 0  # DataLoader workers (the in-memory data sets need none)
    checkpoint: bool = True  # write checkpoints (the final one, and every `checkpoint_every` steps)
    checkpoint_every: int = 0  # steps between checkpoints; 0 = only the final one
    keep_last: int = 2  # step checkpoints kept in the run folder (best.pt is kept besides)
    resume: str | None = None  # null | auto (newest valid checkpoint of the run folder) | a checkpoint path
    progress: bool = True  # tqdm progress bar

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> TrainerConfig:
        """Build from a mapping (an OmegaConf node); an unknown key raises naming it and the valid keys."""
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise TypeError(f"unknown trainer option(s) {unknown}; valid options are {valid}")
        config = cls(**dict(options))
        config.validate()
        return config

    def validate(self) -> None:
        for name in ("steps", "batch_size", "log_every", "keep_last"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"trainer.{name} must be an integer >= 1, got {value!r}")
        for name in ("warmup_steps", "max_bad_steps", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"trainer.{name} must be an integer >= 0, got {value!r}")
        if self.eval_every < 0 or self.grad_clip < 0:
            raise ValueError(
                f"trainer.eval_every and grad_clip must be >= 0, got {self.eval_every}, {self.grad_clip}"
            )
        for name in ("eval_examples", "eval_batch_size", "test_examples", "threads", "micro_batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"trainer.{name} must be >= 1 or null, got {value!r}")
        check_precision(self.precision)
        check_optimizer(self.optimizer)
        check_scheduler(self.scheduler)
        check_ema_decay(self.ema_decay)
        if self.resume is not None and (not isinstance(self.resume, str) or not self.resume):
            raise ValueError(
                f"trainer.resume must be null, 'auto' or the path of a checkpoint file, got {self.resume!r}"
            )


def resolve_device(name: str, env: DistEnv | None = None) -> torch.device:
    """``auto`` -> ``cuda`` (``cuda:LOCAL_RANK`` under torchrun) when available, else ``cpu``."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", env.local_rank if env is not None else torch.cuda.current_device())
        return torch.device("cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The global RNG states (Python, NumPy, torch CPU and CUDA), for a checkpoint.

    Tensors and plain values only (NumPy's key as an int64 tensor), so that checkpoints open with
    ``torch.load(weights_only=True)`` (:mod:`zoo.checkpoint`).
    """
    name, key, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = (str(name), torch.from_numpy(key.astype(np.int64)), int(pos), int(has_gauss), float(gauss))
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore :func:`rng_state` (also the NumPy-array layout of format-1 checkpoints)."""
    random.setstate(state["python"])
    name, key, pos, has_gauss, gauss = state["numpy"]
    key = key.numpy() if isinstance(key, Tensor) else np.asarray(key)
    np.random.set_state((name, key.astype(np.uint32), int(pos), int(has_gauss), float(gauss)))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Index batches of one epoch: a permutation seeded by ``(seed, epoch)``, last partial batch dropped.

    A pure function of its arguments, so a data position ``(epoch, batch)`` names the same batch
    in every run (what an exact resume needs) and on every rank (each takes its shard of it).
    """
    if n < batch_size:
        raise ValueError(f"the training split has {n} sequences, fewer than one batch of {batch_size}")
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=gen)
    full = n // batch_size
    return order[: full * batch_size].view(full, batch_size).tolist()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def peak_memory_mib(device: torch.device) -> dict[str, float]:
    """Peak resident memory of this process, and peak CUDA memory allocated on ``device``, in MiB."""
    out: dict[str, float] = {}
    try:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        out["memory/peak_rss_mib"] = rss / (2**20 if sys.platform == "darwin" else 2**10)
    except ImportError:  # Windows
        pass
    if device.type == "cuda":
        out["memory/cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def _stack(dataset: Dataset, indices: list[int]) -> Tensor:
    return torch.stack([dataset[i] for i in indices])  # (B, T)


class Trainer:
    """Trains an autoregressive byte model on a :class:`~zoo.data.base.DataBundle`.

    The model maps ``(B, T)`` bytes to ``(B, T, 256)`` logits where ``logits[:, t]`` predicts byte
    ``t`` (the shift is inside the model), so the loss compares the logits with the input itself.
    Under ``torchrun`` (a started process group, :func:`zoo.distributed.init_distributed`) the model
    is wrapped in ``DistributedDataParallel`` and every rank must call :meth:`fit` (or
    :meth:`save_checkpoint` / :meth:`state_dict`, which gather every rank's RNG state).
    """

    def __init__(
        self,
        model: nn.Module,
        data: DataBundle,
        config: TrainerConfig | Mapping[str, Any] | None = None,
        run_dir: str | os.PathLike | None = None,
        logger: Any = None,
        extra_state: Mapping[str, Any] | None = None,
        env: DistEnv | None = None,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        if config is None:
            config = TrainerConfig()
        elif not isinstance(config, TrainerConfig):
            config = TrainerConfig.from_dict(config)
        config.validate()
        self.config = config
        self.data = data
        self.env = env if env is not None else current_env()
        if config.batch_size < self.env.world_size:
            raise ValueError(
                f"trainer.batch_size={config.batch_size} is smaller than the {self.env.world_size} processes: "
                "every rank needs at least one sequence of the global batch"
            )
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.logger = logger if logger is not None else NullLogger()
        self.callbacks = list(callbacks)  # zoo.callbacks: called on rank 0 after loop events
        # saved in every checkpoint as is (e.g. the resolved config)
        self.extra_state = dict(extra_state or {})
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        self.device = resolve_device(config.device, self.env)
        self.model = model.to(self.device)
        self.ema = create_ema(self.model, config.ema_decay)  # timm ModelEmaV3 of the weights, or None
        self.train_model: nn.Module = self.model  # what the training forward runs: the DDP wrapper if any
        if self.env.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.model, device_ids=ids)
        self.optimizer, self.scheduler = from_trainer_config(self.model, config)  # timm (zoo.optim)
        self.scaler = make_scaler(config.precision, self.device)
        self.step = 0  # optimiser steps taken
        self.epoch = 0  # data position: epoch ...
        self.batch_in_epoch = 0  # ... and global batches of it consumed
        self.history: list[dict[str, float]] = []  # one entry per log/eval event
        self.tokens_seen = 0  # global (all ranks)
        self.train_time_s = 0.0
        self.skipped_steps = 0  # steps skipped for a non-finite loss or gradient
        self.bad_in_a_row = 0
        self.best_val = math.inf  # lowest val bits/dim so far (best.pt)
        self.window = [0.0, 0, 0, 0.0]  # train nats, steps, tokens, seconds since the last log entry
        self.last_train = [math.nan, 0]  # train bits/dim of the last log window, and its steps
        self.resumed_from: Path | None = None
        self.best_selection: Mapping[str, Any] | None = None  # the examples best_val was measured on
        # which file to resume from, when best.pt is replaced, what is pruned (zoo.checkpointing)
        self.checkpoints = CheckpointPolicy(self.run_dir, config.keep_last, config.checkpoint, self.env)

    # ----------------------------------------------------------------------------- data
    def train_batches(self) -> Iterator[Tensor]:
        """Endless training batches from the current data position, advancing it.

        Yields this rank's shard ``(B / N, T)`` of each global batch (the whole batch in one process).
        The data set's ``set_epoch(epoch)`` is called, if it has one, at the start of each epoch.
        """
        cfg = self.config
        train = self.data.train
        while True:
            set_epoch = getattr(train, "set_epoch", None)
            if set_epoch is not None:
                set_epoch(self.epoch)
            batches = epoch_batches(len(train), cfg.batch_size, cfg.seed, self.epoch)
            shards = [shard(b, self.env.rank, self.env.world_size) for b in batches[self.batch_in_epoch :]]
            if cfg.num_workers == 0:
                source: Iterator[Tensor] = (_stack(train, s) for s in shards)
            else:  # own generator: creating the loader must not draw from the global RNG (exact resume)
                source = iter(
                    DataLoader(
                        train, batch_sampler=shards, num_workers=cfg.num_workers, generator=torch.Generator()
                    )
                )
            for batch in source:
                self.batch_in_epoch += 1
                yield batch
            self.epoch += 1
            self.batch_in_epoch = 0

    def split(self, name: str) -> Dataset:
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r}; the splits are 'train', 'val' and 'test'")
        return getattr(self.data, name)

    # ----------------------------------------------------------------------------- one step
    def compute_loss(self, batch: Tensor, reduction: str = "mean") -> Tensor:
        """Negative log-likelihood in nats of ``batch`` (B, T) under the (DDP-wrapped) model, autocast."""
        with autocast(self.config.precision, self.device):
            logits = self.train_model(batch)  # (B, T, V)
        return nll_nats(logits, batch, reduction=reduction)  # float32

    def backward(self, loss: Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def optimizer_step(self, loss_finite: bool = True) -> tuple[float, bool]:
        """Unscale, clip the global gradient norm, step optimiser and scheduler if all is finite.

        Returns ``(norm before clipping, stepped)``. A non-finite loss or norm skips the update (and,
        in fp16, lowers the loss scale); the scheduler only advances with real updates.
        """
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        max_norm = self.config.grad_clip if self.config.grad_clip > 0 else math.inf  # inf: measure only
        norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        ok = loss_finite and math.isfinite(norm)
        if ok:
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.scheduler.step()
        else:
            if self.scaler is not None:  # back off, as an overflow found by the scaler itself would
                self.scaler.update(self.scaler.get_scale() * self.scaler.get_backoff_factor())
            self.optimizer.zero_grad(set_to_none=True)
        return norm, ok

    def train_step(self, batch: Tensor) -> dict[str, float]:
        """One optimiser step on this rank's batch (B, T): loss (nats), bits/dim, grad norm, lr, skipped.

        The gradient is that of the mean NLL over the global batch: each micro-batch contributes its
        summed NLL / (global bytes) x world size (DDP averages over ranks). A step whose loss or
        gradient is not finite is skipped (``skipped`` = 1.0) and counted; more than
        ``max_bad_steps`` in a row raise ``RuntimeError``.
        """
        cfg = self.config
        self.train_model.train()
        batch = batch.to(self.device, non_blocking=True)  # (B, T)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.zero_grad(set_to_none=True)
        global_dims = batch.numel() if not self.env.enabled else cfg.batch_size * batch.shape[1]
        chunks = batch.split(cfg.micro_batch_size or batch.shape[0])
        nats = torch.zeros((), device=self.device)
        for i, chunk in enumerate(chunks):
            sync = i == len(chunks) - 1 or not self.env.enabled
            with contextlib.nullcontext() if sync else self.train_model.no_sync():
                loss_sum = self.compute_loss(chunk, reduction="sum")
                self.backward(loss_sum * (self.env.world_size / global_dims))
            nats = nats + loss_sum.detach().float()
        totals = all_reduce_sum(torch.stack([nats, (~torch.isfinite(nats)).float()]), self.env)
        mean_nats = float(totals[0]) / global_dims
        loss_finite = bool(totals[1] == 0) and math.isfinite(mean_nats)
        grad_norm, stepped = self.optimizer_step(loss_finite)
        self.tokens_seen += global_dims
        if stepped:
            self.step += 1
            self.bad_in_a_row = 0
            if self.ema is not None:  # average of the weights after each update (the first one copies)
                self.ema.update(self.model, step=self.step)
        else:
            self.skipped_steps += 1
            self.bad_in_a_row += 1
            log.warning(
                "skipped a step after optimiser step %d: loss %s, gradient norm %s (%d skipped so far)",
                self.step,
                mean_nats,
                grad_norm,
                self.skipped_steps,
            )
            if self.bad_in_a_row > cfg.max_bad_steps:
                raise RuntimeError(
                    f"{self.bad_in_a_row} consecutive training steps had a non-finite loss or gradient "
                    f"(last: loss {mean_nats} nats, gradient norm {grad_norm}) after optimiser step {self.step}, "
                    f"more than trainer.max_bad_steps={cfg.max_bad_steps}; stopping instead of training on "
                    f"NaNs (precision={cfg.precision}, lr={cfg.lr}). Try a lower trainer.lr, "
                    "trainer.precision=bf16 or fp32, or check the data; the last checkpoint is intact."
                )
        return {
            "loss": mean_nats,
            "bpd": float(bits_per_dim(mean_nats)),
            "grad_norm": grad_norm,
            "lr": lr,
            "skipped": 0.0 if stepped else 1.0,
        }

    # ----------------------------------------------------------------------------- evaluation
    @property
    def eval_model(self) -> nn.Module:
        """The weights to evaluate and sample with: the average (``trainer.ema_decay > 0``) or the model."""
        return self.ema.module if self.ema is not None else self.model

    @torch.no_grad()
    def evaluate(self, split: str | Dataset = "val", max_examples: int | None = None) -> float:
        """Bits per dim over ``split`` (its first ``max_examples`` sequences when given), exact per dim.

        When the data set has ``scored_from(k)`` (overlapping evaluation windows, e.g. enwik8 with
        ``eval_min_context > 0``), only positions ``>= scored_from(k)`` of window ``k`` count, so every
        byte of the split is scored once. Under DDP each rank scores a share and the sums are reduced.
        """
        dataset = self.split(split) if isinstance(split, str) else split
        n = len(dataset) if max_examples is None else min(len(dataset), max_examples)
        if n == 0:
            raise ValueError(f"cannot evaluate on an empty split {split!r}")
        scored_from = getattr(dataset, "scored_from", None)
        model = self.eval_model
        was_training = model.training
        model.eval()
        meter = BitsPerDimMeter()
        batch_size = self.config.eval_batch_size or self.config.batch_size
        mine = list(range(self.env.rank, n, self.env.world_size))
        for lo in range(0, len(mine), batch_size):
            indices = mine[lo : lo + batch_size]
            batch = _stack(dataset, indices).to(self.device, non_blocking=True)  # (B, T)
            with autocast(self.config.precision, self.device):
                logits = model(batch)  # (B, T, V)
            nll = nll_nats(logits, batch, reduction="none")  # (B, T) float32
            if scored_from is None:
                meter.update(nll.sum(dtype=torch.float64), batch.numel())
            else:
                starts = torch.tensor([scored_from(i) for i in indices], device=self.device)  # (B,)
                mask = torch.arange(batch.shape[1], device=self.device)[None, :] >= starts[:, None]  # (B, T)
                meter.update(nll[mask].sum(dtype=torch.float64), int(mask.sum()))
        model.train(was_training)
        totals = all_reduce_sum(
            torch.tensor([meter.nats, float(meter.dims)], dtype=torch.float64, device=self.device), self.env
        )
        meter.nats, meter.dims = float(totals[0]), int(totals[1])
        return meter.bits_per_dim

    # ----------------------------------------------------------------------------- the loop
    def fit(self) -> dict[str, Any]:
        """Train to ``config.steps`` (resuming first if ``config.resume``), evaluate, checkpoint.

        Returns the metrics (also written to ``metrics.json`` by rank 0).
        """
        from tqdm.auto import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        cfg = self.config
        self.maybe_resume()
        seq_len = self.data.seq_len
        batches = self.train_batches()
        bar = tqdm(
            total=cfg.steps,
            initial=self.step,
            disable=not (cfg.progress and self.env.is_main),
            desc="train",
            dynamic_ncols=True,
            mininterval=1.0,
        )
        with bar, logging_redirect_tqdm():  # log lines print above the bar instead of breaking it
            while self.step < cfg.steps:
                tic = time.perf_counter()
                out = self.train_step(next(batches))
                elapsed = time.perf_counter() - tic  # training only: evaluations are not throughput
                self.train_time_s += elapsed
                w = self.window
                w[2], w[3] = w[2] + cfg.batch_size * seq_len, w[3] + elapsed
                if out["skipped"]:
                    continue
                w[0], w[1] = w[0] + out["loss"], w[1] + 1
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    self._log_train(out)
                if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.steps:
                    val_bpd = self.evaluate("val", cfg.eval_examples)
                    self._record({"step": self.step, "val/bpd": val_bpd})
                    log.info(
                        "step %d: val bits/dim %.4f (%d sequences), train bits/dim %.4f",
                        self.step,
                        val_bpd,
                        self._count("val", cfg.eval_examples),
                        self.last_train[0],
                    )
                    self._maybe_save_best(val_bpd)
                    self._fire("on_evaluation", step=self.step, val_bpd=val_bpd)
                if (
                    cfg.checkpoint
                    and cfg.checkpoint_every
                    and self.step % cfg.checkpoint_every == 0
                    and self.step < cfg.steps
                    and self.run_dir is not None
                ):
                    self.save_checkpoint()

        metrics: dict[str, Any] = {
            "step": self.step,
            "train_bpd": self.last_train[0],  # mean over the last log window of training batches
            "train_bpd_steps": self.last_train[1],
            "skipped_steps": self.skipped_steps,
            "tokens_seen": self.tokens_seen,
            "train_time_s": self.train_time_s,
            "tokens_per_s": self.tokens_seen / max(self.train_time_s, 1e-9),
            "num_params": count_parameters(self.model),
            "seq_len": seq_len,
            "data": self.data.name,
            "precision": cfg.precision,
            "world_size": self.env.world_size,
            **peak_memory_mib(self.device),
        }
        if self.resumed_from is not None:
            metrics["resumed_from"] = str(self.resumed_from)
        # before the final evaluations: a crash there loses nothing
        if self.run_dir is not None and cfg.checkpoint:
            metrics["checkpoint"] = str(self.save_checkpoint())
        if cfg.final_val and len(self.data.val) > 0:
            metrics["val_bpd"] = self.evaluate("val")
            metrics["val_sequences"] = len(self.data.val)
            log.info("val bits/dim %.4f on %d sequences", metrics["val_bpd"], metrics["val_sequences"])
            # best.pt is chosen on the same examples as the periodic evaluations, not on the whole split
            whole = self.selection.examples == len(self.data.val)
            self._maybe_save_best(metrics["val_bpd"] if whole else self.evaluate("val", cfg.eval_examples))
        metrics.update(self.checkpoints.summary(self.best_val, self.selection))
        if cfg.test:
            eval_start = time.perf_counter()
            metrics["test_bpd"] = self.evaluate("test", cfg.test_examples)
            metrics["test_sequences"] = self._count("test", cfg.test_examples)
            metrics["test_time_s"] = time.perf_counter() - eval_start
            log.info("test bits/dim %.4f on %d sequences", metrics["test_bpd"], metrics["test_sequences"])
        final = {f"final/{k}": v for k, v in metrics.items() if k in ("val_bpd", "test_bpd")}
        if final:
            self._record({"step": self.step, **final})
        metrics["history"] = self.history
        if self.run_dir is not None and self.env.is_main:
            self.write_metrics(metrics)
        self.logger.log_summary({k: v for k, v in metrics.items() if k != "history"})
        self._fire("on_fit_end", metrics=metrics)
        return metrics

    def _fire(self, hook: str, **kwargs: Any) -> None:
        """Call ``hook`` of every callback on the main process (see :mod:`zoo.callbacks`)."""
        if not self.env.is_main or not self.callbacks:
            return
        saved = rng_state()  # a callback that samples must not shift the run's random streams
        try:
            for callback in self.callbacks:
                getattr(callback, hook)(self, **kwargs)
        finally:
            set_rng_state(saved)

    def _log_train(self, out: Mapping[str, float]) -> None:
        nats, steps, tokens, seconds = self.window
        self.last_train = [float(bits_per_dim(nats / steps)), steps]
        record = {
            "step": self.step,
            "train/loss": nats / steps,
            "train/bpd": self.last_train[0],
            "train/tokens_per_s": tokens / max(seconds, 1e-9),
            "lr": out["lr"],
            "grad_norm": out["grad_norm"],
            "skipped_steps": self.skipped_steps,
            **({"loss_scale": float(self.scaler.get_scale())} if self.scaler is not None else {}),
            **peak_memory_mib(self.device),
        }
        self._record(record)
        if self.env.is_main and not self.config.progress:
            log.info(
                "step %d: train bits/dim %.4f, %.0f tokens/s",
                self.step,
                self.last_train[0],
                record["train/tokens_per_s"],
            )
        self.window = [0.0, 0, 0, 0.0]

    def _count(self, split: str, limit: int | None) -> int:
        n = len(self.split(split))
        return n if limit is None else min(n, limit)

    def _record(self, record: dict[str, float]) -> None:
        self.history.append(record)
        self.logger.log_metrics({k: v for k, v in record.items() if k != "step"}, step=int(record["step"]))

    # ----------------------------------------------------------------------------- state
    def _model_config(self) -> dict[str, Any] | None:
        config = getattr(self.model, "config", None)
        return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else None

    def _data_info(self) -> dict[str, Any]:
        return {
            "name": self.data.name,
            "seq_len": self.data.seq_len,
            "data_shape": list(self.data.data_shape),
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly (a collective under DDP: call on every rank).

        Weights (and their average, ``model_ema``), optimiser, scheduler, loss scaler, step, data
        position, the RNG states of every rank, the model config, the data shape and
        :data:`zoo.checkpoint.FORMAT_VERSION`.
        """
        return {
            "format_version": FORMAT_VERSION,
            "model": self.model.state_dict(),
            EMA_KEY: ema_state(self.ema),  # the averaged weights (zoo.ema), None without trainer.ema_decay
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "tokens_seen": self.tokens_seen,
            "train_time_s": self.train_time_s,
            "skipped_steps": self.skipped_steps,
            "bad_in_a_row": self.bad_in_a_row,
            "best_val": self.best_val,
            "best_selection": self.best_selection,  # the validation examples best_val was measured on
            "window": list(self.window),
            "last_train": list(self.last_train),
            "history": list(self.history),
            "rng": all_gather_object(rng_state(), self.env),  # one entry per rank
            "world_size": self.env.world_size,
            "trainer_config": dataclasses.asdict(self.config),
            "model_config": self._model_config(),
            "data": self._data_info(),
            **self.extra_state,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (weights must match: see :func:`zoo.checkpoint.check_compatible`)."""
        self.model.load_state_dict(state["model"])
        load_ema_state(self.ema, state, self.model)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.tokens_seen = int(state.get("tokens_seen", 0))
        self.train_time_s = float(state.get("train_time_s", 0.0))
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.bad_in_a_row = int(state.get("bad_in_a_row", 0))
        self.best_val = float(state.get("best_val", math.inf))
        self.window = list(state.get("window", [0.0, 0, 0, 0.0]))
        self.last_train = list(state.get("last_train", [math.nan, 0]))
        self.history = list(state.get("history", []))
        rng = state["rng"]
        if isinstance(rng, Mapping):  # a single state (older layout)
            rng = [rng]
        if len(rng) != self.env.world_size:
            log.warning(
                "the checkpoint holds RNG states of %d processes, this run has %d: rank %d takes state %d "
                "(batches are still exact; dropout masks will differ from an uninterrupted run)",
                len(rng),
                self.env.world_size,
                self.env.rank,
                self.env.rank % len(rng),
            )
        set_rng_state(rng[self.env.rank % len(rng)])

    # ----------------------------------------------------------------------------- checkpoints
    # The policy (which file, when best.pt is replaced, pruning, fallbacks) is zoo.checkpointing.
    @property
    def selection(self) -> Selection:
        """The validation examples ``best.pt`` is chosen on: the first ``eval_examples`` val sequences."""
        return Selection("val", self._count("val", self.config.eval_examples), self.data.name, self.data.seq_len)

    def maybe_resume(self) -> Path | None:
        """Apply ``config.resume`` (``auto``, a path, or null: :meth:`CheckpointPolicy.resume_target`), then
        settle the value a new ``best.pt`` must beat. Raises :class:`zoo.checkpoint.CheckpointError` naming
        the file(s) when a checkpoint cannot be used, or when a new run would replace existing checkpoints.
        """
        path = self.checkpoints.resume_target(self.config.resume)
        if path is not None:
            self.resume_from(path)
        self.best_val = self.checkpoints.settle_best(
            self.selection, self.best_val, self.best_selection, self._score_weights
        )
        self.best_selection = self.selection.as_dict()
        return path

    def resume_from(self, path: str | os.PathLike) -> Path:
        """Load and check ``path``, then restore this trainer from it; raises naming the file and the mismatch."""
        path = Path(path)
        state = self.checkpoints.open(path, self.model, self._model_config(), self._data_info())
        saved = state.get("trainer_config") or {}
        for key in ("batch_size", "seed"):
            if key in saved and saved[key] != getattr(self.config, key):
                log.warning(
                    "checkpoint %s was trained with trainer.%s=%r, this run uses %r: the batch order differs",
                    path,
                    key,
                    saved[key],
                    getattr(self.config, key),
                )
        self.load_state_dict(state)
        self.best_selection = state.get("best_selection")
        self.resumed_from = path
        log.info(
            "resumed from %s at step %d (epoch %d, batch %d)",
            path,
            self.step,
            self.epoch,
            self.batch_in_epoch,
        )
        return path

    def _score_weights(self, weights: Mapping[str, Tensor]) -> float:
        """Val bits/dim of ``weights`` on :attr:`selection`, loaded into the module evaluations use
        (:attr:`eval_model`: the average with ``trainer.ema_decay``); its own weights are put back after."""
        target = self.eval_model
        current = {k: v.detach().clone() for k, v in target.state_dict().items()}
        target.load_state_dict(weights)
        try:
            return self.evaluate("val", self.config.eval_examples)
        finally:
            target.load_state_dict(current)

    def checkpoint_path(self) -> Path:
        if self.run_dir is None:
            raise ValueError("this Trainer has no run_dir to write checkpoints to")
        return self.run_dir / "checkpoints" / f"step_{self.step:08d}.pt"

    def save_checkpoint(
        self, path: str | os.PathLike | None = None, extra: Mapping[str, Any] | None = None
    ) -> Path:
        """Write :meth:`state_dict` (plus ``extra``) atomically to ``path`` (``checkpoints/step_N.pt``).

        Collective under DDP (every rank's RNG state is gathered); only rank 0 writes. After a
        successful write of a step checkpoint, older ones beyond ``keep_last`` are deleted; a failed
        write raises :class:`zoo.checkpoint.CheckpointWriteError` and leaves every existing file as it was.
        """
        state = self.state_dict()
        state.update(extra or {})
        target = Path(path) if path is not None else self.checkpoint_path()
        self.checkpoints.write(state, target, step_file=path is None)
        return target

    def _maybe_save_best(self, val_bpd: float) -> None:
        """Write ``best.pt`` if ``val_bpd`` (measured on :attr:`selection`) beats every earlier one."""
        if not val_bpd < self.best_val:
            return
        previous, self.best_val = self.best_val, val_bpd  # in the state that best.pt holds
        if self.checkpoints.enabled:
            try:
                self.save_checkpoint(self.checkpoints.best_path, extra={"val_bpd": val_bpd})
            except BaseException:
                self.best_val = previous  # not written: the bar is still the file on disk
                raise

    def write_metrics(self, metrics: Mapping[str, Any]) -> Path:
        """Write ``metrics.json`` in the run folder (atomically: temporary file, then rename)."""
        assert self.run_dir is not None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / "metrics.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(metrics, indent=2, default=float) + "\n")
        os.replace(tmp, path)
        return path


# --------------------------------------------------------------------------------- from a config
def _container(node: Any) -> Any:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node


def build_from_config(cfg: Any) -> tuple[nn.Module, DataBundle]:
    """The data set (``cfg.data``) and the model (``cfg.model``, shaped by the data) of a train config.

    The data set decides ``seq_len`` and ``data_shape``: they are passed to the model as overrides,
    so any model config runs on any data set its attention pattern can serve.
    """
    from .data import build_data
    from .registry import build, check_attention_node

    check_attention_node(cfg.model)  # model.attention.name=X without the group: one clear error
    data_options = dict(_container(cfg.data))
    data = build_data(data_options.pop("name"), **data_options)
    model_spec = _container(cfg.model)
    shape = {"seq_len": data.seq_len, "data_shape": list(data.data_shape)}
    declared = {k: model_spec.get(k) for k in shape if k in model_spec}
    if declared and declared != {k: shape[k] for k in declared}:
        log.info("model %s taken from the data set %r (the model config says %s)", shape, data.name, declared)
    return build(model_spec, **shape), data


def run(cfg: Any, run_dir: str | os.PathLike | None) -> dict[str, Any]:
    """Train as ``cfg`` (the composed ``configs/train.yaml``) says; outputs go to ``run_dir``.

    Under ``torchrun`` the process group is started here (:func:`zoo.distributed.init_distributed`)
    and destroyed at the end; only rank 0 builds a real logger and writes files.
    """
    from .distributed import cleanup, init_distributed
    from .loggers import build_logger
    from .run_record import RunRecord

    started = time.perf_counter()
    env = init_distributed()
    started_group = env.enabled
    try:
        resolved = _container(cfg)
        seed_everything(int(cfg.seed))  # the same model initialisation on every rank
        with user_input():  # a bad value, missing data: one message from the apps (zoo.cli), no traceback
            trainer_config = TrainerConfig.from_dict(_container(cfg.trainer))
            model, data = build_from_config(cfg)
            if len(data.train) < trainer_config.batch_size:
                raise ValueError(
                    f"the training split of {data.name} has {len(data.train)} sequences, fewer than one batch of "
                    f"trainer.batch_size={trainer_config.batch_size}"
                )
        if env.rank > 0:  # different dropout masks per rank (rank 0 = a one-process run)
            seed_everything(int(cfg.seed) + 7919 * env.rank)
        n_params = count_parameters(model)
        log.info(
            "model %s (attention %s): %s parameters; data %s: %d train / %d val / %d test sequences of %d bytes; "
            "%d process(es)",
            resolved["model"].get("name", "?"),
            ", ".join(f"{k}={v}" for k, v in model.config.attention.items() if v is not None),
            f"{n_params:,}",
            data.name,
            len(data.train),
            len(data.val),
            len(data.test),
            data.seq_len,
            env.world_size,
        )
        with user_input():
            callbacks = logger_callbacks(resolved.get("logger"))  # pictures logged during training
            logger = (
                build_logger(resolved.get("logger"), run_dir if run_dir is not None else ".", config=resolved)
                if env.is_main
                else NullLogger()
            )
        # overrides, resolved model and data, wall time, val curve -> metrics.json (zoo.run_record)
        record = RunRecord(cfg, model, data, started=started) if env.is_main else None
        try:
            with user_input():
                trainer = Trainer(
                    model, data, trainer_config, run_dir, logger, extra_state={"config": resolved}, env=env,
                    callbacks=[*callbacks, *([record] if record is not None else [])],
                )  # fmt: skip
            metrics = trainer.fit()
        finally:
            logger.finish()
    finally:
        if started_group:
            cleanup()
    return metrics


def logger_callbacks(logger_cfg: Mapping[str, Any] | None) -> list[Callback]:
    """Callbacks that log pictures, as the logger config asks (``loggers.CALLBACK_OPTIONS``)."""
    from . import prediction_pictures, sample_callbacks

    made = (prediction_pictures.from_logger_config(logger_cfg), sample_callbacks.from_logger_config(logger_cfg))
    return [cb for cb in made if cb is not None]


def summary_line(metrics: Mapping[str, Any]) -> str:
    """The last line of a run: test (and val) bits per dim with the number of sequences they cover."""
    parts = []
    if "test_bpd" in metrics:
        parts.append(f"test bits/dim {metrics['test_bpd']:.4f} ({metrics['test_sequences']} sequences)")
    if "val_bpd" in metrics:
        parts.append(f"val bits/dim {metrics['val_bpd']:.4f} ({metrics['val_sequences']} sequences)")
    parts.append(
        f"train bits/dim {metrics['train_bpd']:.4f} (mean of the last {metrics['train_bpd_steps']} steps)"
    )
    return " | ".join(parts)
