"""Every YAML under configs/ composes with the Hydra compose API, and what it describes instantiates
(models and data with tiny overrides); unknown names and keys fail with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from zoo.data.fashion_mnist import SYSTEM_ROOT, find_files
from zoo.loggers import NullLogger, build_logger
from zoo.train import TrainerConfig, build_from_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
GROUPS = ("model", "data", "trainer", "logger", "experiment")
HAVE_FASHION_MNIST = find_files(SYSTEM_ROOT) is not None or find_files(Path("data")) is not None

# Tiny and fast: a 1-block model on 8x8 synthetic "images" (every model variant accepts any length).
TINY = [
    "data=synthetic",
    "data.size=4",
    "data.val_size=2",
    "data.test_size=2",
    "data.seq_len=64",
    "data.data_shape=[8,8]",
    "model.n_layer=1",
    "model.n_embd=16",
    "model.n_head=2",
    "model.checkpoint_every=0",
]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def forward_ok(cfg) -> None:
    model, data = build_from_config(cfg)
    batch = torch.stack([data.train[i] for i in range(2)])  # (2, T)
    logits = model(batch)
    assert logits.shape == (2, data.seq_len, 256) and torch.isfinite(logits).all()


@pytest.mark.parametrize("path", sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.yaml")))
def test_every_yaml_composes(compose_config, path):
    """Each file composes: the top-level apps (train.yaml, evaluate.yaml, sample.yaml, visualize.yaml), group options via train.yaml
    (the pattern group model/attention/ inside the default model)."""
    rel = Path(path)
    if len(rel.parts) == 1:
        cfg = compose_config(rel.stem)
    elif rel.parts[:2] == ("model", "attention"):
        cfg = compose_config("train", [f"model/attention={rel.stem}"])
        assert OmegaConf.get_type(cfg.model.attention).__name__.endswith("Config")  # schema-checked
    else:
        group = "/".join(rel.parts[:-1])
        prefix = "" if group in GROUPS else "+"  # a group train.yaml does not list is added with `+`
        cfg = compose_config("train", [f"{prefix}{group}={rel.stem}"])
    assert OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves


def test_every_group_has_options():
    for group in GROUPS:
        assert options(group), f"configs/{group}/ is empty"


def test_default_composes(compose_config):
    cfg = compose_config("train")
    assert cfg.model.name == "strided" and cfg.data.name == "fashion_mnist"
    assert cfg.model.attention.name == "strided" and cfg.model.attention.stride == 28  # one image row
    # the registry's small Fashion-MNIST size (zoo.registry._fashion_mnist)
    assert (cfg.model.n_layer, cfg.model.n_embd, cfg.model.n_head) == (2, 64, 2)
    assert cfg.logger.name == "none"
    assert cfg.trainer.weight_decay == 0.01 and cfg.trainer.grad_clip == 1.0
    assert OmegaConf.is_struct(cfg)
    TrainerConfig.from_dict(OmegaConf.to_container(cfg.trainer, resolve=True))


@pytest.mark.parametrize("name", options("model"))
def test_model_configs_instantiate(compose_config, name):
    cfg = compose_config("train", [f"model={name}", *TINY])
    assert cfg.model.name == name
    forward_ok(cfg)


def instantiate_data(compose_config, overrides: list[str], tmp_path: Path) -> None:
    """Build data + a tiny model from ``train`` + ``overrides`` and run a forward pass when the data set is
    here (synthetic, or Fashion-MNIST when installed); otherwise point the data root at an empty folder
    (no download) and expect the loader's error naming it."""
    tiny_model = ["model.n_layer=1", "model.n_embd=16", "model.n_head=2", "model.checkpoint_every=0"]
    cfg = compose_config("train", [*overrides, *tiny_model])
    name = cfg.data.name
    limits = [
        f"data.{k}={n}"
        for k, n in (("limit_train", 4), ("limit_val", 2), ("limit_test", 2))
        if k in cfg.data and (cfg.data[k] is None or cfg.data[k] > n)
    ]
    if name == "synthetic" or (name == "fashion_mnist" and HAVE_FASHION_MNIST):
        forward_ok(compose_config("train", [*overrides, *limits, *tiny_model]))
        return
    empty = tmp_path / "empty_root"
    extra = [f"data.root={empty}"] + (["data.download=false"] if "download" in cfg.data else [])
    if name == "fashion_mnist":
        extra.append("data.system_root=null")
    cfg = compose_config("train", [*overrides, *limits, *tiny_model, *extra])
    with pytest.raises(FileNotFoundError, match=str(empty)):
        build_from_config(cfg)


@pytest.mark.parametrize("name", options("data"))
def test_data_configs_instantiate(compose_config, name, tmp_path):
    """Data sets with files here instantiate; the others (files the user provides) fail with an error
    naming the empty data root they were pointed at, without touching the network."""
    assert compose_config("train", [f"data={name}"]).data.name == name
    instantiate_data(compose_config, [f"data={name}"], tmp_path)


@pytest.mark.parametrize("name", options("trainer"))
def test_trainer_configs_instantiate(compose_config, name):
    cfg = compose_config("train", [f"trainer={name}"])
    config = TrainerConfig.from_dict(OmegaConf.to_container(cfg.trainer, resolve=True))
    assert config.seed == cfg.seed


@pytest.mark.parametrize("name", options("logger"))
def test_logger_configs_compose(compose_config, name, tmp_path):
    cfg = compose_config("train", [f"logger={name}"])
    assert cfg.logger.name == name
    if name == "none":
        assert isinstance(build_logger(OmegaConf.to_container(cfg.logger), tmp_path), NullLogger)
    else:
        assert cfg.logger.mode == "offline"  # never needs a network unless asked (run in test_train.py)


@pytest.mark.parametrize("name", options("experiment"))
def test_experiment_configs_instantiate(compose_config, name, tmp_path):
    """An experiment's model builds at its full size (on the meta device: no memory), its trainer options
    are valid, and its data instantiates (or names the missing data root)."""
    from zoo.registry import build

    raw = (CONFIGS / "experiment" / f"{name}.yaml").read_text()
    assert raw.startswith("# @package _global_"), "experiments are global deltas"
    cfg = compose_config("train", [f"experiment={name}"])
    TrainerConfig.from_dict(OmegaConf.to_container(cfg.trainer, resolve=True))
    with torch.device("meta"):
        model = build(cfg.model)
    assert model.config.n_layer == cfg.model.n_layer and model.num_parameters() > 0
    instantiate_data(compose_config, [f"experiment={name}"], tmp_path)


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONFIGS / "model" / "attention").glob("*.yaml")))
def test_attention_configs_compose_and_build(compose_config, name):
    """Every option of the pattern group (a pattern's defaults, or a preset named PATTERN_VALUES) builds."""
    import attention_patterns as ap

    cfg = compose_config("train", [f"model/attention={name}"])
    spec = OmegaConf.to_container(cfg.model.attention, resolve=True)
    from zoo.registry import pattern_option

    assert pattern_option(spec)[0] == name  # the pattern's defaults, or the preset named after its values
    ap.build_attention({**spec, "num_heads": spec.get("num_heads") or 2}).mask(16)


@pytest.mark.parametrize(
    "override, check",
    [
        ("model=strided_half", lambda c: c.model.half_ffn and c.model.half_qk),
        ("model/attention=fixed", lambda c: c.model.attention.name == "fixed" and c.model.attention.c == 16),
        ("model.embedding=attention", lambda c: c.model.embedding == "attention"),
        ("model.half_ffn=false", lambda c: c.model.half_ffn is False),
        ("experiment=fashion_mnist_fixed", lambda c: c.model.attention.name == "fixed"),
    ],
)
def test_ablations_are_one_override(compose_config, override, check):
    cfg = compose_config("train", [override, *TINY])
    assert check(cfg)
    model, _ = build_from_config(cfg)
    assert model.config.attention["name"] == cfg.model.attention.name
    assert model.config.embedding == cfg.model.embedding and model.config.half_ffn == cfg.model.half_ffn
    forward_ok(cfg)


def test_experiments_replace_the_default_delta(compose_config):
    from zoo.registry import get_model_config

    full = compose_config("train", ["~experiment"])  # no delta: the registry's variant as is
    registry = get_model_config("strided")
    assert (full.model.n_layer, full.model.n_embd, full.model.n_head) == (
        registry.n_layer,
        registry.n_embd,
        registry.n_head,
    )
    fixed = compose_config("train", ["experiment=fashion_mnist_fixed"])  # chains the default's size
    assert fixed.model.attention.name == "fixed" and (fixed.model.n_layer, fixed.model.n_embd) == (2, 64)
    assert compose_config("train", ["seed=3"]).trainer.seed == 3  # one seed for everything


def test_data_decides_the_model_shape(compose_config):
    cfg = compose_config("train", TINY)  # strided.yaml says 784 / [28, 28]; the data says 64 / [8, 8]
    model, data = build_from_config(cfg)
    assert (model.config.seq_len, model.config.data_shape) == (64, [8, 8]) == (data.seq_len, data.data_shape)


def test_unknown_names_fail_listing_the_options(compose_config):
    with pytest.raises(MissingConfigException) as info:
        compose_config("train", ["model=strided_halff"])
    assert (
        "model/strided_halff" in str(info.value)
        and "strided_half" in str(info.value).split("Available options")[1]
    )
    with pytest.raises(MissingConfigException, match="Available options in 'data'"):
        compose_config("train", ["data=cifar11"])
    with pytest.raises(MissingConfigException, match="experiment/nope"):
        compose_config("train", ["experiment=nope"])


def test_unknown_keys_fail_naming_the_key(compose_config):
    with pytest.raises(ConfigCompositionException, match=r"Could not override 'model.n_layers'"):
        compose_config("train", ["model.n_layers=2"])
    with pytest.raises(ConfigCompositionException, match=r"Could not override 'trainer.stepz'"):
        compose_config("train", ["trainer.stepz=2"])
    # keys added with `+` reach the builders, which name them and the valid ones
    cfg = compose_config("train", ["+model.n_layers=2", *TINY])
    with pytest.raises(ValueError, match=r"unknown model config key 'n_layers'.*Did you mean 'n_layer'"):
        build_from_config(cfg)
    cfg = compose_config("train", ["+data.sise=3", *TINY])
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['sise'\] for data set 'synthetic'"):
        build_from_config(cfg)
    cfg = compose_config("train", ["model.attention.name=strided_x", *TINY])
    with pytest.raises(ValueError, match="strided_x"):
        build_from_config(cfg)


def test_backend_and_its_options_come_from_the_config(compose_config):
    """``model.attention_backend`` and ``model.attention_backend_options`` reach the backend; a bad
    option fails loudly with the backend's message."""
    over = [*TINY, "model.attention_backend=blocksparse", "+model.attention_backend_options.save_probs=false"]
    model, _ = build_from_config(compose_config("train", over))
    assert model.backend.name == "blocksparse" and model.backend.save_probs is False
    assert model.config.attention_backend_options == {"save_probs": False}
    forward_ok(compose_config("train", over))
    bad = [*TINY, "model.attention_backend=blocksparse", "+model.attention_backend_options.save_probs=maybe"]
    with pytest.raises(ValueError, match="save_probs must be True, False or 'auto', got 'maybe'"):
        build_from_config(compose_config("train", bad))


def test_no_shipped_config_uses_the_dense_reference_without_saying_why(compose_config):
    """The fast path (``auto``) is the default: every model variant and YAML uses it; a YAML line that
    selects the O(n^2) dense masked reference must carry a comment saying why."""
    from zoo.model import ModelConfig
    from zoo.registry import get_model_config, list_models

    assert ModelConfig().attention_backend == "auto"
    assert {n: get_model_config(n).attention_backend for n in list_models()} == dict.fromkeys(list_models(), "auto")
    offenders = []
    for path in sorted(CONFIGS.rglob("*.yaml")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code, _, comment = line.partition("#")
            if "attention_backend" in code and ":" in code:
                value = code.split(":", 1)[1].strip().strip("'\"")
                if value == "dense" and not comment.strip():
                    offenders.append(f"{path.relative_to(CONFIGS)}:{number}: {line.strip()}")
    assert not offenders, offenders
    model, _ = build_from_config(compose_config("train", TINY))
    assert model.backend.name == "auto"
    for name in options("experiment"):
        cfg = compose_config("train", [f"experiment={name}"])
        assert cfg.model.attention_backend == "auto", name
