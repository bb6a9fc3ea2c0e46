"""The registry's variants in timm's model registry, fed from :mod:`zoo.registry` (the one list of record).

Importing :mod:`zoo.registry` registers every variant ``NAME`` as ``sparse_transformer_NAME`` with timm
(and every variant registered later, as it is registered)::

    import timm
    import zoo.registry  # noqa: F401  (feeds timm's registry)

    timm.list_models("sparse_transformer*")            # ['sparse_transformer_cifar10_paper', ...]
    model = timm.create_model("sparse_transformer_strided", n_layer=2)      # name + overrides
    model = timm.create_model(
        "sparse_transformer_strided", pretrained=True,
        pretrained_cfg_overlay={"file": "runs/x/checkpoints/best.pt"},       # one of our checkpoints
    )

``timm.create_model(name, **overrides)`` builds exactly ``zoo.registry.build(NAME, **overrides)``
(``num_classes`` is the vocabulary size). No weights are published: ``pretrained=True`` needs a
``file`` (a checkpoint written by ``scripts/train.py``, or a plain state dict) or a ``state_dict`` in
``pretrained_cfg_overlay``; a checkpoint's averaged weights (``model_ema``, :mod:`zoo.ema`) are loaded
when it has them. A checkpoint of another shape fails naming the config keys to override.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from torch import nn

from .timm_import import timm

PREFIX = "sparse_transformer_"
# keys that change how the same weights are computed, never their shapes
_COMPUTE_ONLY = ("attention_backend", "attention_backend_options", "checkpoint_every", "dropout")

#: timm reads the pretrained configs of this module's entrypoints from ``default_cfgs`` when they register
default_cfgs: dict[str, dict[str, Any]] = {}


def timm_name(name: str) -> str:
    """The timm name of registry variant ``name``: ``sparse_transformer_<name>``."""
    return PREFIX + name


def _weights(source: Any, where: str) -> tuple[Mapping[str, Any], Mapping[str, Any] | None]:
    """``(weights, model_config or None)`` from a checkpoint dict or a plain state dict."""
    from .ema import eval_weights

    if isinstance(source, Mapping) and "model" in source and isinstance(source["model"], Mapping):
        return eval_weights(source), source.get("model_config")  # a checkpoint of this library
    if isinstance(source, Mapping) and isinstance(source.get("state_dict"), Mapping):
        return source["state_dict"], None
    if isinstance(source, Mapping):
        return source, None
    raise ValueError(f"{where} holds a {type(source).__name__}, not a checkpoint or a state dict")


def load_pretrained(model: nn.Module, pretrained_cfg: Mapping[str, Any]) -> None:
    """Load the weights that ``pretrained_cfg`` names (``file`` or ``state_dict``) into ``model``.

    Raises ``ValueError`` naming the file and the differing config keys when the checkpoint was trained
    with another shape (build with those keys as overrides), and when no source is given.
    """
    from .checkpoint import load_checkpoint

    arch = pretrained_cfg.get("architecture") or "this model"
    if pretrained_cfg.get("state_dict") is not None:
        where, source = "pretrained_cfg_overlay['state_dict']", pretrained_cfg["state_dict"]
    elif pretrained_cfg.get("file"):
        where = os.fspath(pretrained_cfg["file"])
        source = load_checkpoint(where, map_location="cpu")
    else:
        raise ValueError(
            f"no weights are published for {arch}: pass pretrained_cfg_overlay={{'file': PATH}} with a "
            "checkpoint written by scripts/train.py (e.g. runs/NAME/checkpoints/best.pt), or pretrained=False"
        )
    weights, saved_config = _weights(source, where)
    config = getattr(model, "config", None)
    if saved_config is not None and config is not None:
        current = config.to_dict()
        differ = {
            k: saved_config[k]
            for k in saved_config
            if k not in _COMPUTE_ONLY and k in current and saved_config[k] != current[k]
        }
        if differ:
            overrides = ", ".join(f"{k}={v!r}" for k, v in differ.items())
            raise ValueError(
                f"{where} was trained with another {arch}: build it with the overrides {overrides} "
                f"(timm.create_model({arch!r}, pretrained=True, ..., {overrides}))"
            )
    try:
        model.load_state_dict(dict(weights))
    except RuntimeError as err:
        raise ValueError(f"the weights in {where} do not fit {arch}: {err}") from err


def _entrypoint(name: str):
    def build_variant(num_classes: int | None = None, **overrides: Any) -> nn.Module:
        from .registry import build

        if num_classes is not None:
            overrides.setdefault("vocab_size", num_classes)
        return build(name, **overrides)

    def entry(
        pretrained: bool = False,
        pretrained_cfg: Any = None,
        pretrained_cfg_overlay: Mapping[str, Any] | None = None,
        cache_dir: Any = None,
        **overrides: Any,
    ) -> nn.Module:
        model = timm("models").build_model_with_cfg(
            build_variant,
            timm_name(name),
            pretrained=False,  # our checkpoints are loaded below, with our checks
            pretrained_cfg=pretrained_cfg,
            pretrained_cfg_overlay=pretrained_cfg_overlay,
            cache_dir=cache_dir,
            **overrides,
        )
        if pretrained:
            load_pretrained(model, model.pretrained_cfg)
        return model

    entry.__name__ = entry.__qualname__ = timm_name(name)
    entry.__module__ = __name__
    return entry


def register(name: str) -> None:
    """Register registry variant ``name`` with timm as ``sparse_transformer_<name>``."""
    from .registry import _MODELS, get_model_config

    try:
        vocab_size = get_model_config(name).vocab_size
    except Exception:  # a broken variant function says why when it is built, not while registering
        vocab_size = -1  # timm's "do not pass num_classes"
    doc = (_MODELS[name].__doc__ or "").strip()
    default_cfgs[timm_name(name)] = {
        "num_classes": vocab_size,  # logits over bytes
        "input_size": None,  # a byte sequence, not an image tensor
        "mean": None,
        "std": None,
        "description": doc.split("\n")[0] or f"Sparse Transformer variant {name!r}",
        "paper_name": "Generating Long Sequences with Sparse Transformers",
        "paper_ids": "arXiv:1904.10509",
    }
    entry = _entrypoint(name)
    entry.__doc__ = f"timm entrypoint of ``zoo.registry.build({name!r}, **overrides)``.\n\n{doc}"
    globals()[entry.__name__] = entry
    timm("models").register_model(entry)


def register_all() -> list[str]:
    """Register every variant of :mod:`zoo.registry`; returns the timm names."""
    from .registry import list_models

    for name in list_models():
        register(name)
    return [timm_name(n) for n in list_models()]
