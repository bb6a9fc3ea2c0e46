"""The attention component registry: names, configs, errors, Hydra schemas and YAML files."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

import attention_patterns as ap
from attention_patterns import registry
from attention_patterns.base import AttentionPattern
from attention_patterns.parts import AllPast

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
EXPECTED = {"dense", "local", "strided", "fixed", "bigbird", "longformer", "variable", "axial", "block_local"}


# --------------------------------------------------------------------------- names


def test_list_attentions_names_every_pattern():
    names = ap.list_attentions()
    assert EXPECTED <= set(names)
    assert names == sorted(names)
    assert ap.list_attentions("b*") == [n for n in names if n.startswith("b")]


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError) as err:
        ap.build_attention({"name": "strdied", "stride": 4})
    msg = str(err.value)
    assert "'strdied'" in msg and "Did you mean 'strided'" in msg
    for name in EXPECTED:
        assert repr(name) in msg
    with pytest.raises(ValueError, match="unknown attention 'nope'"):
        ap.get_config("nope")
    with pytest.raises(ValueError, match="unknown attention 'nope'"):
        ap.get_component("nope")
    with pytest.raises(ValueError, match="unknown attention 'nope'"):
        ap.build_attention("nope")


def test_missing_name_and_unsupported_input():
    with pytest.raises(ValueError, match="needs a 'name' key.*stride"):
        ap.build_attention({"stride": 4})
    with pytest.raises(TypeError, match="cannot build an attention from int"):
        ap.build_attention(42)


# --------------------------------------------------------------------------- registration


@pytest.fixture
def scratch_registry():
    """Register throwaway components and remove every trace of them afterwards."""
    before_components = dict(registry._COMPONENTS)
    before_configs = dict(registry._CONFIGS)
    repo = ConfigStore.instance().repo.setdefault("attention", {})
    before_schemas = set(repo)
    yield
    registry._COMPONENTS.clear()
    registry._COMPONENTS.update(before_components)
    registry._CONFIGS.clear()
    registry._CONFIGS.update(before_configs)
    for key in set(repo) - before_schemas:
        del repo[key]


def _config_class(default_name: str):
    @dataclass
    class ScratchConfig:
        name: str = default_name
        num_heads: int | None = None

    return ScratchConfig


def _component_class():
    class Scratch(AttentionPattern):
        def parts(self):
            return [AllPast()]

        def members(self, layer):
            return torch.ones((self.num_heads, 1), dtype=torch.bool)

    return Scratch


def test_register_a_new_component(scratch_registry):
    config = _config_class("scratch_a")
    cls = ap.register_attention("scratch_a", config)(_component_class())
    assert "scratch_a" in ap.list_attentions()
    assert ap.get_config("scratch_a") is config and ap.get_component("scratch_a") is cls
    assert "scratch_a_schema.yaml" in ConfigStore.instance().repo["attention"]
    comp = ap.build_attention("scratch_a", num_heads=2)
    assert isinstance(comp, cls) and comp.name == "scratch_a"
    assert comp.mask(5).shape == (1, 5, 5)


def test_duplicate_name_is_rejected(scratch_registry):
    with pytest.raises(ValueError, match=r"attention 'strided' is already registered \(by Strided\)"):
        ap.register_attention("strided", _config_class("strided"))(_component_class())
    assert ap.get_component("strided").__name__ == "Strided"


def test_duplicate_class_or_config_is_rejected(scratch_registry):
    config, cls = _config_class("scratch_a"), _component_class()
    ap.register_attention("scratch_a", config)(cls)
    with pytest.raises(ValueError, match="class .*Scratch is already registered as attention 'scratch_a'"):
        ap.register_attention("scratch_b", _config_class("scratch_b"))(cls)
    with pytest.raises(
        ValueError, match="config ScratchConfig is already registered for attention 'scratch_a'"
    ):
        ap.register_attention("scratch_c", config)(_component_class())
    assert "scratch_b" not in ap.list_attentions() and "scratch_c" not in ap.list_attentions()


def test_registration_needs_a_dataclass_with_a_name_and_a_pattern_class(scratch_registry):
    with pytest.raises(TypeError, match="must be a dataclass"):
        ap.register_attention("scratch_a", dict)

    @dataclass
    class NoName:
        stride: int = 1

    with pytest.raises(TypeError, match="needs a `name` field"):
        ap.register_attention("scratch_a", NoName)
    with pytest.raises(TypeError, match="must decorate an AttentionPattern subclass"):
        ap.register_attention("scratch_a", _config_class("scratch_a"))(object)
    assert "scratch_a" not in ap.list_attentions()


# --------------------------------------------------------------------------- config keys and values


@pytest.mark.parametrize(
    "cfg, key, hint",
    [
        ({"name": "strided", "strid": 4}, "strid", "stride"),
        (
            {"name": "fixed", "stride": 16, "num_global_patterns": 2},
            "num_global_patterns",
            "num_different_global_patterns",
        ),
        ({"name": "dense", "zzz": 1}, "zzz", None),
        ({"name": "bigbird", "random_block": 2}, "random_block", "random_blocks"),
        ({"name": "local", "windows": 3}, "windows", "window"),
        ({"name": "axial", "n_heads": 2}, "n_heads", "num_heads"),
    ],
)
def test_unknown_key_names_the_key_and_the_valid_ones(cfg, key, hint):
    with pytest.raises(ValueError) as err:
        ap.build_attention(cfg)
    msg = str(err.value)
    assert f"unknown key {key!r}" in msg
    assert (f"Did you mean {hint!r}" in msg) if hint else ("Did you mean" not in msg)
    for field in dataclasses.fields(ap.get_config(cfg["name"])):
        assert repr(field.name) in msg


def test_unknown_key_in_overrides_and_dictconfig():
    with pytest.raises(ValueError, match="unknown key 'strde'"):
        ap.build_attention("strided", strde=3)
    with pytest.raises(ValueError, match="unknown key 'widht'"):
        ap.build_attention(OmegaConf.create({"name": "local", "widht": 3}))


@pytest.mark.parametrize(
    "cfg, pattern",
    [
        ({"name": "strided", "stride": 0}, "stride must be an integer >= 1, got 0"),
        ({"name": "strided", "stride": -3}, "stride must be an integer >= 1, got -3"),
        ({"name": "fixed", "stride": 0}, "stride must be an integer >= 1, got 0"),
        ({"name": "fixed", "stride": 8, "c": 9}, r"c must be <= stride \(8\), got c=9"),
        ({"name": "fixed", "stride": 8, "c": 0}, "c must be an integer >= 1, got 0"),
        (
            {"name": "fixed", "stride": 16, "c": 4, "num_different_global_patterns": 5},
            r"num_different_global_patterns \* c must be <= stride \(16\), got num_different_global_patterns=5 with c=4",
        ),
        (
            {"name": "fixed", "num_different_global_patterns": 0},
            "num_different_global_patterns must be .* got 0",
        ),
        ({"name": "local", "window": 0}, "window must be an integer >= 1, got 0"),
        ({"name": "strided", "num_heads": 1}, "mode='split' .* needs num_heads >= 2, got num_heads=1"),
        ({"name": "fixed", "num_heads": 1, "mode": "split"}, "needs num_heads >= 2, got num_heads=1"),
        ({"name": "axial", "num_heads": 1}, "needs num_heads >= 2, got num_heads=1"),
        (
            {"name": "strided", "mode": "mixed"},
            r"mode must be one of \['merged', 'split', 'interleaved'\], got 'mixed'",
        ),
        ({"name": "axial", "width": 0}, "width must be an integer >= 1, got 0"),
        ({"name": "axial", "height": 0}, "height must be an integer >= 1, got 0"),
        ({"name": "dense", "num_heads": 0}, "num_heads must be an integer >= 1, got 0"),
        ({"name": "bigbird", "block_size": 0}, "block_size must be an integer >= 1, got 0"),
        ({"name": "bigbird", "window_blocks": 0}, "window_blocks must be an integer >= 1, got 0"),
        ({"name": "bigbird", "random_blocks": -1}, "random_blocks must be an integer >= 0, got -1"),
        ({"name": "bigbird", "seed": -5}, "seed must be an integer >= 0, got -5"),
        (
            {"name": "longformer", "global_block_indices": [-1]},
            "global_block_indices entry must be .* got -1",
        ),
        (
            {"name": "longformer", "global_block_indices": [0, 4], "global_block_end_indices": [2]},
            r"one entry per global_block_indices entry \(2\), got \[2\]",
        ),
        (
            {"name": "variable", "global_block_indices": [3], "global_block_end_indices": [3]},
            "global_block_end_indices entry 3 must be > its start 3",
        ),
        (
            {"name": "variable", "local_window_blocks": []},
            r"local_window_blocks must list at least one .* got \[\]",
        ),
        ({"name": "variable", "local_window_blocks": [2, 0]}, "local_window_blocks entry must be .* got 0"),
        ({"name": "block_local", "window_blocks": 0}, "window_blocks must be an integer >= 1, got 0"),
    ],
)
def test_invalid_values_name_the_value(cfg, pattern):
    with pytest.raises(ValueError, match=pattern):
        ap.build_attention(cfg)


def test_invalid_sequence_lengths():
    axial = ap.build_attention({"name": "axial", "width": 8, "height": 4, "num_heads": 2})
    for call in (lambda: axial.mask(31), lambda: axial.layout(33, 8), lambda: axial.density(30)):
        with pytest.raises(ValueError, match=r"height=4, width=8 needs n = 32, got n=3[0-3]"):
            call()
    assert axial.mask(32).shape == (2, 32, 32)
    strided = ap.build_attention({"name": "strided", "stride": 4})
    with pytest.raises(ValueError, match="sequence length n must be an integer >= 1, got 0"):
        strided.mask(0)
    with pytest.raises(ValueError, match="block_size must be an integer >= 1, got 0"):
        strided.layout(16, 0)


def test_wrong_value_type_is_rejected():
    with pytest.raises(ValidationError, match="stride"):
        ap.build_attention({"name": "strided", "stride": "sixteen"})


# --------------------------------------------------------------------------- building


def test_build_from_every_kind_of_config():
    from attention_patterns.strided import Strided, StridedConfig

    expected = ap.build_attention({"name": "strided", "stride": 8, "num_heads": 4}).mask(50)
    sources = [
        {"name": "strided", "stride": 8, "num_heads": 4},
        StridedConfig(stride=8, num_heads=4),
        OmegaConf.create({"name": "strided", "stride": 8, "num_heads": 4}),
        OmegaConf.structured(StridedConfig(stride=8, num_heads=4)),
    ]
    for src in sources:
        comp = ap.build_attention(src)
        assert isinstance(comp, Strided) and type(comp.config) is StridedConfig
        assert comp.config.stride == 8 and comp.config.num_heads == 4
        assert torch.equal(comp.mask(50), expected)
    # a name, with overrides (how the model fills in num_heads)
    comp = ap.build_attention("strided", stride=8, num_heads=4)
    assert torch.equal(comp.mask(50), expected)
    comp = ap.build_attention(StridedConfig(stride=3), stride=8, num_heads=4)
    assert torch.equal(comp.mask(50), expected)
    # defaults come from the dataclass
    assert ap.build_attention("fixed").config == ap.get_config("fixed")()


def test_build_does_not_modify_its_input():
    src = {"name": "fixed", "stride": 16}
    ap.build_attention(src, num_heads=2)
    assert src == {"name": "fixed", "stride": 16}


def test_config_instance_with_wrong_name_is_rejected():
    from attention_patterns.strided import StridedConfig

    with pytest.raises(ValueError, match="has name='fixed', expected 'strided'"):
        ap.build_attention(StridedConfig(name="fixed"))


def test_get_config_returns_the_registered_dataclass():
    for name in ap.list_attentions():
        config = ap.get_config(name)
        assert dataclasses.is_dataclass(config)
        fields = {f.name for f in dataclasses.fields(config)}
        assert {"name", "num_heads"} <= fields
        assert config().name == name
        assert ap.get_component(name).name == name


# --------------------------------------------------------------------------- Hydra schemas and YAML


def test_every_config_is_stored_as_a_hydra_schema():
    repo = ConfigStore.instance().repo["attention"]
    for name in ap.list_attentions():
        node = repo[f"{name}_schema.yaml"].node
        assert OmegaConf.get_type(node) is ap.get_config(name)


def test_every_pattern_has_a_yaml_config():
    yamls = {p.stem for p in (CONFIG_DIR / "attention").glob("*.yaml")}
    assert yamls == set(ap.list_attentions())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_yaml_composes_with_its_schema_and_builds(name):
    with initialize_config_dir(version_base=None, config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name=None, overrides=[f"+attention={name}"])
        nested = compose(
            config_name=None, overrides=[f"+attention@model.attention={name}", "+model.n_head=2"]
        )
    node = cfg.attention
    config_cls = ap.get_config(name)
    assert OmegaConf.get_type(node) is config_cls  # validated against the schema
    # the YAML shows the dataclass defaults
    assert OmegaConf.to_container(node) == dataclasses.asdict(config_cls())
    assert OmegaConf.to_container(nested.model.attention) == dataclasses.asdict(config_cls())
    comp = ap.build_attention(nested.model.attention, num_heads=nested.model.n_head)
    assert comp.name == name and comp.num_heads == 2
    assert comp.mask(64).shape[1:] == (64, 64)


def test_yaml_values_can_be_overridden_and_are_type_checked():
    with initialize_config_dir(version_base=None, config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name=None, overrides=["+attention=strided", "attention.stride=28"])
        assert ap.build_attention(cfg.attention, num_heads=2).config.stride == 28
        with pytest.raises(ConfigCompositionException):
            compose(config_name=None, overrides=["+attention=strided", "attention.stride=abc"])
        with pytest.raises(ConfigCompositionException, match="strid"):
            compose(config_name=None, overrides=["+attention=strided", "attention.strid=28"])


def _write_group_yaml(root: Path, name: str, body: str) -> None:
    (root / "attention").mkdir(parents=True, exist_ok=True)
    (root / "attention" / f"{name}.yaml").write_text(body)


def test_schema_rejects_a_misspelled_yaml_key(tmp_path):
    _write_group_yaml(
        tmp_path, "bad", "defaults:\n  - strided_schema\n  - _self_\n\nname: strided\nstrid: 64\n"
    )
    _write_group_yaml(
        tmp_path, "good", "defaults:\n  - strided_schema\n  - _self_\n\nname: strided\nstride: 64\n"
    )
    with initialize_config_dir(version_base=None, config_dir=str(tmp_path)):
        good = compose(config_name=None, overrides=["+attention=good"])
        assert ap.build_attention(good.attention).config.stride == 64
        with pytest.raises(ConfigCompositionException) as err:
            compose(config_name=None, overrides=["+attention=bad"])
    assert "strid" in str(err.value) and "StridedConfig" in str(err.value)


def test_schema_rejects_a_wrongly_typed_yaml_value(tmp_path):
    _write_group_yaml(tmp_path, "bad", "defaults:\n  - fixed_schema\n  - _self_\n\nname: fixed\nc: many\n")
    with initialize_config_dir(version_base=None, config_dir=str(tmp_path)):
        with pytest.raises(ConfigCompositionException, match="c"):
            compose(config_name=None, overrides=["+attention=bad"])
