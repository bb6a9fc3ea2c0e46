"""Experiment loggers for the trainer: ``none`` (nothing) and ``wandb`` (offline by default).

``build_logger(cfg, run_dir, config)`` picks one by ``cfg["name"]``. The ``none`` logger never
imports wandb; the ``wandb`` logger imports it only when built and runs in ``mode="offline"``
unless configured otherwise, so it never needs a network (``wandb sync`` uploads later). Pictures
logged during training (completions, samples, predicted distributions) come from callbacks
(:mod:`zoo.sample_callbacks`, :mod:`zoo.prediction_pictures`) through :meth:`WandbLogger.log_images`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class NullLogger:
    """Logs nothing (``logger=none``)."""

    name = "none"

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        pass

    def log_images(self, images: Mapping[str, Any], step: int) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbLogger:
    """Weights & Biases run: the resolved config at start, metrics per step, a summary at the end."""

    name = "wandb"

    def __init__(
        self,
        run_dir: str | os.PathLike,
        config: Mapping[str, Any] | None = None,
        project: str = "sparse-transformer-zoo",
        entity: str | None = None,
        mode: str = "offline",
        run_name: str | None = None,
        group: str | None = None,
        tags: list[str] | None = None,
    ) -> None:
        if mode not in ("offline", "online", "disabled"):
            raise ValueError(f"wandb mode must be 'offline', 'online' or 'disabled', got {mode!r}")
        import wandb  # only here: logger=none must not import it

        Path(run_dir).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=project,
            entity=entity,
            mode=mode,
            dir=str(run_dir),
            name=run_name,
            group=group,
            tags=list(tags or []),
            config=dict(config or {}),
            reinit=True,  # finish a run left open by an earlier call in this process (e.g. a notebook)
        )

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.run.log(dict(metrics), step=step)

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        for key, value in summary.items():
            self.run.summary[key] = value

    def log_images(self, images: Mapping[str, Any], step: int) -> None:
        """Log pictures, ``{key: image}``: an image is a PNG path, a PIL image or an ``(H, W[, C])`` uint8
        array (a list of them logs a gallery under one key)."""
        import wandb

        def one(img: Any) -> Any:
            return wandb.Image(str(img) if isinstance(img, (str, os.PathLike)) else img)

        self.run.log(
            {k: [one(i) for i in v] if isinstance(v, (list, tuple)) else one(v) for k, v in images.items()},
            step=step,
        )

    def finish(self) -> None:
        self.run.finish()


_LOGGERS = {"none": NullLogger, "wandb": WandbLogger}
#: wandb logger-config keys that configure training callbacks (read by zoo.train.run), not the logger
CALLBACK_OPTIONS = ("prediction_images", "completions", "sample_images")


def build_logger(
    cfg: Mapping[str, Any] | None, run_dir: str | os.PathLike, config: Mapping[str, Any] | None = None
):
    """Logger from its config (``{"name": "none" | "wandb", ...options}``); ``None`` means ``none``."""
    options = dict(cfg or {"name": "none"})
    name = options.pop("name", "none")
    if name not in _LOGGERS:
        raise ValueError(f"unknown logger {name!r}; available loggers are {sorted(_LOGGERS)}")
    if name == "none":
        if options:
            raise TypeError(f"logger 'none' takes no options, got {sorted(options)}")
        return NullLogger()
    valid = ("project", "entity", "mode", "run_name", "group", "tags", *CALLBACK_OPTIONS)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for logger 'wandb'; valid options are {list(valid)}")
    options = {k: v for k, v in options.items() if k not in CALLBACK_OPTIONS}
    return WandbLogger(run_dir, config=config, **options)
