"""Samples during training: completions of fixed validation images and final unconditional samples.

What users of Sparse Transformer reproductions watch while a run trains: at every periodic
evaluation, the top halves of the first ``completions`` validation images are completed by the
current model (the same images and the same random draws each time, so the grids compare across
steps) and logged as one grid next to the originals (rows input / completion / original, as in the
paper's completion figures, Child et al. 2019 §7); at the end, ``sample_images`` unconditional
samples as one grid. Decoding is key/value-cached (:func:`zoo.generate.generate`), so this costs a
fraction of a second per evaluation for the default model.

The counts live in the wandb logger's config (``configs/logger/wandb.yaml``: ``completions``,
``sample_images``; 0 disables; :data:`zoo.loggers.CALLBACK_OPTIONS`); :func:`from_logger_config`
builds the callback for the wandb logger (``zoo.train.logger_callbacks``), which draws only for
image-shaped data. Samples come from the weights the trainer evaluates (``trainer.eval_model``: the
weight average when there is one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from .amp import autocast
from .callbacks import Callback
from .generate import generate
from .media import completion_grid, grid_array, is_image_shape, sample_grid

if TYPE_CHECKING:  # pragma: no cover
    from .train import Trainer

#: the logger options this module owns
OPTIONS = ("completions", "sample_images")


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"logger.{name} must be an integer >= 0 (0 = none), got {value!r}")
    return value


class SampleImages(Callback):
    """Logs completion grids at evaluations and an unconditional-sample grid at the end (see the module doc)."""

    def __init__(self, completions: int = 4, sample_images: int = 4, seed: int = 0, scale: int = 2) -> None:
        self.completions = _count("completions", completions)
        self.sample_images = _count("sample_images", sample_images)
        self.seed, self.scale = seed, scale

    def _generate(self, trainer: Trainer, num: int, prompt: torch.Tensor | None) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed)  # the same draws at every evaluation
        model = getattr(trainer, "eval_model", trainer.model)  # the weight average when there is one
        with autocast(trainer.config.precision, trainer.device):
            return generate(model, num, prompt=prompt, generator=gen)

    def on_evaluation(self, trainer: Trainer, step: int, val_bpd: float) -> None:
        shape = list(trainer.data.data_shape)
        k = min(self.completions, len(trainer.data.val))
        if not k or not is_image_shape(shape):
            return
        originals = torch.stack([trainer.data.val[i] for i in range(k)]).long()  # (k, T): fixed images
        P = originals.shape[1] // 2  # the top half given
        out = self._generate(trainer, k, originals[:, :P].to(trainer.device))
        grid = completion_grid(originals, out, P, shape, scale=self.scale)
        trainer.logger.log_images({"completions": grid_array(grid)}, step)

    def on_fit_end(self, trainer: Trainer, metrics: Mapping[str, Any]) -> None:
        shape = list(trainer.data.data_shape)
        if not self.sample_images or not is_image_shape(shape):
            return
        out = self._generate(trainer, self.sample_images, None)
        grid = sample_grid(out, shape, nrow=min(8, self.sample_images), scale=self.scale)
        trainer.logger.log_images({"samples": grid_array(grid)}, trainer.step)


def from_logger_config(cfg: Mapping[str, Any] | None) -> SampleImages | None:
    """The callback the wandb logger config asks for (``completions``, ``sample_images``; defaults 4 and
    4), or None: another logger, or both counts 0."""
    options = dict(cfg or {})
    if options.get("name") != "wandb":
        return None
    callback = SampleImages(**{key: options[key] for key in OPTIONS if key in options})
    return callback if callback.completions or callback.sample_images else None
