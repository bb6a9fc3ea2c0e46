"""Attention component registry in the style of the xFormers components API (0.0.2x).

xFormers removed ``register_attention`` / ``build_attention`` in 0.0.29-0.0.34, so the zoo owns it::

    @register_attention("strided", StridedConfig)
    class Strided(AttentionPattern): ...

    comp = build_attention({"name": "strided", "stride": 64})

Unlike old xFormers, unknown or mistyped config keys are an error (naming the key and the valid
ones) instead of being dropped silently. Each config dataclass is also stored in Hydra's ConfigStore
as the top-level config ``attention_schema_<name>`` (:data:`SCHEMA_PREFIX`; top-level so that it is not
listed among a group's options), and the YAML files of the pattern group ``configs/model/attention/``
list it in their defaults (``- /attention_schema_strided@_here_``), so they are validated against it.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from .base import AttentionPattern

T = TypeVar("T", bound=type[AttentionPattern])

_COMPONENTS: dict[str, type[AttentionPattern]] = {}
_CONFIGS: dict[str, type] = {}
SCHEMA_PREFIX = "attention_schema_"  # ConfigStore name of a pattern's schema: attention_schema_<name>


def _store_schema(name: str, config_cls: type) -> None:
    try:
        from hydra.core.config_store import ConfigStore
    except ImportError:  # hydra is a dependency, but the patterns work without it
        return
    ConfigStore.instance().store(name=f"{SCHEMA_PREFIX}{name}", node=config_cls)


def register_attention(name: str, config: type) -> Callable[[T], T]:
    """Class decorator registering an :class:`AttentionPattern` under ``name`` with its config dataclass.

    Raises ``ValueError`` if the name, the class or the config class is already registered.
    """
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"config for attention {name!r} must be a dataclass, got {config!r}")
    if "name" not in {f.name for f in dataclasses.fields(config)}:
        raise TypeError(f"config {config.__name__} for attention {name!r} needs a `name` field")

    def decorator(cls: T) -> T:
        if not (isinstance(cls, type) and issubclass(cls, AttentionPattern)):
            raise TypeError(f"@register_attention({name!r}) must decorate an AttentionPattern subclass, got {cls!r}")
        if name in _COMPONENTS:
            raise ValueError(f"attention {name!r} is already registered (by {_COMPONENTS[name].__qualname__})")
        for other, other_cls in _COMPONENTS.items():
            if other_cls is cls:
                raise ValueError(f"class {cls.__qualname__} is already registered as attention {other!r}")
            if _CONFIGS[other] is config:
                raise ValueError(f"config {config.__name__} is already registered for attention {other!r}")
        cls.name = name
        _COMPONENTS[name] = cls
        _CONFIGS[name] = config
        _store_schema(name, config)
        return cls

    return decorator


def list_attentions(pattern: str = "*") -> list[str]:
    """Sorted names of the registered attention components matching the glob ``pattern``."""
    return sorted(n for n in _COMPONENTS if fnmatch.fnmatch(n, pattern))


def _unknown_name(name: Any) -> ValueError:
    known = list_attentions()
    hint = difflib.get_close_matches(str(name), known, n=1)
    extra = f" Did you mean {hint[0]!r}?" if hint else ""
    return ValueError(f"unknown attention {name!r}; registered attentions are {known}.{extra}")


def get_config(name: str) -> type:
    """The config dataclass registered for ``name``."""
    if name not in _CONFIGS:
        raise _unknown_name(name)
    return _CONFIGS[name]


def config_name(config_cls: type) -> str | None:
    """The registered name whose config dataclass is ``config_cls`` (None if it is not registered)."""
    for name, cls in _CONFIGS.items():
        if cls is config_cls:
            return name
    return None


def get_component(name: str) -> type[AttentionPattern]:
    """The component class registered for ``name``."""
    if name not in _COMPONENTS:
        raise _unknown_name(name)
    return _COMPONENTS[name]


def _to_plain_dict(cfg: Any) -> dict[str, Any]:
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return dict(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    except ImportError:  # pragma: no cover
        pass
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, Mapping):
        return dict(cfg)
    if isinstance(cfg, str):
        return {"name": cfg}
    raise TypeError(
        f"cannot build an attention from {type(cfg).__name__}; pass a name, a dict with a 'name' key, "
        "a registered config dataclass or an OmegaConf DictConfig"
    )


def make_config(cfg: Any, **overrides: Any) -> Any:
    """Validate ``cfg`` (+ ``overrides``) against its registered dataclass and return an instance.

    Unknown keys raise ``ValueError`` naming the key and the valid ones; values of the wrong type
    raise through OmegaConf's structured-config validation.
    """
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type) and not overrides:
        for name, config_cls in _CONFIGS.items():
            if type(cfg) is config_cls:
                if cfg.name != name:
                    raise ValueError(f"config {type(cfg).__name__} has name={cfg.name!r}, expected {name!r}")
                return cfg
    values = _to_plain_dict(cfg)
    values.update(overrides)
    if "name" not in values:
        raise ValueError(f"attention config needs a 'name' key (one of {list_attentions()}), got keys {sorted(values)}")
    name = values["name"]
    config_cls = get_config(name)
    valid = [f.name for f in dataclasses.fields(config_cls)]
    for key in values:
        if key not in valid:
            hint = difflib.get_close_matches(str(key), valid, n=1) or difflib.get_close_matches(str(key).lower(), valid, n=1)
            extra = f" Did you mean {hint[0]!r}?" if hint else ""
            raise ValueError(f"unknown key {key!r} for attention {name!r}; valid keys are {valid}.{extra}")
    try:
        from omegaconf import OmegaConf
    except ImportError:  # pragma: no cover
        return config_cls(**values)
    merged = OmegaConf.merge(OmegaConf.structured(config_cls), values)
    return OmegaConf.to_object(merged)


def build_attention(cfg: Any, **overrides: Any) -> AttentionPattern:
    """Build a registered attention component.

    ``cfg`` may be a registered name, a dict with a ``name`` key, a config dataclass instance or an
    OmegaConf node; ``overrides`` replace fields. Invalid values raise ``ValueError`` naming them.
    """
    config = make_config(cfg, **overrides)
    return _COMPONENTS[config.name](config)
