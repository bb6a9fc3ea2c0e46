"""Distributed data parallel (DDP) plumbing for the trainer: process group, sharding, collectives.

``torchrun --standalone --nproc_per_node=N scripts/train.py ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them and starts
the process group (NCCL on GPU, gloo on CPU). Without them (plain ``python scripts/train.py``) it
returns a one-process :class:`DistEnv` and every helper here is the identity.

The global batch stays the configured ``batch_size`` whatever N: every rank draws the same seeded
global batch order (:func:`zoo.train.epoch_batches`) and takes its contiguous shard of each global
batch (:func:`shard`, sizes differ by at most one when N does not divide the batch). The loss of a
shard is its summed NLL divided by the *global* number of bytes, times N (DDP averages gradients
over ranks), so the gradient is that of the mean over the whole global batch whatever the split;
``trainer.micro_batch_size`` further splits a rank's shard into micro-steps (gradient accumulation).

Models that do not fit one GPU need sharded parameters (FSDP, ``torch.distributed.fsdp.fully_shard``);
see the report/docs: this module implements DDP only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: ``rank`` of ``world_size`` processes, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes checkpoints, metrics and logs."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when not launched by torchrun)."""
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        size = int(value)
    except ValueError as err:
        raise ValueError(f"WORLD_SIZE must be an integer, got {value!r}") from err
    if size < 1:
        raise ValueError(f"WORLD_SIZE must be >= 1, got {size}")
    return size


def init_distributed(backend: str | None = None) -> DistEnv:
    """Start the process group from torchrun's environment variables; one process without them.

    ``backend`` defaults to ``nccl`` when CUDA is available, else ``gloo``. On GPU each process uses
    device ``cuda:LOCAL_RANK``. Calling it again (group already started) returns the current env.
    """
    if dist.is_available() and dist.is_initialized():
        return current_env()
    if env_world_size() == 1:
        return DistEnv()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, init_method="env://")
    return DistEnv(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank)


def current_env() -> DistEnv:
    """The env of an already started process group (one process when none is started)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistEnv()
    return DistEnv(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def cleanup() -> None:
    """Destroy the process group if one was started."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(indices: Sequence[int], rank: int, world_size: int) -> list[int]:
    """Rank ``rank``'s contiguous share of a global batch; shares differ in size by at most one.

    Like ``DistributedSampler`` (without padding: no example is counted twice), applied to each
    global batch of the seeded epoch order rather than to the epoch, so the global batch is the
    same for every N.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    n = len(indices)
    lo, hi = rank * n // world_size, (rank + 1) * n // world_size
    return list(indices[lo:hi])


def all_reduce_sum(values: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Sum ``values`` over ranks in place (identity in one process); returns it."""
    if env.enabled:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def all_gather_object(obj: Any, env: DistEnv) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` in one process)."""
    if not env.enabled:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, env: DistEnv, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not env.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()
