"""Tests of the model registry (zoo.registry) and its YAML mirror configs/model/*.yaml."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import zoo
from zoo import registry
from zoo.model import ModelConfig, SparseTransformer
from zoo.registry import build, get_model_config, list_models, register_model, resolve_config

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
MODEL_DIR = CONFIG_DIR / "model"
VARIANTS = [
    "audio_paper",
    "cifar10_paper",
    "dense",
    "enwik8_paper",
    "fixed",
    "fixed_half",
    "imagenet64_paper",
    "strided",
    "strided_half",
]


def test_list_models():
    assert list_models() == VARIANTS
    assert list_models("*_paper") == ["audio_paper", "cifar10_paper", "enwik8_paper", "imagenet64_paper"]
    assert list_models("*half") == ["fixed_half", "strided_half"]
    assert list_models("nothing*") == []
    assert zoo.list_models is list_models and zoo.build is build  # package-level exports


def test_get_model_config_returns_fresh_copies():
    a = get_model_config("strided")
    a.attention["stride"] = 3
    a.data_shape.append(1)
    b = get_model_config("strided")
    assert b.attention["stride"] == 28 and b.data_shape == [28, 28]


def test_small_variants_suit_fashion_mnist():
    for name in ["dense", "strided", "fixed", "strided_half", "fixed_half"]:
        c = get_model_config(name)
        assert (c.seq_len, c.data_shape, c.embedding) == (784, [28, 28], "data")
        assert c.half_ffn == c.half_qk == name.endswith("_half")
    assert get_model_config("strided").attention["stride"] == 28
    assert get_model_config("fixed").attention["name"] == "fixed"


# ---------------------------------------------------------------------------------- paper configurations
@pytest.mark.parametrize(
    ("name", "paper_params"),
    [("cifar10_paper", 59e6), ("enwik8_paper", 95e6), ("imagenet64_paper", 152e6), ("audio_paper", 152e6)],
)
def test_paper_parameter_counts_on_meta(name, paper_params):
    with torch.device("meta"):
        model = build(name)
    assert next(model.parameters()).device.type == "meta"
    n = model.num_parameters()
    assert abs(n - paper_params) / paper_params < 0.02, (
        f"{name}: {n / 1e6:.2f}M vs the paper's {paper_params / 1e6:.0f}M"
    )


def test_paper_configurations_follow_the_text():
    c = get_model_config("cifar10_paper")  # §7.1
    assert (c.n_layer, c.n_embd, c.n_head, c.seq_len, c.half_ffn, c.half_qk) == (
        128,
        256,
        2,
        3072,
        True,
        True,
    )
    assert c.attention["name"] == "strided" and c.data_shape == [32, 32, 3] and c.dropout == 0.25
    e = get_model_config("enwik8_paper")  # §7.2
    assert (e.n_layer, e.n_embd, e.n_head, e.seq_len) == (30, 512, 8, 12288)
    # §4.3: heads attend to distinct summary sub-blocks of length c: 128 / 32 = 4 of them
    assert e.attention == {"name": "fixed", "stride": 128, "c": 32, "num_different_global_patterns": 4, "mode": "merged"}
    assert e.embedding == "attention" and e.dropout == 0.40  # §5.3: attention embeddings for text
    i = get_model_config("imagenet64_paper")  # §7.3
    assert (i.n_layer, i.n_embd, i.n_head, i.seq_len) == (48, 512, 16, 12288)
    assert i.attention["name"] == "strided" and i.attention["stride"] == 128 and i.data_shape == [64, 64, 3]
    a = get_model_config("audio_paper")  # §7.4: 152M parameters (Table 5) on 65,536 samples; sizes of §7.3
    assert (a.n_layer, a.n_embd, a.n_head, a.seq_len, a.data_shape) == (48, 512, 16, 65536, [65536])
    assert a.attention["stride"] == 256 and a.embedding == "attention" and a.dropout == 0.01


# ---------------------------------------------------------------------------------- build
def test_build_from_every_kind_of_spec():
    by_name = build("strided_half", n_layer=2)
    assert isinstance(by_name, SparseTransformer)
    assert by_name.config.n_layer == 2 and by_name.config.half_ffn
    from_config = build(ModelConfig(n_layer=1, n_embd=32))
    assert from_config.config.n_embd == 32
    from_dict = build({"name": "fixed", "n_layer": 1})
    assert from_dict.config.attention["name"] == "fixed" and from_dict.config.n_layer == 1
    full = build({**get_model_config("dense").to_dict(), "n_layer": 1})  # all fields, no name
    assert full.config.attention == {"name": "dense"}
    node = OmegaConf.create({"name": "strided", "n_layer": 1, "data_shape": [28, 28]})
    assert build(node).config == dataclasses.replace(get_model_config("strided"), n_layer=1)
    with pytest.raises(TypeError, match="cannot build a model from int"):
        build(3)


def test_attention_overrides_replace_merge_and_dotted():
    c = resolve_config("strided", attention={"name": "fixed", "stride": 28, "c": 4})
    assert c.attention == {"name": "fixed", "stride": 28, "c": 4}  # another pattern: replaced
    c = resolve_config("strided", attention={"mode": "interleaved"})
    assert c.attention == {"name": "strided", "stride": 28, "mode": "interleaved"}  # same pattern: merged
    c = resolve_config("fixed", **{"attention.c": 2, "attention.num_different_global_patterns": 2})
    assert c.attention == {
        "name": "fixed",
        "stride": 28,
        "c": 2,
        "mode": "split",
        "num_different_global_patterns": 2,
    }
    c = resolve_config("strided", attention="dense")
    assert c.attention == {"name": "dense"}
    model = build("strided", n_layer=1, attention={"name": "fixed", "stride": 28, "c": 4})
    assert model.component.name == "fixed" and model.component.config.c == 4
    assert model.component.num_heads == model.config.n_head == 2


def test_unknown_names_and_keys_fail_clearly():
    with pytest.raises(
        ValueError,
        match=r"unknown model 'strided_hlaf'.*registered models are \[.*'strided_half'.*"
        r"Did you mean 'strided_half'",
    ):
        build("strided_hlaf")
    with pytest.raises(
        ValueError,
        match=r"unknown model config key 'n_layers'; valid keys are \[.*'n_layer'.*"
        r"Did you mean 'n_layer'",
    ):
        build("strided", n_layers=2)
    with pytest.raises(ValueError, match="unknown model config key 'bogus'"):
        build({"name": "strided", "bogus": 1})
    with pytest.raises(ValueError, match="unknown key 'strid' for attention 'strided'"):
        build("strided", **{"attention.strid": 4})
    with pytest.raises(ValueError, match=r"unknown key 'c' for attention 'strided'.*model/attention=NAME"):
        build("fixed", **{"attention.name": "strided"})  # Hydra-style switch keeps fixed's `c`
    with pytest.raises(ValueError, match="unknown attention 'sparse'"):
        build("strided", attention={"name": "sparse"})
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        get_model_config("nope")


def test_register_model_rejects_duplicates_and_non_configs(monkeypatch):
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))

    with pytest.raises(ValueError, match="'strided' is already registered"):

        @register_model
        def strided():  # noqa: F811 - the duplicate is the point
            return ModelConfig()

    @register_model
    def not_a_config():
        return {"n_layer": 1}

    with pytest.raises(TypeError, match="must return a ModelConfig"):
        get_model_config("not_a_config")

    @register_model
    def my_tiny():
        return ModelConfig(n_layer=1, n_embd=16)

    assert "my_tiny" in list_models() and build("my_tiny").config.n_embd == 16


# ---------------------------------------------------------------------------------- YAML mirror
def canonical(config: ModelConfig) -> ModelConfig:
    """``config`` with its attention dict completed by the pattern's defaults (the form Hydra composes)."""
    return dataclasses.replace(config, attention=registry.canonical_attention(config.attention))


def compose_model(*overrides: str):
    from hydra import compose, initialize_config_dir

    import attention_patterns  # noqa: F401  (the schemas of the pattern YAMLs)

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(overrides=list(overrides))


def test_every_variant_has_a_yaml_equal_to_its_registry_entry():
    files = sorted(p.stem for p in MODEL_DIR.glob("*.yaml"))
    assert files == list_models()
    for name in list_models():
        loaded = OmegaConf.to_container(OmegaConf.load(MODEL_DIR / f"{name}.yaml"))
        option, delta = registry.pattern_option(get_model_config(name).attention)
        # the pattern through its group (a preset with the variant's own values where they differ from the
        # pattern's defaults), every other field as the registry says
        assert loaded.pop("defaults") == [{"attention": option}, "_self_"], name
        assert "attention" not in loaded and loaded == registry.model_yaml_dict(name)
        assert {**loaded, "attention": get_model_config(name).attention} == {"name": name, **get_model_config(name).to_dict()}
        preset = MODEL_DIR / "attention" / f"{option}.yaml"
        assert preset.is_file() and (bool(delta) == preset.read_text().startswith("# Generated from zoo.registry"))
        composed = compose_model(f"+model={name}").model
        assert canonical(resolve_config(composed)) == canonical(get_model_config(name)), name
    assert registry.pattern_option(get_model_config("fixed").attention) == ("fixed_stride28_c4", {"stride": 28, "c": 4})
    assert registry.pattern_option(get_model_config("dense").attention) == ("dense", {})
    assert registry.stale_model_configs(MODEL_DIR) == []
    assert registry.main(["--check", str(MODEL_DIR)]) == 0


def test_stale_yaml_is_detected(tmp_path):
    registry.write_model_configs(tmp_path)
    assert registry.stale_model_configs(tmp_path) == []
    (tmp_path / "strided.yaml").write_text(
        (tmp_path / "strided.yaml").read_text().replace("n_layer: 2", "n_layer: 5")
    )
    (tmp_path / "dense.yaml").unlink()
    assert registry.stale_model_configs(tmp_path) == ["dense", "strided"]
    assert registry.main(["--check", str(tmp_path)]) == 1
    preset = tmp_path / "attention" / "fixed_stride28_c4.yaml"
    preset.write_text(preset.read_text().replace("c: 4", "c: 5"))
    obsolete = tmp_path / "attention" / "strided_stride7.yaml"  # a preset no variant uses any more
    obsolete.write_text(registry.PRESET_HEADER.format(variants="gone", pattern="strided") + "stride: 7\n")
    hand_written = tmp_path / "attention" / "mine.yaml"  # not generated: never touched
    hand_written.write_text("defaults:\n  - strided\n")
    assert registry.stale_model_configs(tmp_path) == [
        "attention/fixed_stride28_c4",
        "attention/strided_stride7",
        "dense",
        "strided",
    ]
    registry.write_model_configs(tmp_path)
    assert registry.stale_model_configs(tmp_path) == [] and not obsolete.exists() and hand_written.exists()


@pytest.mark.parametrize(
    ("override", "check"),
    [
        (
            "model/attention=fixed",  # the pattern's defaults, nothing of strided_half's pattern kept
            lambda m: m.component.name == "fixed" and (m.component.config.stride, m.component.config.c) == (128, 16),
        ),
        ("model.attention.stride=14", lambda m: m.component.config.stride == 14),
        ("model.embedding=attention", lambda m: m.embed_in.position.sizes == [28, 28]),
        ("model.half_ffn=false", lambda m: m.blocks[0].ffn.fc1.out_features == 4 * m.config.n_embd),
        ("model.attention.mode=interleaved", lambda m: m.component.num_layers_period == 2),
    ],
)
def test_hydra_ablations_are_one_override_each(override, check):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(overrides=["+model=strided_half", override, "model.n_layer=1"])
    model = build(cfg.model)
    assert model.config.n_layer == 1
    assert check(model)


def test_every_model_yaml_composes_and_builds_on_meta():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        for name in list_models():
            cfg = compose(overrides=[f"+model={name}"])
            with torch.device("meta"):
                model = build(cfg.model)
            assert canonical(model.config) == canonical(get_model_config(name))


def test_model_summary_for_docs():
    s = registry.model_summary("cifar10_paper")
    assert s["parameters"] == pytest.approx(59e6, rel=0.02)
    assert (s["ffn_hidden"], s["qk_dim"], s["embedding"]) == (512, 128, "data")
