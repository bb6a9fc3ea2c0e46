"""Training callback: the predicted distributions and the bits map of fixed validation examples, logged
as images at every periodic evaluation and at the end of training, so that a user sees the model's
distributions sharpen and its uncertainty move to the hard places (:mod:`zoo.visualize.predictions`).

``zoo.train.run`` builds it from the logger config (``configs/logger/wandb.yaml``)::

    prediction_images: 1   # validation examples drawn at every evaluation; 0 or false: off

and it logs through ``trainer.logger.log_images`` under ``predictions/distributions`` and
``predictions/bits_map``. Like every callback (:mod:`zoo.callbacks`) it runs on the main process only
and leaves the training state alone: the model is put in eval mode and restored, no gradient is
taken, and the trainer restores the RNG streams around it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .callbacks import Callback

if TYPE_CHECKING:  # pragma: no cover
    from .train import Trainer

#: the logger-config key (``logger.prediction_images``) read by :func:`from_logger_config`
OPTION = "prediction_images"


class PredictionPictures(Callback):
    """Logs :func:`~zoo.visualize.plot_distributions` and :func:`~zoo.visualize.plot_bits_map` of the
    first ``examples`` sequences of ``split`` (the same positions every time, so pictures compare)."""

    def __init__(self, examples: int = 1, split: str = "val", dpi: int = 80) -> None:
        if isinstance(examples, bool) or not isinstance(examples, int) or examples < 1:
            raise ValueError(f"examples must be an integer >= 1, got {examples!r}")
        self.examples, self.split, self.dpi = examples, split, dpi

    def on_evaluation(self, trainer: Trainer, step: int, val_bpd: float) -> None:
        self.log(trainer, step)

    def on_fit_end(self, trainer: Trainer, metrics: Mapping[str, Any]) -> None:
        self.log(trainer, trainer.step)

    def images(self, trainer: Trainer) -> dict[str, list[Any]]:
        """The pictures as ``{key: [uint8 (H, W, 3) arrays]}``, one per example."""
        from .visualize import plot_bits_map, plot_distributions, predict, to_array

        dataset = trainer.split(self.split)
        out: dict[str, list[Any]] = {"predictions/distributions": [], "predictions/bits_map": []}
        for i in range(min(self.examples, len(dataset))):
            pred = predict(trainer.model, dataset[i])
            positions = list(dict.fromkeys([0, *pred.layout.default_queries()]))  # fixed across evaluations
            out["predictions/distributions"].append(to_array(plot_distributions(pred, positions), self.dpi))
            out["predictions/bits_map"].append(to_array(plot_bits_map(pred), self.dpi))
        return out

    def log(self, trainer: Trainer, step: int) -> None:
        images = self.images(trainer)
        if any(images.values()):
            trainer.logger.log_images(images, step)


def from_logger_config(cfg: Mapping[str, Any] | None) -> PredictionPictures | None:
    """The callback the logger config asks for (``prediction_images: N``), or None when it is off."""
    value = dict(cfg or {}).get(OPTION, 0)
    if value is None or value is False or value == 0:
        return None
    if value is True:
        value = 1
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            f"logger.{OPTION} must be the number of validation examples to draw (0 or false: off), got {value!r}"
        )
    return PredictionPictures(value)
