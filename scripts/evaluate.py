"""Bits per dim of a trained checkpoint on a split (Child et al. 2019, §7: Tables 2-3 report test bits per dim).

    python scripts/evaluate.py checkpoint=outputs/DATE/TIME/checkpoints/step_00001200.pt split=test
    python scripts/evaluate.py checkpoint=outputs/DATE/TIME split=val,test       # newest checkpoint of a run
    python scripts/evaluate.py checkpoint=PATH split=test examples=1000 batch_size=16 device=cuda
    python scripts/evaluate.py checkpoint=PATH data.root=/datasets/cifar10        # the data moved
    python scripts/evaluate.py checkpoint=PATH model.attention_backend=blocksparse output=eval.json
    python scripts/evaluate.py -m checkpoint=runs/a,runs/b/checkpoints/best.pt    # one job per checkpoint
    python scripts/evaluate.py --help                                             # the config and its keys

A Hydra app on ``configs/evaluate.yaml`` (Hydra's override syntax, ``-m`` sweeps; no run folder is
made, a sweep writes each job's ``evaluation.json`` under ``hydra.sweep.dir``):

* ``checkpoint`` (required): a checkpoint file written by :meth:`zoo.train.Trainer.save_checkpoint`, or a
  run folder / its ``checkpoints/`` folder (then the newest checkpoint in it);
* ``split``: ``train``, ``val`` or ``test`` (default), or several separated by commas (one job evaluates
  them all, also under ``-m``);
* ``examples``: evaluate the first N sequences of each split only (default: the whole split);
* ``batch_size``: sequences per forward pass (default: the run's ``trainer.eval_batch_size``);
* ``device``: ``auto`` (default: CUDA when available), ``cpu``, ``cuda``, ``cuda:1`` ...;
* ``precision``: ``fp32``, ``bf16`` or ``fp16`` autocast (default: the run's ``trainer.precision``);
* ``data.<key>``: overrides of the run's data config (``data.root``, ``data.limit_test`` ...);
* ``model.<key>``: overrides of fields that do not change the weights (``model.attention_backend``,
  ``model.checkpoint_every``); attention is computed by the ``auto`` backend (the fastest exact one
  for the device) whatever the run trained with, unless ``model.attention_backend=NAME`` says
  otherwise (``dense``: the masked reference);
* ``output``: also write the rows as JSON to this file.

The model is rebuilt from the model config stored in the checkpoint and the data set from the run's
config (stored in the checkpoint by ``scripts/train.py``, else read from the run folder's
``.hydra/config.yaml``). The number is computed by :meth:`zoo.train.Trainer.evaluate`, the code the
trainer uses for its own val/test numbers, so both agree exactly for the same batch size. A user
mistake (a bad value, a missing file) prints one line ``error: ...`` and exits with status 2
(:func:`report_user_errors`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from torch import nn

from zoo.checkpoint import (
    check_compatible,
    check_library_checkpoint,
    load_checkpoint,
    stored_model_config,
)
from zoo.cli import EXIT_USER_ERROR, full_error, report
from zoo.data import DataBundle, build_data
from zoo.ema import eval_weights
from zoo.errors import UserError, is_user_error, warn_once
from zoo.model import ModelConfig, SparseTransformer
from zoo.pretrained import find_checkpoint, stored_run_config
from zoo.registry import apply_overrides, resolve_config
from zoo.train import Trainer, TrainerConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"  # absolute: also when imported under another name
SPLITS = ("train", "val", "test")
KEYS = ("checkpoint", "split", "examples", "batch_size", "device", "precision", "data", "model", "output")
# ModelConfig fields that select how the same weights are computed; anything else would change the model.
MODEL_OVERRIDABLE = ("attention_backend", "attention_backend_options", "checkpoint_every")
# The backend evaluation uses unless model.attention_backend is given: the same numbers, computed fast.
EVAL_BACKEND = "auto"
# Trainer options that matter to evaluation; the others of the stored trainer config are ignored.
# (not `threads`: the machine that evaluates is not necessarily the one that trained)
TRAINER_KEYS = ("batch_size", "eval_batch_size", "num_workers", "precision")


log = logging.getLogger("evaluate")


class EvaluationError(UserError):
    """Bad arguments or an unusable checkpoint; the message says which and what is valid."""


# --------------------------------------------------------------------------------- arguments
# options of Hydra's command line that take the next argument as their value
_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn"}
_VALUE_FLAGS |= {"--config-dir", "-cd", "--experimental-rerun"}
_INFO_CHOICES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def hydra_overrides(argv: Sequence[str]) -> list[str]:
    """Check the ``key=value`` arguments and adapt them to ``configs/evaluate.yaml``; flags pass unchanged.

    Unknown keys, arguments without ``=`` and ``data=...`` / ``model=...`` without a dotted key raise
    :class:`EvaluationError` naming them and the valid keys. ``data.KEY=V`` and ``model.KEY=V`` become
    ``++data.KEY=V`` (they add to the run's config, whatever its keys), and ``split=val,test`` becomes
    the list ``split=[val,test]`` (several splits in one job, not a sweep).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    out: list[str] = []
    takes_value = False
    for arg in argv:
        if takes_value or arg.startswith("-"):  # a flag (-m, --help, --cfg job ...) or a flag's value
            out.append(arg)
            takes_value = not takes_value and arg in _VALUE_FLAGS
            continue
        if out and out[-1] in ("--info", "-i") and arg in _INFO_CHOICES:
            out.append(arg)
            continue
        if "=" not in arg or arg.startswith("="):
            raise EvaluationError(f"arguments must be key=value, got {[arg]}; valid keys are {list(KEYS)}")
        try:
            (override,) = parser.parse_overrides([arg])
        except OverrideParseException as err:
            raise EvaluationError(f"could not parse the argument {arg!r}: {err}") from err
        key = override.key_or_group
        top = key.split(".")[0]
        if top == "hydra" or arg.startswith(("+", "~")):
            out.append(arg)
        elif top not in KEYS:
            raise EvaluationError(f"unknown argument(s) {[top]}; valid keys are {list(KEYS)}")
        elif key in ("data", "model"):
            raise EvaluationError(f"{key} takes dotted overrides such as {key}.root=..., got {arg}")
        elif top in ("data", "model"):
            out.append("++" + arg)
        elif key == "split" and override.is_sweep_override():
            out.append("split=[" + arg.partition("=")[2] + "]")
        else:
            out.append(arg)
    return out


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
def run_config(state: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The run's resolved train config: stored in the checkpoint, else the run folder's ``.hydra/config.yaml``."""
    stored = stored_run_config(state, path)
    if stored is not None:
        return stored
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
    extra.setdefault("attention_backend", EVAL_BACKEND)
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
        "attention": model_cfg.attention.get("name"),
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
        f"{result['checkpoint']} (step {result['step']}, model {result['model']}, attention {result.get('attention')}, "
        f"{result['parameters']:,} parameters, data {result['data']}, {result['device']}, "
        f"batch {result['batch_size']})"
    )
    return "\n".join([title, fmt(header), fmt(["-" * w for w in widths]), *(fmt(line) for line in lines)])


def evaluate_config(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate as the composed ``configs/evaluate.yaml`` says; the result of :func:`evaluate_checkpoint`."""
    unknown = sorted(set(cfg) - set(KEYS))
    if unknown:
        raise EvaluationError(f"unknown argument(s) {unknown}; valid keys are {list(KEYS)}")
    if cfg.get("checkpoint") in (None, ""):
        raise EvaluationError("checkpoint=PATH is required (a checkpoint file or a run folder)")
    split = cfg.get("split", "test")
    return evaluate_checkpoint(
        str(cfg.checkpoint),
        splits=parse_splits(list(split) if OmegaConf.is_list(split) else split),
        examples=cfg.get("examples"),
        batch_size=cfg.get("batch_size"),
        device=str(cfg.get("device", "auto")),
        precision=cfg.get("precision"),
        data_overrides=OmegaConf.to_container(cfg.data) if cfg.get("data") else None,  # type: ignore[arg-type]
        model_overrides=OmegaConf.to_container(cfg.model) if cfg.get("model") else None,  # type: ignore[arg-type]
    )


def write_result(result: Mapping[str, Any], path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return out


def evaluation_job(cfg: DictConfig) -> None:
    """One evaluation job: print the table, write ``output`` (and, in a sweep, the job's ``evaluation.json``)."""
    result = evaluate_config(cfg)
    print(format_table(result), flush=True)
    if cfg.get("output"):
        write_result(result, cfg.output)
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        print(f"wrote {write_result(result, Path(hc.runtime.output_dir) / 'evaluation.json')}")


_SHOW_TRACEBACKS = False  # ZOO_FULL_ERROR / HYDRA_FULL_ERROR as the user set them (main() sets Hydra's own)


@hydra.main(version_base="1.3", config_path=str(CONFIGS), config_name="evaluate")
def hydra_app(cfg: DictConfig) -> None:
    """The Hydra task: one job; a user mistake ends it (and a sweep) with one ``error:`` line, status 2."""
    status = report_user_errors(lambda: evaluation_job(cfg), full_error=_SHOW_TRACEBACKS)
    if status:
        sys.exit(status)  # inside the job: Hydra adds no "Error executing job" line to the message


# user mistakes besides zoo.errors' user errors: one line `error: ...`, exit status 2, no traceback
USER_ERRORS = (EvaluationError, FileNotFoundError, RuntimeError, ValueError, TypeError, HydraException)


def report_user_errors(fn: Callable[[], Any], full_error: bool = False) -> int:
    """Run ``fn``; a user mistake (:func:`zoo.errors.is_user_error` or :data:`USER_ERRORS`, Hydra's composition
    errors included) prints one line ``error: MESSAGE`` to stderr (:func:`zoo.cli.report`) and gives
    :data:`zoo.cli.EXIT_USER_ERROR`; anything else, or any error with ``full_error``, propagates with its
    traceback; 0 on success."""
    try:
        fn()
    except Exception as err:
        if full_error or not (is_user_error(err) or isinstance(err, USER_ERRORS)):
            raise
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        lines = [line for line in lines if not line.startswith(("full_key:", "object_type=", "reference_type="))]
        report(UserError(" ".join(lines) or type(err).__name__))  # Hydra's messages span several lines
        return EXIT_USER_ERROR
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (``argv`` defaults to ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    global _SHOW_TRACEBACKS
    _SHOW_TRACEBACKS = show_tracebacks = full_error()  # before launch() sets HYDRA_FULL_ERROR itself

    def launch() -> None:
        overrides = hydra_overrides(argv)
        saved_argv, saved_env = sys.argv, os.environ.get("HYDRA_FULL_ERROR")
        sys.argv = [str(Path(__file__)), *overrides]
        os.environ["HYDRA_FULL_ERROR"] = "1"  # errors reach report_user_errors instead of Hydra's printer
        GlobalHydra.instance().clear()
        try:
            hydra_app()
        finally:
            sys.argv = saved_argv
            if saved_env is None:
                os.environ.pop("HYDRA_FULL_ERROR", None)
            else:
                os.environ["HYDRA_FULL_ERROR"] = saved_env
            GlobalHydra.instance().clear()
            HydraConfig.instance().cfg = None  # no stale job config left in this process

    try:
        return report_user_errors(launch, full_error=show_tracebacks)
    except SystemExit as exit_:  # --help, --cfg: Hydra exits after printing
        return exit_.code if isinstance(exit_.code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
