"""The registry's variants in timm's registry (zoo.timm_models): listed, built with overrides, and
loading our checkpoints with ``pretrained=True, pretrained_cfg_overlay={"file": ...}``."""

from __future__ import annotations

import pytest
import timm
import torch

from zoo import registry
from zoo.data import build_data
from zoo.model import ModelConfig, SparseTransformer
from zoo.train import Trainer, TrainerConfig

SMALL = dict(n_layer=1, n_embd=16, n_head=2, seq_len=16, data_shape=[4, 4])


def test_every_variant_is_listed_by_timm():
    listed = set(timm.list_models("sparse_transformer*"))
    assert {f"sparse_transformer_{n}" for n in registry.list_models()} <= listed
    assert len(registry.list_models()) == 9  # audio_paper included


@pytest.mark.parametrize("name", registry.list_models())
def test_timm_builds_every_variant_as_the_registry_does(name):
    with torch.device("meta"):
        ours = registry.build(name)
        model = timm.create_model(f"sparse_transformer_{name}")
    assert isinstance(model, SparseTransformer)
    assert model.config == ours.config
    assert model.num_parameters() == ours.num_parameters()
    assert model.pretrained_cfg["architecture"] == f"sparse_transformer_{name}"
    assert model.pretrained_cfg["num_classes"] == ours.config.vocab_size


def test_overrides_reach_the_model_and_bad_ones_fail_clearly():
    model = timm.create_model("sparse_transformer_fixed", **SMALL, attention={"stride": 4, "c": 2})
    assert (model.config.n_layer, model.config.attention["stride"], model.config.attention["c"]) == (1, 4, 2)
    with pytest.raises(ValueError, match="unknown model config key 'n_layers'"):
        timm.create_model("sparse_transformer_strided", n_layers=2)


def _trained_checkpoint(tmp_path, ema_decay: float):
    torch.manual_seed(0)
    data = build_data("synthetic", size=16, val_size=4, test_size=4, seq_len=16, data_shape=[4, 4])
    config = TrainerConfig(
        steps=3, batch_size=4, warmup_steps=1, progress=False, test=False, ema_decay=ema_decay
    )
    trainer = Trainer(registry.build("strided", **SMALL), data, config, run_dir=tmp_path)
    trainer.fit()
    return trainer, tmp_path / "checkpoints" / "step_00000003.pt"


@pytest.mark.parametrize("ema_decay", [0.0, 0.5])
def test_pretrained_loads_a_checkpoint_the_trainer_wrote(tmp_path, ema_decay):
    trainer, path = _trained_checkpoint(tmp_path, ema_decay)
    model = timm.create_model(
        "sparse_transformer_strided", pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **SMALL
    )
    assert model.pretrained_cfg["file"] == str(path)
    expected = trainer.eval_model.state_dict()  # the average when there is one
    for key, value in model.state_dict().items():
        assert torch.equal(value, expected[key]), key
    x = torch.randint(0, 256, (2, 16))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), trainer.eval_model.eval()(x))
    # a plain state dict file loads too
    plain = tmp_path / "weights.pt"
    torch.save(trainer.model.state_dict(), plain)
    again = timm.create_model(
        "sparse_transformer_strided", pretrained=True, pretrained_cfg_overlay={"file": str(plain)}, **SMALL
    )
    assert torch.equal(again.head.weight, trainer.model.head.weight)


def test_pretrained_errors_name_the_file_and_the_fix(tmp_path):
    _, path = _trained_checkpoint(tmp_path, 0.0)
    with pytest.raises(ValueError, match=r"was trained with another sparse_transformer_strided: build it with the overrides"):
        timm.create_model("sparse_transformer_strided", pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    with pytest.raises(ValueError, match="no weights are published for sparse_transformer_strided"):
        timm.create_model("sparse_transformer_strided", pretrained=True)
    with pytest.raises(FileNotFoundError, match="nope.pt does not exist"):
        timm.create_model(
            "sparse_transformer_strided", pretrained=True, pretrained_cfg_overlay={"file": str(tmp_path / "nope.pt")}
        )


def test_a_variant_registered_later_appears_in_timm(monkeypatch):
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))

    @registry.register_model
    def timm_probe_tiny() -> ModelConfig:
        """A one-block probe."""
        return ModelConfig(**SMALL)

    assert "sparse_transformer_timm_probe_tiny" in timm.list_models("sparse_transformer*")
    model = timm.create_model("sparse_transformer_timm_probe_tiny", n_embd=32)
    assert (model.config.n_layer, model.config.n_embd) == (1, 32)
    assert model.pretrained_cfg["description"] == "A one-block probe."
