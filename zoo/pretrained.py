"""A trained model (and the data set it was trained on) from a checkpoint or a run folder.

``load_trained(path)`` accepts what ``scripts/train.py`` writes: a checkpoint file
(``checkpoints/step_N.pt``, ``best.pt``), a run folder or its ``checkpoints/`` folder (then the newest
``step_N.pt``, else ``best.pt``). The model is rebuilt from the model config stored in the checkpoint;
:func:`run_data` builds the run's data set from the train config stored beside it (or the run
folder's ``.hydra/config.yaml``), e.g. for the prompts of a completion.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoint import BEST_FILE, check_compatible, load_checkpoint, step_checkpoints
from .model import ModelConfig, SparseTransformer
from .registry import apply_overrides

# ModelConfig fields that change how the same weights are computed, not the weights
COMPUTE_FIELDS = ("attention_backend", "attention_backend_options", "checkpoint_every")


@dataclass
class Trained:
    """A loaded checkpoint: the model (eval mode, on ``device``), its file, step and stored run config."""

    model: SparseTransformer
    path: Path
    step: int | None
    run_config: dict[str, Any] | None


def find_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file as given, or for a run folder (or its ``checkpoints/``) the newest ``step_N.pt``.

    A folder without step checkpoints falls back to its ``best.pt``; temporary files of an interrupted
    write are never chosen (:func:`zoo.checkpoint.step_checkpoints` matches ``step_N.pt`` only).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist (give a checkpoint file or a run folder)")
    if path.is_file():
        return path
    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    steps = step_checkpoints(folder)
    if steps:
        return steps[-1][1]
    if (folder / BEST_FILE).is_file():
        return folder / BEST_FILE
    raise FileNotFoundError(f"no checkpoint (step_N.pt or {BEST_FILE}) in {folder}")


def stored_run_config(state: Mapping[str, Any], path: Path) -> dict[str, Any] | None:
    """The run's resolved train config: in the checkpoint, else the run folder's ``.hydra/config.yaml``."""
    if isinstance(state.get("config"), Mapping):
        return dict(state["config"])
    from omegaconf import OmegaConf

    for folder in (path.parent.parent, path.parent):  # run/checkpoints/x.pt, or x.pt beside .hydra/
        hydra_config = folder / ".hydra" / "config.yaml"
        if hydra_config.is_file():
            return OmegaConf.to_container(OmegaConf.load(hydra_config), resolve=True)  # type: ignore[return-value]
    return None


def load_trained(path: str | os.PathLike, device: str | torch.device = "cpu", **compute: Any) -> Trained:
    """The model of checkpoint ``path`` with its weights, in eval mode on ``device``.

    ``compute`` overrides fields that do not change the weights (:data:`COMPUTE_FIELDS`, e.g.
    ``attention_backend="auto"``); anything else raises ``ValueError``.
    """
    file = find_checkpoint(path)
    state = load_checkpoint(file, map_location="cpu")
    stored = state.get("model_config")
    if not isinstance(stored, Mapping) or "model" not in state:
        raise ValueError(
            f"{file} is not a model checkpoint of scripts/train.py (no model_config / model weights)"
        )
    bad = sorted(set(compute) - set(COMPUTE_FIELDS))
    if bad:
        raise ValueError(
            f"model.{bad[0]} cannot be changed for a trained checkpoint; only {list(COMPUTE_FIELDS)} can"
        )
    config = apply_overrides(
        ModelConfig(**dict(stored)), **{k: v for k, v in compute.items() if v is not None}
    )
    model = SparseTransformer(config)
    check_compatible(state, file, model, model_config=None)  # weight names and shapes
    model.load_state_dict(state["model"])
    return Trained(model.to(device).eval(), file, state.get("step"), stored_run_config(state, file))


def run_data(trained: Trained, overrides: Mapping[str, Any] | None = None):
    """The data set the checkpoint was trained on (:class:`~zoo.data.DataBundle`), with ``overrides``."""
    from omegaconf import OmegaConf

    from .data import build_data

    config = trained.run_config or {}
    if not isinstance(config.get("data"), Mapping):
        raise ValueError(
            f"{trained.path} holds no run config with a data section (and there is no .hydra/config.yaml "
            "beside it): cannot tell which data set to take prompts from"
        )
    options = OmegaConf.to_container(
        OmegaConf.merge(OmegaConf.create(dict(config["data"])), dict(overrides or {})), resolve=True
    )
    assert isinstance(options, dict)
    data = build_data(str(options.pop("name")), **options)
    cfg = trained.model.config
    if data.seq_len != cfg.seq_len:
        raise ValueError(
            f"the data set {data.name!r} gives sequences of {data.seq_len} bytes but the model was trained on "
            f"seq_len={cfg.seq_len}; do not override data.seq_len for this checkpoint"
        )
    return data
