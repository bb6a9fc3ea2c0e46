"""Model registry in the style of timm: named variants of the Sparse Transformer (Child et al. 2019).

::

    from zoo.registry import build, list_models, get_model_config
    model = build("strided_half", n_layer=2)                        # name + overrides
    model = build("strided", attention={"name": "fixed", "stride": 28, "c": 4})
    model = build("strided", **{"attention.mode": "interleaved"})   # dotted key into the attention dict
    model = build(cfg.model)                                         # Hydra node: name + fields

A variant is a function decorated with :func:`register_model`, named after the variant and returning
a :class:`~zoo.model.ModelConfig`. It is the one source of truth: ``configs/model/<name>.yaml`` is
generated from it (``python -m zoo.registry --write configs/model``; ``--check`` verifies, and so
does ``tests/test_zoo_registry.py``). Each YAML holds ``name`` plus every field except ``attention``,
which it selects through the pattern group ``configs/model/attention/`` (``model/attention=NAME``):

* a variant whose pattern is a pattern's defaults selects that pattern's YAML (``dense``);
* a variant with its own values (``fixed``: stride 28, c=4) selects a generated *preset* of the group,
  named after the values (``fixed_stride28_c4``: the ``fixed`` YAML plus ``stride: 28``, ``c: 4``),
  so ``model=fixed`` keeps its values and ``model/attention=fixed`` gives the pattern's defaults.

Either way a Hydra override ``model/attention=NAME`` replaces the whole attention node (no keys of
the old pattern survive), in single runs and in ``-m`` sweeps; :func:`check_attention_node` rejects
``model.attention.name=NAME``, which would keep the old pattern's keys, with a message showing the
group syntax. :func:`build` starts from the registered variant and applies the YAML's fields on top.

Override rules (Python API): keys must be :class:`~zoo.model.ModelConfig` fields (else
``ValueError`` naming the key and the valid ones); ``attention=<dict>`` is merged into the variant's
attention config when it names the same pattern (or none) and replaces it when it names another;
``"attention.<key>"`` always merges one key.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import fnmatch
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .model import ModelConfig, SparseTransformer

_MODELS: dict[str, Callable[[], ModelConfig]] = {}

YAML_HEADER = (
    "# Generated from zoo.registry (variant `{name}`) by `python -m zoo.registry --write configs/model`.\n"
    "# Do not edit: change the registry; tests/test_zoo_registry.py checks that this file matches it.\n"
)
PRESET_HEADER = (
    "# Generated from zoo.registry by `python -m zoo.registry --write configs/model`: the pattern of the\n"
    "# variant(s) {variants}, i.e. `{pattern}` ({pattern}.yaml, the pattern's defaults) with the values below.\n"
    "# Do not edit: change the registry; tests/test_zoo_registry.py checks that this file matches it.\n"
)
PATTERN_GROUP = "attention"  # configs/model/attention/: the pattern group of the model configs


def register_model(fn: Callable[[], ModelConfig]) -> Callable[[], ModelConfig]:
    """Register ``fn`` (no arguments, returns a :class:`ModelConfig`) under ``fn.__name__``."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = fn
    if __name__ == "zoo.registry" and "zoo.timm_models" in sys.modules:  # timm's registry mirrors ours
        sys.modules["zoo.timm_models"].register(name)
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of the registered variants matching the glob ``pattern``."""
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def _unknown_model(name: Any) -> ValueError:
    known = list_models()
    hint = difflib.get_close_matches(str(name), known, n=1)
    extra = f" Did you mean {hint[0]!r}?" if hint else ""
    return ValueError(f"unknown model {name!r}; registered models are {known}.{extra}")


def get_model_config(name: str) -> ModelConfig:
    """A fresh :class:`ModelConfig` of the registered variant ``name``."""
    if name not in _MODELS:
        raise _unknown_model(name)
    config = _MODELS[name]()
    if not isinstance(config, ModelConfig):
        raise TypeError(
            f"registered model function {name!r} must return a ModelConfig, got {type(config).__name__}"
        )
    return config


def _plain(value: Any) -> Any:
    """OmegaConf containers -> plain Python; tuples -> lists; mappings -> dicts (recursively)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


_FIELDS = [f.name for f in dataclasses.fields(ModelConfig)]


def _unknown_key(key: str) -> ValueError:
    hint = difflib.get_close_matches(key, _FIELDS, n=1)
    extra = f" Did you mean {hint[0]!r}?" if hint else ""
    return ValueError(f"unknown model config key {key!r}; valid keys are {_FIELDS}.{extra}")


def apply_overrides(config: ModelConfig, **overrides: Any) -> ModelConfig:
    """A copy of ``config`` with ``overrides`` applied (rules in the module docstring)."""
    values = config.to_dict()
    for key, value in overrides.items():
        value = _plain(value)
        if key.startswith("attention."):
            values["attention"] = {**values["attention"], key[len("attention.") :]: value}
        elif key not in values:
            raise _unknown_key(key)
        elif key == "attention":
            if isinstance(value, str):
                value = {"name": value}
            if not isinstance(value, Mapping):
                raise ValueError(
                    f"attention must be a pattern name or a dict with a 'name' key, got {value!r}"
                )
            current = values["attention"]
            if "name" in value and value["name"] != current.get("name"):
                values["attention"] = dict(value)
            else:
                values["attention"] = {**current, **value}
        else:
            values[key] = value
    return ModelConfig(**values)


def resolve_config(spec: Any, **overrides: Any) -> ModelConfig:
    """The :class:`ModelConfig` for ``spec`` + ``overrides``.

    ``spec`` is a registered name, a :class:`ModelConfig`, or a mapping / OmegaConf node: with a
    ``name`` key, the named variant updated by the other keys; without, :class:`ModelConfig`'s
    defaults updated by the keys.
    """
    if isinstance(spec, str):
        base, fields = get_model_config(spec), {}
    elif isinstance(spec, ModelConfig):
        base, fields = spec, {}
    else:
        plain = _plain(spec)
        if not isinstance(plain, Mapping):
            raise TypeError(
                f"cannot build a model from {type(spec).__name__}; pass a registered name, a ModelConfig, "
                "a dict or an OmegaConf DictConfig"
            )
        fields = dict(plain)
        name = fields.pop("name", None)
        base = get_model_config(name) if name is not None else ModelConfig()
    return apply_overrides(apply_overrides(base, **fields), **overrides)


def build(spec: Any, **overrides: Any) -> SparseTransformer:
    """Build a :class:`~zoo.model.SparseTransformer` from a name / config / dict / OmegaConf node.

    Build on the meta device to count parameters without memory::

        with torch.device("meta"):
            n = build("imagenet64_paper").num_parameters()
    """
    return SparseTransformer(resolve_config(spec, **overrides))


# ---------------------------------------------------------------------------------- YAML mirror
def canonical_attention(attention: Mapping[str, Any]) -> dict[str, Any]:
    """``attention`` with every field of its pattern's config (its defaults filled in), ``num_heads`` left
    out while unset: the form a Hydra-composed config has. Two dicts give the same pattern iff these agree."""
    import attention_patterns as ap

    full = dataclasses.asdict(ap.make_config(_plain(attention)))
    if full.get("num_heads") is None:
        full.pop("num_heads", None)
    return full


def _option_part(key: str, value: Any) -> str:
    """One piece of a preset's name: ``stride28``, ``merged`` (a word value), ``no_flag``."""
    if isinstance(value, bool):
        return key if value else f"no_{key}"
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9]+", value):
        return value
    text = "-".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
    return key + re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")


def pattern_option(attention: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The option of the pattern group ``configs/model/attention/`` that gives ``attention``, and the values
    that option sets beyond the pattern's defaults: ``("dense", {})`` or
    ``("fixed_stride28_c4", {"stride": 28, "c": 4})`` (a preset named after its values, in field order)."""
    import attention_patterns as ap

    config = ap.make_config(_plain(attention))  # validates the keys and types
    if config.num_heads is not None:
        raise ValueError(f"attention.num_heads is set by the model (n_head); got {config.num_heads} in {attention}")
    defaults = type(config)()
    delta = {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(config)
        if f.name not in ("name", "num_heads") and getattr(config, f.name) != getattr(defaults, f.name)
    }
    if not delta:
        return config.name, {}
    return "_".join([config.name, *(_option_part(k, v) for k, v in delta.items())]), delta


def _to_yaml(values: Mapping[str, Any]) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(dict(values)))


def model_yaml_dict(name: str) -> dict[str, Any]:
    """What ``configs/model/<name>.yaml`` holds besides its defaults list: ``name`` and every field but
    ``attention`` (selected through the pattern group, :func:`pattern_option`)."""
    fields = get_model_config(name).to_dict()
    del fields["attention"]
    return {"name": name, **fields}


def model_yaml(name: str) -> str:
    """Text of ``configs/model/<name>.yaml``: the pattern chosen through the group, then the fields."""
    config = get_model_config(name)
    option, delta = pattern_option(config.attention)
    pattern = config.attention["name"]
    if delta:
        defaults = dataclasses.asdict(_pattern_defaults(pattern))
        mine = ", ".join(f"{k}={v}" for k, v in delta.items())
        theirs = ", ".join(f"{k}={defaults[k]}" for k in delta)
        about = (
            f"# Pattern: model/attention={option} = `{pattern}` with this variant's own values ({mine}); the group's\n"
            f"# `{pattern}` alone has the pattern's defaults ({theirs}), so model/attention={pattern} is another model.\n"
        )
    else:
        about = f"# Pattern: model/attention={option} (the pattern's defaults).\n"
    about += (
        "# Another pattern: model/attention=NAME (that pattern's defaults; nothing of this one is kept), one value:\n"
        "# model.attention.KEY=VALUE (configs/model/attention/ lists the patterns and presets).\n"
    )
    defaults_list = f"defaults:\n  - {PATTERN_GROUP}: {option}\n  - _self_\n\n"
    return YAML_HEADER.format(name=name) + about + defaults_list + _to_yaml(model_yaml_dict(name))


def _pattern_defaults(pattern: str) -> Any:
    import attention_patterns as ap

    return ap.get_config(pattern)()


def pattern_presets() -> dict[str, tuple[str, dict[str, Any], list[str]]]:
    """The presets the variants need: ``{option: (pattern, values beyond its defaults, [variants])}``."""
    presets: dict[str, tuple[str, dict[str, Any], list[str]]] = {}
    for name in list_models():
        attention = get_model_config(name).attention
        option, delta = pattern_option(attention)
        if delta:
            presets.setdefault(option, (attention["name"], delta, []))[2].append(name)
    return presets


def preset_yaml(option: str) -> str:
    """Text of ``configs/model/attention/<option>.yaml``: the pattern's YAML plus the preset's values."""
    pattern, delta, variants = pattern_presets()[option]
    header = PRESET_HEADER.format(variants=", ".join(variants), pattern=pattern)
    return header + f"defaults:\n  - {pattern}\n  - _self_\n\n" + _to_yaml(delta)


def _expected_files(folder: Path) -> dict[Path, str]:
    files = {folder / f"{n}.yaml": model_yaml(n) for n in list_models()}
    files.update({folder / PATTERN_GROUP / f"{o}.yaml": preset_yaml(o) for o in pattern_presets()})
    return files


def _obsolete_presets(folder: Path) -> list[Path]:
    """Generated presets in ``folder/attention/`` that no variant uses any more."""
    expected = set(pattern_presets())
    group = folder / PATTERN_GROUP
    first_line = PRESET_HEADER.splitlines()[0]
    return sorted(
        p
        for p in group.glob("*.yaml")
        if p.stem not in expected and p.read_text().startswith(first_line)
    )


def write_model_configs(folder: str | Path) -> list[Path]:
    """Write ``<folder>/<name>.yaml`` for every variant and ``<folder>/attention/<preset>.yaml`` for every
    preset they use (deleting generated presets no variant uses any more); returns the paths written."""
    folder = Path(folder)
    (folder / PATTERN_GROUP).mkdir(parents=True, exist_ok=True)
    for path in _obsolete_presets(folder):
        path.unlink()
    paths = []
    for path, text in _expected_files(folder).items():
        path.write_text(text)
        paths.append(path)
    return paths


def stale_model_configs(folder: str | Path) -> list[str]:
    """Files under ``folder`` that are missing, differ from the registry or are obsolete presets: variant
    names (``strided``) and presets (``attention/fixed_stride28_c4``)."""
    folder = Path(folder)
    stale = [
        str(path.relative_to(folder).with_suffix(""))
        for path, text in _expected_files(folder).items()
        if not path.is_file() or path.read_text() != text
    ]
    stale += [str(p.relative_to(folder).with_suffix("")) for p in _obsolete_presets(folder)]
    return sorted(stale)


def check_attention_node(model: Any) -> None:
    """Reject a Hydra model node whose ``attention.name`` was changed without switching the pattern group.

    The group's YAMLs are typed by their pattern's config class (schema), so a node typed ``StridedConfig``
    named ``fixed`` comes from ``model.attention.name=fixed``: it would run ``fixed`` with the strided
    pattern's values plus ``FixedConfig``'s defaults. Raises ``ValueError`` showing the group syntax.
    """
    from omegaconf import DictConfig, OmegaConf

    from attention_patterns.registry import config_name, list_attentions

    node = model.get("attention") if isinstance(model, DictConfig) else None
    if not isinstance(node, DictConfig):
        return
    typed_as = config_name(OmegaConf.get_type(node))
    name = node.get("name")
    if typed_as is not None and name != typed_as and name not in list_attentions():
        hint = difflib.get_close_matches(str(name), list_attentions(), n=1)
        raise ValueError(
            f"unknown attention {name!r}; registered attentions are {list_attentions()}."
            + (f" Did you mean {hint[0]!r}?" if hint else "")
            + " Choose the pattern with model/attention=NAME"
        )
    if typed_as is not None and name != typed_as:
        raise ValueError(
            f"model.attention.name={name} renames the {typed_as!r} pattern's config without replacing its keys "
            f"(it would keep {typed_as}'s values and mix in {name}'s defaults). Switch the pattern through its group: "
            f"model/attention={name} (its defaults; with -m, e.g. -m model/attention={typed_as},{name}), then change "
            f"single values with model.attention.KEY=VALUE"
        )


def model_summary(name: str) -> dict[str, Any]:
    """Facts about a variant for tables (docs): parameters counted on the meta device, no memory used."""
    import torch

    config = get_model_config(name)
    with torch.device("meta"):
        model = SparseTransformer(config)
    return {
        "name": name,
        "parameters": model.num_parameters(),
        "n_layer": config.n_layer,
        "n_embd": config.n_embd,
        "n_head": config.n_head,
        "seq_len": config.seq_len,
        "attention": dict(config.attention),
        "embedding": config.embedding,
        "data_shape": list(config.data_shape),
        "ffn_hidden": config.ffn_hidden,
        "qk_dim": config.qk_dim,
        "dropout": config.dropout,
    }


# ---------------------------------------------------------------------------------- variants
# Small models for Fashion-MNIST: 28x28 grey images as 784-byte sequences, row by row; the stride
# 28 is one image row (§4.2: a stride aligned with the data's period), data embedding row + column.
def _fashion_mnist(attention: dict[str, Any], half: bool = False) -> ModelConfig:
    """The small Fashion-MNIST variants (784-byte sequences), sized to train in a few CPU minutes: 2 blocks of
    width 64 with 2 heads (137k parameters for ``strided``) reached the lowest bits/dim within that budget in
    our measurements (deeper or wider models see fewer images in the same time). Scale with overrides,
    e.g. ``build("strided", n_layer=4, n_embd=128, n_head=4)``."""
    return ModelConfig(
        n_layer=2,
        n_embd=64,
        n_head=2,
        seq_len=784,
        attention=attention,
        embedding="data",
        data_shape=[28, 28],
        half_ffn=half,
        half_qk=half,
        dropout=0.0,
    )


@register_model
def dense() -> ModelConfig:
    """Full causal attention baseline (§3) on Fashion-MNIST sequences."""
    return _fashion_mnist({"name": "dense"})


@register_model
def strided() -> ModelConfig:
    """Strided attention (§4.2), stride 28 = one image row, heads split between the two parts (§5.1)."""
    return _fashion_mnist({"name": "strided", "stride": 28, "mode": "split"})


@register_model
def fixed() -> ModelConfig:
    """Fixed attention (§4.2): blocks of one row (28), the last c=4 positions of each row summarise it."""
    return _fashion_mnist({"name": "fixed", "stride": 28, "c": 4, "mode": "split"})


@register_model
def strided_half() -> ModelConfig:
    """:func:`strided` with the half-size feed-forward network and query/key projections (§6)."""
    return _fashion_mnist({"name": "strided", "stride": 28, "mode": "split"}, half=True)


@register_model
def fixed_half() -> ModelConfig:
    """:func:`fixed` with the half-size feed-forward network and query/key projections (§6)."""
    return _fashion_mnist({"name": "fixed", "stride": 28, "c": 4, "mode": "split"}, half=True)


@register_model
def cifar10_paper() -> ModelConfig:
    """CIFAR-10 model of §7.1: 128 layers, d=256, 2 heads, strided, half-size FFN and QK (59M parameters).

    Byte order: interleaved RGB, ``data_shape=[32, 32, 3]`` (row, column, channel; §5.3 names these three
    data embeddings). The paper does not state the CIFAR-10 stride; we use 96 = one row of interleaved
    RGB bytes (32 pixels x 3), a stride aligned with the image's period as §4.2 recommends for images
    (sqrt(3072) ~ 55 would cut rows), and the local context of OpenAI's own CIFAR-10 config
    (``local_attn_ctx = 96`` in openai/distribution_augmentation, whose layers interleave one strided and
    three local blocks instead of splitting the heads). The two heads split the two parts (multi-head, eq. 8). Dropout
    0.25 (§7.1); every block is recomputed in the backward pass (§5.4).
    """
    return ModelConfig(
        n_layer=128,
        n_embd=256,
        n_head=2,
        seq_len=3072,
        attention={"name": "strided", "stride": 96, "mode": "split"},
        embedding="data",
        data_shape=[32, 32, 3],
        half_ffn=True,
        half_qk=True,
        dropout=0.25,
        checkpoint_every=1,
    )


@register_model
def enwik8_paper() -> ModelConfig:
    """Enwik8 model of §7.2: 30 layers, d=512, 8 heads, fixed, stride 128, c=32, merged heads (95M parameters).

    Summary columns: §4.3 found it preferable to let the heads attend to *distinct* sub-blocks of length
    ``c`` of each block; with ``l = 128`` and ``c = 32`` there are ``128 / 32 = 4`` of them, so the 8 heads
    use ``num_different_global_patterns = 4`` (head ``h`` takes sub-block ``h mod 4``; the paper does not
    say how many distinct ones it used).

    Embedding: §5.3 uses *attention* embeddings for text (row and column in a matrix of width the
    stride 128: 96 x 128 for 12,288 bytes). This matters for the parameter count: a data embedding
    of the 1-D stream would be a 12,288 x 512 table (6.3M parameters), giving 101M instead of 95M.
    Full-size FFN and QK (not stated as halved). Dropout 0.40 (§7.2).
    """
    return ModelConfig(
        n_layer=30,
        n_embd=512,
        n_head=8,
        seq_len=12288,
        attention={"name": "fixed", "stride": 128, "c": 32, "num_different_global_patterns": 4, "mode": "merged"},
        embedding="attention",
        data_shape=[12288],
        half_ffn=False,
        half_qk=False,
        dropout=0.40,
        checkpoint_every=1,
    )


@register_model
def imagenet64_paper() -> ModelConfig:
    """ImageNet 64x64 model of §7.3: 48 layers, d=512, 16 heads, strided with stride 128 (152M parameters).

    Byte order: interleaved RGB ``[64, 64, 3]`` with data embeddings (row, column, channel; §5.3), as for
    CIFAR-10. Heads split between the two parts; full-size FFN and QK; dropout 0.01 (§7.3).
    """
    return ModelConfig(
        n_layer=48,
        n_embd=512,
        n_head=16,
        seq_len=12288,
        attention={"name": "strided", "stride": 128, "mode": "split"},
        embedding="data",
        data_shape=[64, 64, 3],
        half_ffn=False,
        half_qk=False,
        dropout=0.01,
        checkpoint_every=1,
    )


@register_model
def audio_paper() -> ModelConfig:
    """Classical music model of §7.4 (Table 5): the 152M-parameter ImageNet 64x64 model on raw audio.

    The paper gives the parameter count (152M) and the sequence length (65,536 mu-law samples at 12 kHz)
    but no layer count, width or head count for audio; :func:`imagenet64_paper`'s 48 layers, d=512 and
    16 heads give that count. A 1-D stream with attention embeddings (§5.3, row and column in a matrix of
    width the stride) and stride 256 = sqrt(65,536) (§4.2: l ~ sqrt(n)); dropout 0.01 as §7.3.
    """
    return dataclasses.replace(
        imagenet64_paper(),
        seq_len=65536,
        attention={"name": "strided", "stride": 256, "mode": "split"},
        embedding="attention",
        data_shape=[65536],
    )


# ---------------------------------------------------------------------------------- timm's registry
if __name__ == "zoo.registry":  # not for a `python -m zoo.registry` copy of this module
    from . import timm_models

    timm_models.register_all()  # every variant as timm's sparse_transformer_<name> (zoo.timm_models)


# ---------------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.registry", description=__doc__.split("\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="DIR", help="write DIR/<name>.yaml for every registered model")
    group.add_argument("--check", metavar="DIR", help="exit 1 if a YAML in DIR is missing or out of date")
    args = parser.parse_args(argv)
    if args.write:
        for path in write_model_configs(args.write):
            print(path)
        return 0
    if args.check:
        stale = stale_model_configs(args.check)
        if stale:
            print(f"out of date: {stale}; run `python -m zoo.registry --write {args.check}`", file=sys.stderr)
            return 1
        print(f"{len(list_models())} model configs match the registry")
        return 0
    for name in list_models():
        s = model_summary(name)
        print(f"{name:18s} {s['parameters'] / 1e6:8.2f}M  {s['attention']}  embedding={s['embedding']}")
    return 0


if __name__ == "__main__":
    from zoo.registry import main as _main  # the importable module's registry, not a __main__ copy

    sys.exit(_main())
