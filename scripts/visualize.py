"""Pictures of a trained model (Child et al. 2019: Figure 2 attention, §5.3 embeddings) from a checkpoint.

    python scripts/visualize.py checkpoint=outputs/DATE/TIME                  # every picture into pictures/
    python scripts/visualize.py checkpoint=PATH what=attention queries=[406,721] out=att
    python scripts/visualize.py checkpoint=PATH what=[distributions,bits] split=test example=3
    python scripts/visualize.py checkpoint=PATH backend=dense device=cuda

A Hydra app over ``configs/visualize.yaml`` (every key documented there): the model is rebuilt from
the checkpoint (the run's model and data configs are stored in it by ``scripts/train.py``), one
example of ``split`` is read, and :func:`zoo.visualize.write_pictures` draws ``what``:

* ``attention`` - ``attention_query{Q}.png`` (layer x head grid for query position Q) and
  ``attention_head{H}.png`` (head H across the queries), from the model's own forward pass;
* ``embeddings`` - ``embedding_tables.png`` and, for images, ``embedding_similarity.png``;
* ``distributions`` - ``distributions.png``; ``bits`` - ``bits_map.png``.

It prints the files it wrote. ``record=NAME`` also writes ``docs/results/NAME.json`` (the numbers the
docs gallery shows, :mod:`doc_results`). A mistake (no checkpoint, a bad kind or position) prints one
line starting with ``error:`` and exits with status 2 (:func:`zoo.cli.guard`).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
import doc_results  # noqa: E402
import evaluate as ev  # noqa: E402  (the checkpoint-loading helpers of scripts/evaluate.py)

from zoo.checkpoint import check_library_checkpoint, load_checkpoint  # noqa: E402
from zoo.cli import guard  # noqa: E402
from zoo.data import build_data  # noqa: E402
from zoo.errors import user_input  # noqa: E402
from zoo.registry import apply_overrides  # noqa: E402
from zoo.train import resolve_device  # noqa: E402
from zoo.visualize import parse_kinds, write_pictures  # noqa: E402
from zoo.visualize.layout import check_positions  # noqa: E402

log = logging.getLogger("visualize")
SPLITS = ("train", "val", "test")


def load_trained(checkpoint: str, backend: str | None = None, data_root: str | None = None) -> dict[str, Any]:
    """``{"model", "data", "state", "path", "config"}`` of a checkpoint file or run folder (on CPU)."""
    path = ev.find_checkpoint(checkpoint)
    state = load_checkpoint(path, map_location="cpu")  # weights_only: opening a file runs no code
    check_library_checkpoint(state, path)
    config = ev.run_config(state, path)
    overrides = {"root": data_root} if data_root is not None else {}
    data_options = ev.evaluation_data_options(dict(config.get("data") or {}), overrides, path)
    if "name" not in data_options:
        raise ev.EvaluationError(f"the run config of {path} has no data.name")
    data = build_data(str(data_options.pop("name")), **data_options)
    model_config = ev.model_config(state, config, data, path)
    if backend is not None:
        model_config = apply_overrides(model_config, attention_backend=backend, attention_backend_options={})
    ev.check_shapes(model_config, data, path)
    model = ev.load_model(state, model_config, path)
    return {"model": model, "data": data, "state": state, "path": path, "config": config}


def _ints(name: str, value: Any) -> list[int] | None:
    if value is None:
        return None
    items = list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]
    if not items or any(isinstance(v, bool) or not isinstance(v, int) for v in items):
        raise ValueError(f"{name} must be a list of positions such as {name}=[406,721], got {value!r}")
    return [int(v) for v in items]


def make_pictures(cfg: DictConfig) -> dict[str, Any]:
    """Everything the script does, for a composed ``configs/visualize.yaml``; returns what it wrote.

    Mistakes in the config, and in loading what it names, are user errors (:func:`zoo.errors.user_input`):
    the script prints them as one ``error:`` line.
    """
    with user_input():
        if cfg.checkpoint in (None, ""):
            raise ValueError("checkpoint=PATH is required (a checkpoint file or a run folder)")
        what = OmegaConf.to_container(cfg.what) if isinstance(cfg.what, ListConfig) else str(cfg.what)
        kinds = parse_kinds(what)  # before the (slow) loading: a typo fails at once
        if cfg.split not in SPLITS:
            raise ValueError(f"unknown split {cfg.split!r}; the splits are {list(SPLITS)}")
        queries, positions = _ints("queries", cfg.queries), _ints("positions", cfg.positions)
        loaded = load_trained(str(cfg.checkpoint), cfg.backend, cfg.data_root)
        dataset = getattr(loaded["data"], cfg.split)
        index = cfg.example
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(dataset):
            raise ValueError(
                f"example={index!r} is not an index of the {cfg.split} split: it has {len(dataset)} examples"
            )
        for name, values in (("query", queries), ("position", positions)):
            check_positions(name, values or [], loaded["data"].seq_len)
        device = resolve_device(str(cfg.device))
    model = loaded["model"].to(device)
    info = write_pictures(model, dataset[index], cfg.out, kinds, queries, positions, dpi=int(cfg.dpi))
    path, state = loaded["path"], loaded["state"]
    info.update(
        checkpoint=str(path),
        step=state.get("step"),
        data=loaded["data"].name,
        model=(loaded["config"].get("model") or {}).get("name"),
        pattern=model.component.name,
        backend=model.config.attention_backend,
        split=cfg.split,
        example=index,
    )
    metrics = path.parent.parent / "metrics.json"  # run/checkpoints/x.pt: the run's final numbers
    if metrics.is_file():
        info["run_test_bpd"] = json.loads(metrics.read_text()).get("test_bpd")
    if cfg.record:
        data = {k: v for k, v in info.items() if k != "files"}
        data["checkpoint"] = path.name
        data["files"] = sorted(info["files"])
        info["record"] = doc_results.save(str(cfg.record), data, renderer="visualize:markdown")
    return info


def markdown(data: dict[str, Any]) -> str:
    """The gallery's numbers (``record=NAME``): what was drawn, from which checkpoint."""
    rows = [
        ("checkpoint", f"`{data['checkpoint']}` after {data['step']} steps (model `{data['model']}`, "
                       f"{data['pattern']} attention, backend `{data['backend']}`)"),
        ("example", f"{data['split']} example {data['example']} of `{data['data']}`"),
    ]  # fmt: skip
    if data.get("example_bits_per_dim") is not None:
        rows.append(("bits/dim of this example", f"{data['example_bits_per_dim']:.3f}"))
    if data.get("run_test_bpd") is not None:
        rows.append(("test bits/dim of the run", f"{data['run_test_bpd']:.3f}"))
    if data.get("queries"):
        rows.append(("attention queries", ", ".join(str(q) for q in data["queries"])))
    if data.get("max_output_error") is not None:
        rows.append(("max difference of the drawn weights x values from the backend's output",
                     f"{data['max_output_error']:.1e}"))  # fmt: skip
    return "\n".join(["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


@hydra.main(version_base="1.3", config_path="../configs", config_name="visualize")
@guard  # a user's mistake: one `error:` line, exit status 2; a bug: its traceback
def main(cfg: DictConfig) -> None:
    torch.set_grad_enabled(False)
    info = make_pictures(cfg)
    for path in info["files"].values():
        print(path)
    if "example_bits_per_dim" in info:
        print(f"{info['split']} example {info['example']}: {info['example_bits_per_dim']:.4f} bits/dim")
    if "record" in info:
        print(f"recorded {info['record']}")


if __name__ == "__main__":
    main()
