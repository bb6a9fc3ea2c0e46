"""What a training run records about itself, so that runs and sweeps can be compared without joining files.

:class:`RunRecord` is a :class:`~zoo.callbacks.Callback` that :func:`zoo.train.run` attaches to every run.
At the end it adds to the run folder's ``metrics.json`` (next to the trainer's step count, train time,
tokens/s, parameter count and val/test bits per dim):

* ``overrides``: the command-line overrides of this job (Hydra's ``HydraConfig.get().overrides.task``;
  in a ``-m`` sweep, this job's values), ``choices`` (the config group options, e.g. ``model/attention``),
  ``sweep`` (the sweep folder and job number, in a multirun) and ``seed``;
* ``model``: the resolved model config (every field, the attention pattern with all its values) with its
  ``name`` and ``parameters``; ``data_summary``: the data set's name, shape and split sizes;
* ``wall_time_s``: data loading, model building, training and every evaluation, as a user waits for it,
  and ``load_average``: the machine's 1-minute load average at the start and at the end (times measured
  on a shared machine are only comparable at similar load);
* ``val_curve``: ``{step, sequences, time_s, val_bpd}`` after every periodic validation (``sequences``
  = training sequences seen, ``time_s`` = training time so far, evaluations excluded) and at the end
  (the whole val split), for plots of bits/dim against data and against time.

It also says, in one warning line, when the run's setting gives the same model as another setting of the
same axis (:func:`vacuous_settings`), e.g. ``model.embedding=attention`` when the stride equals the
image width: then an ablation between the two would train the same model twice. ``scripts/collect.py``
(:mod:`zoo.results`) reads these records back into tables and plots.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .callbacks import Callback
from .embeddings import equivalent_embeddings

if TYPE_CHECKING:  # pragma: no cover
    from .data.base import DataBundle
    from .train import Trainer

log = logging.getLogger(__name__)


def hydra_context() -> dict[str, Any] | None:
    """This Hydra job's overrides, group choices and sweep position; None outside a Hydra app."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    return {
        "overrides": [str(o) for o in hc.overrides.task],
        "choices": {k: v for k, v in hc.runtime.choices.items() if not str(k).startswith("hydra/")},
        "sweep": {"dir": str(hc.sweep.dir), "job": int(hc.job.num)} if multirun else None,
    }


def name_sweep_runs(cfg: Any, context: Mapping[str, Any] | None) -> None:
    """Fill the wandb logger's unset ``group`` with the sweep's folder and ``run_name`` with the overrides.

    Runs of one ``-m`` sweep then share a group named after the sweep (``multirun/DATE/TIME`` or the
    ``hydra.sweep.dir`` given), and each is named after its overrides (``model/attention=fixed
    model.embedding=absolute``). Values set in the config or on the command line are kept.
    """
    from omegaconf import open_dict

    logger = cfg.get("logger")
    if context is None or logger is None or logger.get("name") != "wandb":
        return
    with open_dict(logger):
        if logger.get("group") is None and context.get("sweep"):
            logger.group = context["sweep"]["dir"]
        if logger.get("run_name") is None and context.get("overrides"):
            logger.run_name = " ".join(context["overrides"])


def vacuous_settings(config: Any, reference_embedding: str | None = None) -> list[str]:
    """One message per setting of ``config`` (a :class:`~zoo.model.ModelConfig`) that gives the same model
    as another value of its axis here; the model's own (registered) embedding is the reference and is not
    reported, the deviation from it is.

    Embeddings (§5.3) are the same model when their position tables have the same sizes: ``attention``
    with stride ``l`` is ``[ceil(n / l), l]``, the data embedding of a ``[H, W]`` image with ``W = l`` too
    (the default data: 28 x 28 with stride 28); ``absolute`` is ``data`` for a 1-D stream.
    """
    from .embeddings import attention_stride, embedding_sizes
    from .model import build_component

    kind = config.embedding
    if reference_embedding is not None and kind == reference_embedding:
        return []
    pattern = build_component(config).config
    same = equivalent_embeddings(kind, config.seq_len, list(config.data_shape), pattern)
    if not same:
        return []
    sizes = embedding_sizes(kind, config.seq_len, list(config.data_shape), pattern)
    try:
        stride = f", attention stride {attention_stride(pattern)}"
    except ValueError:
        stride = ""
    others = " or ".join(f"model.embedding={s}" for s in same)
    alternatives = [e for e in ("data", "attention", "absolute") if e != kind and e not in same]
    return [
        f"model.embedding={kind} gives the same model as {others} here: the same position tables {sizes} "
        f"(seq_len {config.seq_len}, data_shape {list(config.data_shape)}{stride}), so an ablation between "
        f"them trains one model twice; compare with model.embedding={alternatives[0] if alternatives else '...'}"
        " or change the stride"
    ]


def data_summary(data: DataBundle) -> dict[str, Any]:
    """Name, sequence length, example shape and split sizes of a data set."""
    return {
        "name": data.name,
        "seq_len": int(data.seq_len),
        "data_shape": [int(s) for s in data.data_shape],
        "train": len(data.train),
        "val": len(data.val),
        "test": len(data.test),
    }


class RunRecord(Callback):
    """Records overrides, resolved model and data, wall time and the val curve into ``metrics.json``.

    ``cfg`` is the composed train config, ``model`` / ``data`` what :func:`zoo.train.build_from_config` built;
    ``context`` defaults to :func:`hydra_context` (None outside Hydra: overrides are then not known);
    ``started`` is the ``time.perf_counter()`` of the run's start (default: now). Warns once per
    :func:`vacuous_settings` message when created.
    """

    def __init__(
        self,
        cfg: Any,
        model: Any,
        data: DataBundle,
        context: Mapping[str, Any] | None = None,
        started: float | None = None,
    ) -> None:
        from .registry import get_model_config, list_models

        self.started = time.perf_counter() if started is None else started
        self.context = dict(context) if context is not None else hydra_context()
        config = model.config
        name = cfg.model.get("name") if hasattr(cfg, "model") else None
        reference = get_model_config(name).embedding if name in list_models() else None
        for message in vacuous_settings(config, reference):
            log.warning(message)
        self.static = {
            "overrides": (self.context or {}).get("overrides"),
            "choices": (self.context or {}).get("choices"),
            "sweep": (self.context or {}).get("sweep"),
            "seed": int(cfg.seed) if "seed" in cfg else None,
            "model": {
                "name": name,
                "parameters": sum(p.numel() for p in model.parameters()),
                **config.to_dict(),
            },
            "data_summary": data_summary(data),
        }
        self.curve: list[dict[str, float]] = []
        self.load_start = _load_average()

    @staticmethod
    def _point(trainer: Trainer, val_bpd: float) -> dict[str, float]:
        return {
            "step": trainer.step,
            "sequences": trainer.tokens_seen // max(int(trainer.data.seq_len), 1),
            "time_s": trainer.train_time_s,
            "val_bpd": val_bpd,
        }

    def on_evaluation(self, trainer: Trainer, step: int, val_bpd: float) -> None:
        self.curve.append(self._point(trainer, val_bpd))

    def on_fit_end(self, trainer: Trainer, metrics: Mapping[str, Any]) -> None:
        """Add the record to ``metrics`` (the dict :meth:`Trainer.fit` returns) and rewrite ``metrics.json``."""
        curve = list(self.curve)
        if "val_bpd" in metrics:  # the whole val split at the end
            curve.append(self._point(trainer, metrics["val_bpd"]))
        record = {
            **self.static,
            "wall_time_s": time.perf_counter() - self.started,
            "load_average": [self.load_start, _load_average()],
            "val_curve": curve,
        }
        if isinstance(metrics, dict):
            metrics.update(record)
        if trainer.run_dir is not None:
            trainer.write_metrics({**metrics, **record})


def _load_average() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - Windows
        return None
