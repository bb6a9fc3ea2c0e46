"""Bits per dim of a trained checkpoint on a split (Child et al. 2019, §7: Tables 2-3 report test bits per dim).

    python scripts/evaluate.py checkpoint=outputs/DATE/TIME/checkpoints/step_00001200.pt split=test
    python scripts/evaluate.py checkpoint=outputs/DATE/TIME split=val,test       # newest checkpoint of a run
    python scripts/evaluate.py checkpoint=PATH split=test examples=1000 batch_size=16 device=cuda
    python scripts/evaluate.py checkpoint=PATH data.root=/datasets/cifar10        # the data moved
    python scripts/evaluate.py checkpoint=PATH model.attention_backend=blocksparse output=eval.json

Arguments are ``key=value`` pairs (Hydra's override syntax, parsed by OmegaConf; no run folder is made):

* ``checkpoint`` (required): a checkpoint file written by :meth:`zoo.train.Trainer.save_checkpoint`, or a
  run folder / its ``checkpoints/`` folder (then the newest checkpoint in it);
* ``split``: ``train``, ``val`` or ``test`` (default), or several separated by commas;
* ``examples``: evaluate the first N sequences of each split only (default: the whole split);
* ``batch_size``: sequences per forward pass (default: the run's ``trainer.eval_batch_size``);
* ``device``: ``auto`` (default: CUDA when available), ``cpu``, ``cuda``, ``cuda:1`` ...;
* ``precision``: ``fp32``, ``bf16`` or ``fp16`` autocast (default: the run's ``trainer.precision``);
* ``data.<key>``: overrides of the run's data config (``data.root``, ``data.limit_test`` ...);
* ``model.<key>``: overrides of fields that do not change the weights (``model.attention_backend``,
  ``model.checkpoint_every``);
* ``output``: also write the rows as JSON to this file.

The model is rebuilt from the model config stored in the checkpoint and the data set from the run's
config (stored in the checkpoint by ``scripts/train.py``, else read from the run folder's
``.hydra/config.yaml``). The number is computed by :meth:`zoo.train.Trainer.evaluate`, the code the
trainer uses for its own val/test numbers, so both agree exactly for the same batch size.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from zoo.checkpoint import (
    BEST_FILE,
    check_compatible,
    check_library_checkpoint,
    load_checkpoint,
    step_checkpoints,
    stored_model_config,
)
from zoo.data import DataBundle, build_data
from zoo.ema import eval_weights
from zoo.errors import UserError, warn_once
from zoo.model import ModelConfig, SparseTransformer
from zoo.registry import apply_overrides, resolve_config
from zoo.train import Trainer, TrainerConfig

SPLITS = ("train", "val", "test")
KEYS = ("checkpoint", "split", "examples", "batch_size", "device", "precision", "data", "model", "output")
# ModelConfig fields that select how the same weights are computed; anything else would change the model.
MODEL_OVERRIDABLE = ("attention_backend", "attention_backend_options", "checkpoint_every")
# Trainer options that matter to evaluation; the others of the stored trainer config are ignored.
# (not `threads`: the machine that evaluates is not necessarily the one that trained)
TRAINER_KEYS = ("batch_size", "eval_batch_size", "num_workers", "precision")


log = logging.getLogger("evaluate")


class EvaluationError(UserError):
    """Bad arguments or an unusable checkpoint; the message says which and what is valid."""


# --------------------------------------------------------------------------------- arguments
def parse_args(argv: Sequence[str]) -> DictConfig:
    """``key=value`` arguments -> a config; unknown keys and missing ``checkpoint`` raise EvaluationError."""
    bad = [a for a in argv if "=" not in a or a.startswith("=")]
    if bad:
        raise EvaluationError(f"arguments must be key=value, got {bad}; valid keys are {list(KEYS)}")
    try:
        args = OmegaConf.from_dotlist(list(argv))
    except Exception as err:  # the grammar error of OmegaConf, reworded
        raise EvaluationError(f"could not parse the arguments {list(argv)}: {err}") from err
    unknown = sorted(set(args) - set(KEYS))
    if unknown:
        raise EvaluationError(f"unknown argument(s) {unknown}; valid keys are {list(KEYS)}")
    if args.get("checkpoint") in (None, ""):
        raise EvaluationError("checkpoint=PATH is required (a checkpoint file or a run folder)")
    for key in ("data", "model"):
        if key in args and not isinstance(args[key], DictConfig):
            raise EvaluationError(
                f"{key} takes dotted overrides such as {key}.root=..., got {key}={args[key]!r}"
            )
    return args


def parse_splits(split: Any) -> list[str]:
    """``"test"``, ``"val,test"`` or a list -> split names, each checked against :data:`SPLITS`."""
    names = [s.strip() for s in split.split(",")] if isinstance(split, str) else [str(s) for s in split]
    if not names or any(n not in SPLITS for n in names):
        raise EvaluationError(
            f"unknown split {split!r}; the splits are {list(SPLITS)} (comma-separated for several)"
        )
    return names


def positive_or_none(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise EvaluationError(f"{name} must be an integer >= 1, got {value!r}")
    return value


# --------------------------------------------------------------------------------- checkpoint
def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint file as given, or for a run folder (or its ``checkpoints/``) the newest ``step_N.pt``.

    A folder without step checkpoints falls back to its ``best.pt``; temporary files of an interrupted
    write are never chosen (:func:`zoo.checkpoint.step_checkpoints` matches ``step_N.pt`` only).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.is_file():
        return path
    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    steps = step_checkpoints(folder)
    if steps:
        return steps[-1][1]
    if (folder / BEST_FILE).is_file():
        return folder / BEST_FILE
    raise FileNotFoundError(f"no checkpoint (step_N.pt or {BEST_FILE}) in {folder}")


def run_config(state: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The run's resolved train config: stored in the checkpoint, else the run folder's ``.hydra/config.yaml``."""
    if isinstance(state.get("config"), Mapping):
        return dict(state["config"])
    for folder in (path.parent.parent, path.parent):  # run/checkpoints/x.pt, or x.pt beside .hydra/
        hydra_config = folder / ".hydra" / "config.yaml"
        if hydra_config.is_file():
            return OmegaConf.to_container(OmegaConf.load(hydra_config), resolve=True)  # type: ignore[return-value]
    raise EvaluationError(
        f"checkpoint {path} holds no run config and there is no .hydra/config.yaml in its run folder "
        f"({path.parent.parent}); cannot tell which data set it was trained on"
    )


def evaluation_data_options(stored: Mapping[str, Any], overrides: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The data options to evaluate on: the run's, updated by ``overrides``; with ``data.name=OTHER``,
    the other data set's defaults updated by ``overrides`` (the run's options belong to its own data set),
    and one warning naming both data sets."""
    other = overrides.get("name")
    base: Mapping[str, Any] = stored
    if other is not None and other != stored.get("name"):
        warn_once(
            log,
            "evaluating %s, trained on the data set %r, on %r: its options %s are not carried over",
            path,
            stored.get("name"),
            other,
            sorted(k for k in stored if k != "name"),
        )
        base = {}
    options = OmegaConf.to_container(OmegaConf.merge(OmegaConf.create(dict(base)), dict(overrides)), resolve=True)
    assert isinstance(options, dict)
    return options  # type: ignore[return-value]


def model_config(
    state: Mapping[str, Any], config: Mapping[str, Any], data: DataBundle, path: Path
) -> ModelConfig:
    """The checkpoint's :class:`ModelConfig` (stored by the Trainer), else the run config's model node."""
    stored = stored_model_config(state, path)  # another version's config: missing keys take defaults
    if stored is not None:
        return ModelConfig(**stored)
    if "model" not in config:
        raise EvaluationError(f"checkpoint {path} holds neither a model config nor a run config with 'model'")
    return resolve_config(config["model"], seq_len=data.seq_len, data_shape=list(data.data_shape))


def load_model(state: Mapping[str, Any], config: ModelConfig, path: Path) -> nn.Module:
    """The model of ``config`` with the checkpoint's weights; a mismatch names every difference."""
    if "model" not in state:
        raise EvaluationError(
            f"checkpoint {path} holds no model weights ('model' key); keys: {sorted(state)}"
        )
    model = SparseTransformer(config)
    check_compatible(state, path, model, model_config=None)  # weight names and shapes
    model.load_state_dict(eval_weights(state))  # the weight average when the run kept one (zoo.ema)
    return model


def check_shapes(config: ModelConfig, data: DataBundle, path: Path) -> None:
    """The data must have the sequence length (and, for data embeddings, the shape) the model was trained on."""
    if data.seq_len != config.seq_len or (
        config.embedding == "data" and list(data.data_shape) != list(config.data_shape)
    ):
        raise EvaluationError(
            f"the data set {data.name!r} gives sequences of {data.seq_len} bytes shaped {list(data.data_shape)}, "
            f"but the model in {path} was trained on seq_len={config.seq_len}, data_shape={list(config.data_shape)}; "
            "do not override data.seq_len / data.order for this checkpoint"
        )


# --------------------------------------------------------------------------------- evaluation
def evaluate_checkpoint(
    checkpoint: str | Path,
    splits: str | Sequence[str] = "test",
    examples: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    precision: str | None = None,
    data_overrides: Mapping[str, Any] | None = None,
    model_overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Bits per dim of ``checkpoint`` on each of ``splits`` (a name, ``"val,test"`` or a list).

    Returns ``{"checkpoint", "step", "data", "model", "parameters", "device", "batch_size", "rows"}``.

    Each row holds ``split``, ``examples`` (sequences evaluated), ``of`` (sequences in the split), ``dims``
    (bytes scored: fewer than examples x seq_len for enwik8 with ``eval_min_context``), ``bits_per_dim``
    and ``time_s``. The evaluation itself is :meth:`zoo.train.Trainer.evaluate`.
    """
    splits = parse_splits(splits)
    examples = positive_or_none("examples", examples)
    batch_size = positive_or_none("batch_size", batch_size)
    path = find_checkpoint(checkpoint)
    state = load_checkpoint(path, map_location="cpu")  # weights_only: opening a file runs no code
    check_library_checkpoint(state, path)  # e.g. a torchvision state dict: "not a checkpoint of this library"
    config = run_config(state, path)

    data_options = evaluation_data_options(dict(config.get("data") or {}), dict(data_overrides or {}), path)
    if "name" not in data_options:
        raise EvaluationError(f"the run config of {path} has no data.name; pass data.name=... ")
    data = build_data(str(data_options.pop("name")), **data_options)

    model_cfg = model_config(state, config, data, path)
    extra = dict(model_overrides or {})
    bad = sorted(set(extra) - set(MODEL_OVERRIDABLE))
    if bad:
        raise EvaluationError(
            f"model.{bad[0]} cannot be changed for a trained checkpoint; only {list(MODEL_OVERRIDABLE)} can"
        )
    model_cfg = apply_overrides(model_cfg, **extra)
    check_shapes(model_cfg, data, path)
    model = load_model(state, model_cfg, path)

    stored = dict(state.get("trainer_config") or {})
    fields = {f.name for f in dataclasses.fields(TrainerConfig)}
    options = {k: v for k, v in stored.items() if k in TRAINER_KEYS and k in fields}
    if batch_size is not None:
        options["eval_batch_size"] = batch_size
    options["device"] = device
    if precision is not None:
        options["precision"] = precision
    options["progress"] = False
    trainer = Trainer(model, data, TrainerConfig(**options))

    rows = []
    for split in splits:
        dataset = trainer.split(split)
        n = len(dataset)
        count = n if examples is None else min(n, examples)
        scored_from = getattr(dataset, "scored_from", None)  # overlapping windows score their tails only
        dims = sum(data.seq_len - (scored_from(k) if scored_from else 0) for k in range(count))
        tic = time.perf_counter()
        bpd = trainer.evaluate(split, examples)
        if trainer.device.type == "cuda":
            torch.cuda.synchronize(trainer.device)
        rows.append(
            {
                "split": split,
                "examples": count,
                "of": n,
                "dims": dims,
                "bits_per_dim": bpd,
                "time_s": time.perf_counter() - tic,
            }
        )
    return {
        "checkpoint": str(path),
        "step": state.get("step"),
        "data": data.name,
        "model": (config.get("model") or {}).get("name"),
        "parameters": sum(p.numel() for p in model.parameters()),
        "device": str(trainer.device),
        "batch_size": trainer.config.eval_batch_size or trainer.config.batch_size,
        "rows": rows,
    }


def format_table(result: Mapping[str, Any]) -> str:
    """The rows as an aligned text table (split, examples, bits/dim, time)."""
    header = ("split", "examples", "bits/dim", "time (s)")
    lines = [
        (r["split"], f"{r['examples']:,} of {r['of']:,}", f"{r['bits_per_dim']:.4f}", f"{r['time_s']:.2f}")
        for r in result["rows"]
    ]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    title = (
        f"{result['checkpoint']} (step {result['step']}, model {result['model']}, "
        f"{result['parameters']:,} parameters, data {result['data']}, {result['device']}, "
        f"batch {result['batch_size']})"
    )
    return "\n".join([title, fmt(header), fmt(["-" * w for w in widths]), *(fmt(line) for line in lines)])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help", "help") for a in argv):
        print(__doc__)
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        args = parse_args(argv)
        result = evaluate_checkpoint(
            args.checkpoint,
            splits=parse_splits(args.get("split", "test")),
            examples=args.get("examples"),
            batch_size=args.get("batch_size"),
            device=str(args.get("device", "auto")),
            precision=args.get("precision"),
            data_overrides=OmegaConf.to_container(args.data) if "data" in args else None,  # type: ignore[arg-type]
            model_overrides=OmegaConf.to_container(args.model) if "model" in args else None,  # type: ignore[arg-type]
        )
    except (EvaluationError, FileNotFoundError, RuntimeError, ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(result))
    if args.get("output"):
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
